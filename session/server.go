package session

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// Broker is what the SSH side asks of the domain.
type Broker interface {
	Technician(name string) (*broker.Technician, bool)
	// Target returns the target called name as the config in force has it.
	Target(name string) (*broker.Target, bool)
	Authorize(ctx context.Context, technician, target, source string) (broker.Decision, *broker.Target, error)
	Certificate(ctx context.Context, tech *broker.Technician, d broker.Decision, target *broker.Target, sessionID string, local []netip.Addr) (*broker.Credential, error)
	SessionStarted(ctx context.Context, r *broker.SessionRecord) error
	SessionEnded(ctx context.Context, id string, end broker.SessionEnd) error
	// SessionRefused registers a session that was allowed but could not
	// start (no recording, no certificate, target unreachable).
	SessionRefused(ctx context.Context, r *broker.SessionRecord, at time.Time, reason string) error
	Audit(ctx context.Context, e broker.AuditEvent)
	// StillAllowed re-checks a live session after locks or rules changed.
	StillAllowed(technician, target, source string, key ssh.PublicKey, prev broker.Decision) (bool, string)
	// VerifyTOTP checks a second-factor code.
	VerifyTOTP(ctx context.Context, technician, source, code string) error
	// TOTPEnrolled reports whether technician has a second factor to
	// ask a code of.
	TOTPEnrolled(ctx context.Context, technician string) (bool, error)
	// RecordingSealed records a recording's seal in the register.
	RecordingSealed(ctx context.Context, s broker.RecordingSeal) error
}

// Access is what the SSH side asks of the domain about access requests,
// grants and admins. *broker.Broker implements it.
type Access interface {
	RequestAccess(ctx context.Context, technician, target, source, reason string, d time.Duration) (broker.AccessRequest, bool, error)
	Request(ctx context.Context, id int64) (broker.AccessRequest, error)
	Requests(ctx context.Context, f broker.RequestFilter) ([]broker.AccessRequest, error)
	Approve(ctx context.Context, approver string, id int64, comment string) (broker.AccessRequest, error)
	Deny(ctx context.Context, approver string, id int64, reason string) (broker.AccessRequest, error)
	Cancel(ctx context.Context, technician string, id int64, note string) (broker.AccessRequest, error)
	Revoke(ctx context.Context, by string, id int64, reason string) (broker.AccessRequest, error)
	ExpireRequests(ctx context.Context) (int, error)
	// Subscribe wakes the caller when request id changes on this node.
	Subscribe(id int64) (<-chan struct{}, func())
	Notified(r *broker.AccessRequest) (approvers, webhooks []string)
	Approvers(r *broker.AccessRequest) []string
	GrantUsed(ctx context.Context, g *broker.Grant, session string)
	IsAdmin(technician string) bool
	IsApprover(technician string) bool
	// IsReviewer reports whether technician is in a reviewer group, as
	// the config says now.
	IsReviewer(technician string) bool
	// CommandAllowed re-checks a command connection: the technician and
	// key still registered, no lock on them or their affiliate.
	CommandAllowed(technician string, key ssh.PublicKey) (bool, string)
	// ScopeOf is technician's scope (review_residency) as the config
	// says now; CheckScope refuses, and audits, an action outside it.
	ScopeOf(technician string) broker.Scope
	CheckScope(ctx context.Context, actor, action, source string, c broker.Concern) error
	// MayModerate reports whether moderator may moderate technician's
	// session on target under spec, and if not, why; Moderators lists
	// who may.
	MayModerate(moderator, technician string, target *broker.Target, spec broker.ModerationSpec) (bool, string)
	Moderators(technician string, target *broker.Target, spec broker.ModerationSpec) []string
	// ModerationWaiting audits that a session waits for moderators and
	// notifies the webhooks; it returns who may moderate and the
	// webhooks told.
	ModerationWaiting(ctx context.Context, n broker.ModerationNotice) (moderators, webhooks []string)
	// PowersNeedingMFA lists the powers (approver, admin, reviewer)
	// technician holds, as the config says now, that need a
	// verification code to log in to sekisho's commands.
	PowersNeedingMFA(technician string) []string
}

// Config configures a Server.
// Register is the session register, as far as watch needs it.
type Register interface {
	Session(ctx context.Context, id string) (broker.SessionRecord, error)
}

// Peers relays, over the node-to-node link, a live session another node
// serves, as recording.Watch would show it there.
type Peers interface {
	Watch(ctx context.Context, node, id, watcher string, w io.Writer, opt recording.WatchOptions) error
	// Moderate finds the node that has session id waiting for moderators
	// or moderated, checks there that watcher may moderate it, and
	// returns the seat, taken while its Watch streams; Seated returns it
	// for actions, which that node checks. A refusal, or no node having
	// the session, is a *ModerationRefused.
	Moderate(ctx context.Context, id, watcher string) (Seat, error)
	Seated(ctx context.Context, id, watcher string) (Seat, error)
	// Moderated lists the sessions of the other nodes watcher may
	// moderate.
	Moderated(ctx context.Context, watcher string) []broker.ModeratedSession
}

// Console is the web console, as far as SSH needs it: sign-in links
// bound to the technician and the key (its SHA256 fingerprint) that
// signed the connection; the browser session ends when that key is no
// longer registered.
type Console interface {
	SignInLink(technician, keyFingerprint string) (link string, expires time.Time, err error)
}

type Config struct {
	// NodeName names this node in the session register.
	NodeName string
	// Register and Peers let watch follow a live session another node
	// serves: the register says which node, Peers relays it from there.
	// Both nil when the node is alone.
	Register     Register
	Peers        Peers
	HostKey      ssh.Signer
	Broker       Broker
	RecordingDir string
	Logger       *slog.Logger
	// AuthTimeout bounds the handshake and authentication; default 30s.
	AuthTimeout time.Duration
	// MaxAuthTries bounds failed authentication attempts; default 6.
	MaxAuthTries int
	// MaxUnauthenticated bounds the connections still in their handshake
	// or authentication, in all (default 1000) and from one source
	// address (MaxUnauthenticatedPerSource, default 50). When a source
	// holds all its places, one of its pending connections gives way to
	// its newcomer (an office behind one NAT address is not locked out
	// by whoever floods from there); when all places are taken, one of
	// the source holding the most places gives way to a newcomer from a
	// source holding fewer. The one that gives way is the oldest that has
	// sent nothing, else the one that went longest without a step of its
	// handshake; one whose technician's key is proven never does.
	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	// MaxAuthFailuresPerSource is how many authentication attempts (a
	// key or a code refused) from one source address may fail within a
	// minute before its further connections are refused for the rest of
	// that minute; default 100.
	MaxAuthFailuresPerSource int
	// KeepaliveInterval is how often each leg of a session is asked to
	// answer a keepalive (default 30s); after KeepaliveCountMax (default
	// 3) unanswered in a row, the session ends. This also ends a peer
	// that stalls a key exchange while the other side floods.
	KeepaliveInterval time.Duration
	KeepaliveCountMax int
	// DialTimeout bounds the connection to a target, handshake included;
	// default 15s.
	DialTimeout time.Duration
	// Resolver resolves port-forward destinations; default net.DefaultResolver.
	Resolver Resolver
	// ForwardBlocked are addresses never forwarded to unless a rule names
	// them (Vault's, for one), besides loopback and link-local.
	ForwardBlocked []netip.Addr
	// EnvAllow lists the environment variables a technician may pass to
	// the target (exact names, or a prefix ending in '*'). Default
	// LANG, LC_*, TZ. Names starting with LD_ are never passed.
	EnvAllow []string
	// RecordingKey signs the seal of every recording; nil leaves them
	// unsigned (tests).
	RecordingKey ed25519.PrivateKey
	// Uploader streams recordings to their zone's object store; nil keeps
	// them in RecordingDir.
	Uploader *recording.Uploader
	// Access enables access requests (approval rules) and the SSH-native
	// commands (ssh TECHNICIAN@bastion COMMAND). Without it, approval rules
	// refuse and a login without a target is refused.
	Access Access
	// GrantWarnings are how long before a grant ends its sessions are
	// warned; default 5m and 1m.
	GrantWarnings []time.Duration
	// StatusEvery is how often a technician waiting for approval sees the
	// status line redrawn; default 1s.
	StatusEvery time.Duration
	// PollEvery is how often a wait re-reads its request from the store,
	// for changes made on other nodes; default 2s.
	PollEvery time.Duration
	// Console issues the one-time links that `login` prints; nil when the
	// web console is off.
	Console Console
	// Jump serves ProxyJump (ssh -J): a technician's direct-tcpip
	// channel to a target's name on port 22 is answered by sekisho as
	// that target (see jump.go). Nil leaves ProxyJump off.
	Jump Jump
}

// Server accepts technicians' SSH connections and relays them to targets.
type Server struct {
	cfg    Config
	sshCfg *ssh.ServerConfig
	log    *slog.Logger

	// seats are the moderated sessions of this node, by session ID:
	// where their moderators sit.
	seats sync.Map

	// ctx is cancelled by Shutdown; sessions use it for their outbound
	// calls and to tell a shutdown from a technician leaving.
	ctx    context.Context
	cancel context.CancelFunc

	authAudit *authAuditor
	preauth   *preauth
	// refusedOffers holds, per connection still authenticating, the
	// fingerprint of the last key refused and not yet counted as a
	// failure.
	refusedOffers sync.Map
	// authing holds, per connection still authenticating (by its remote
	// address), the connection as x/crypto gives it before
	// authentication, to send banners on.
	authing sync.Map
	// places holds, per connection still authenticating (by its remote
	// address), its place in preauth, which advances as the handshake
	// does.
	places sync.Map
	// flushing is set once Serve started the goroutine that audits the
	// pre-auth refusals held back.
	flushing bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	live  map[*conn]struct{} // sessions relaying to a target
	// inner holds, per technician connection, the sessions that came
	// through it by ProxyJump (serveJump), so that they are ended with
	// a word before the connection they run in is closed (endInner).
	inner map[*ssh.ServerConn]map[*conn]struct{}
	// closingConns holds the command connections a revalidation is
	// closing (closeWithInner), so that the next one does not again.
	closingConns sync.Map
	commands     map[*ssh.ServerConn]*identity // command connections
	closing      bool
	wg           sync.WaitGroup
	listener     net.Listener
}

// extraKey keys the authenticated identity in ssh.Permissions.ExtraData.
type extraKey struct{}

// identity is what authentication established, stored in the Permissions
// returned by VerifiedPublicKeyCallback, i.e. after the key's signature
// was checked.
type identity struct {
	tech     *broker.Technician
	target   *broker.Target // nil for a command connection
	decision broker.Decision
	key      ssh.PublicKey // the key that signed
	// command is set for a login without a target: the connection runs
	// sekisho's own commands (requests, approve, ...), never a target's.
	command bool
	// powers are the powers a command connection's code was asked for.
	powers []string
}

// pending reports whether the session waits for an approval.
func (id *identity) pending() bool { return id.decision.Effect == broker.Approval }

// errAuth is the one answer to every failed authentication, so that an
// unknown technician and a wrong key cannot be told apart.
var errAuth = errors.New("permission denied")

// keyRefused is errAuth for a key that is not the technician's, naming
// the key for the log and the audit (the client is told no more).
type keyRefused struct{ fingerprint string }

func (e *keyRefused) Error() string { return errAuth.Error() }
func (e *keyRefused) Unwrap() error { return errAuth }

// NewServer returns a server for cfg.
func NewServer(cfg Config) (*Server, error) {
	if cfg.HostKey == nil || cfg.Broker == nil || cfg.RecordingDir == "" {
		return nil, errors.New("session: host key, broker and recording directory are required")
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = 30 * time.Second
	}
	if cfg.MaxAuthTries == 0 {
		cfg.MaxAuthTries = 6
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = 30 * time.Second
	}
	if cfg.KeepaliveCountMax == 0 {
		cfg.KeepaliveCountMax = 3
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.MaxUnauthenticated == 0 {
		cfg.MaxUnauthenticated = 1000
	}
	if cfg.MaxUnauthenticatedPerSource == 0 {
		cfg.MaxUnauthenticatedPerSource = 50
	}
	if cfg.MaxAuthFailuresPerSource == 0 {
		cfg.MaxAuthFailuresPerSource = 100
	}
	if cfg.EnvAllow == nil {
		cfg.EnvAllow = []string{"LANG", "LC_*", "TZ"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.GrantWarnings == nil {
		cfg.GrantWarnings = []time.Duration{5 * time.Minute, time.Minute}
	}
	if cfg.StatusEvery == 0 {
		cfg.StatusEvery = time.Second
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = 2 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}, live: map[*conn]struct{}{}, commands: map[*ssh.ServerConn]*identity{},
		inner:   map[*ssh.ServerConn]map[*conn]struct{}{},
		preauth: newPreauth(cfg.MaxUnauthenticatedPerSource, cfg.MaxUnauthenticated, cfg.MaxAuthFailuresPerSource)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.authAudit = newAuthAuditor(cfg.Broker.Audit)
	s.sshCfg = &ssh.ServerConfig{
		MaxAuthTries:              cfg.MaxAuthTries,
		PublicKeyCallback:         s.offeredKey,
		VerifiedPublicKeyCallback: s.verifiedKey,
		PreAuthConnCallback: func(pc ssh.ServerPreAuthConn) {
			s.authing.Store(pc.RemoteAddr().String(), pc)
			s.advance(pc.RemoteAddr().String(), stageKeyed) // called once the key exchange is done
		},
		ServerVersion: "SSH-2.0-sekisho",
		AuthLogCallback: func(conn ssh.ConnMetadata, method string, err error) {
			// A key accepted with a second factor still to come is a
			// partial success, not a failure.
			var partial *ssh.PartialSuccessError
			if err != nil && method != "none" && !errors.As(err, &partial) {
				var kr *keyRefused
				key := ""
				if errors.As(err, &kr) {
					key = kr.fingerprint
					s.refusedOffers.Delete(conn.RemoteAddr().String()) // counted here
				}
				s.log.Info("authentication failed", "user", conn.User(), "source", conn.RemoteAddr().String(), "method", method, "key", key, "err", err)
				s.authAudit.failed(conn.User(), conn.RemoteAddr().String(), method, key, time.Now())
				s.preauth.failed(sourceHost(conn.RemoteAddr().String()))
			}
		},
	}
	s.sshCfg.AddHostKey(cfg.HostKey)
	return s, nil
}

// refusedOffer is a key offered on a connection and refused.
type refusedOffer struct{ user, fingerprint string }

// offeredKey answers whether a key may be used, before its possession is
// proven. It returns no identity: that is established in verifiedKey.
func (s *Server) offeredKey(conn ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	login, err := ParseLogin(conn.User())
	if err != nil && !errors.Is(err, ErrNoTarget) {
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: " + err.Error() + "\n"}
	}
	tech, ok := s.cfg.Broker.Technician(login.Technician)
	if !ok || !tech.HasKey(key) {
		fp := ssh.FingerprintSHA256(key)
		// If this came with a signature, x/crypto checks it next even
		// though the key is refused, and a bad one ends the connection
		// without an AuthLogCallback: handle counts it then.
		s.refusedOffers.Store(conn.RemoteAddr().String(), refusedOffer{conn.User(), fp})
		return nil, &keyRefused{fp}
	}
	return &ssh.Permissions{}, nil
}

// verifiedKey runs once the client has proven it holds the key. Only here
// is the technician known, and only here is the access decision made.
func (s *Server) verifiedKey(conn ssh.ConnMetadata, key ssh.PublicKey, _ *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	login, err := ParseLogin(conn.User())
	if err != nil && !errors.Is(err, ErrNoTarget) {
		return nil, errAuth
	}
	tech, ok := s.cfg.Broker.Technician(login.Technician)
	if !ok || !tech.HasKey(key) {
		return nil, &keyRefused{ssh.FingerprintSHA256(key)}
	}
	source := conn.RemoteAddr().String()
	// A technician's key is proven: while the decision is made and a
	// second-factor code typed, no flood closes this connection to make
	// room (preauth).
	s.advance(source, stageProven)
	ctx := context.Background()
	if errors.Is(err, ErrNoTarget) {
		if s.cfg.Access == nil {
			s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Source: source, Detail: "no target named"})
			return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: " + err.Error() + "\n"}
		}
		// A command connection: sekisho's own commands, nothing relayed.
		if ok, why := s.cfg.Access.CommandAllowed(tech.Name, key); !ok {
			s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Source: source, Detail: "command login refused: " + why})
			return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: " + why + "\n"}
		}
		// Whoever holds a power gives a code for it: their key alone
		// would let a thief approve an accomplice's request.
		powers := s.cfg.Access.PowersNeedingMFA(tech.Name)
		id := &identity{tech: tech, key: key, command: true, powers: powers,
			decision: broker.Decision{RequireMFA: tech.RequireMFA || len(powers) > 0}}
		return s.withSecondFactor(conn, id, s.banner(conn))
	}
	id, err := s.decideTarget(ctx, tech, login.Target, source, key)
	if err != nil {
		return nil, err
	}
	return s.withSecondFactor(conn, id, s.banner(conn))
}

// decideTarget decides whether tech, whose key is proven, may reach
// target from source: the identity of a session allowed or awaiting an
// approval, else the refusal the technician reads.
func (s *Server) decideTarget(ctx context.Context, tech *broker.Technician, target, source string, key ssh.PublicKey) (*identity, error) {
	d, tg, err := s.cfg.Broker.Authorize(ctx, tech.Name, target, source)
	pending := err == nil && d.Effect == broker.Approval && s.cfg.Access != nil
	if err != nil || (!d.Allowed() && !pending) {
		if d.Reason == "" {
			// Not a decision the technician can read (the technician
			// vanished from the config meanwhile, say).
			s.log.Error("access not decided", "technician", tech.Name, "target", target, "source", source, "err", err)
			d.Reason = fmt.Sprintf("access to %s could not be decided now; try again in a minute, or tell the sekisho operator", target)
		}
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: " + d.Reason + "\n"}
	}
	return &identity{tech: tech, target: tg, decision: d, key: key}, nil
}

// banner returns what sends a banner to conn, still authenticating.
func (s *Server) banner(conn ssh.ConnMetadata) func(string) {
	return func(msg string) {
		if pc, ok := s.authing.Load(conn.RemoteAddr().String()); ok {
			pc.(ssh.ServerPreAuthConn).SendAuthBanner(msg)
		}
	}
}

// withSecondFactor returns the permissions for id, asking for a TOTP code
// first when the decision requires one. Why a code is asked goes out as
// a banner, so that a client that cannot answer (ssh -o BatchMode=yes)
// still tells its user.
func (s *Server) withSecondFactor(conn ssh.ConnMetadata, id *identity, banner func(string)) (*ssh.Permissions, error) {
	d := id.decision
	perms := &ssh.Permissions{ExtraData: map[any]any{extraKey{}: id}}
	if !d.RequireMFA {
		return perms, nil
	}
	enrolled, err := s.cfg.Broker.TOTPEnrolled(s.ctx, id.tech.Name)
	if err != nil {
		s.log.Error("second factor check failed", "technician", id.tech.Name, "err", err)
		s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventMFAFailed, Technician: id.tech.Name, Source: conn.RemoteAddr().String(),
			Detail: "second factor not checked: " + err.Error()})
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: your verification code could not be checked now; try again in a minute, or ask the operator (the server log says why)\n"}
	}
	if !enrolled {
		detail, why := broker.ErrNotEnrolled.Error(), "a second factor is required"
		if len(id.powers) > 0 {
			detail += " for the powers of " + strings.Join(id.powers, ", ")
			why = fmt.Sprintf("a second factor is required for your powers (%s)", strings.Join(id.powers, ", "))
		}
		s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventMFAFailed, Technician: id.tech.Name, Source: conn.RemoteAddr().String(), Detail: detail})
		return nil, &ssh.BannerError{Err: errAuth, Message: fmt.Sprintf(
			"sekisho: %s but %s has none enrolled; ask the operator to run `sekisho technician enroll-totp %s`\n",
			why, id.tech.Name, id.tech.Name)}
	}
	what := "sekisho: a second factor is required for " + id.tech.Name
	if len(id.powers) > 0 {
		what = fmt.Sprintf("sekisho: a second factor is required for %s's powers (%s)", id.tech.Name, strings.Join(id.powers, ", "))
	}
	if id.target != nil {
		what = fmt.Sprintf("sekisho: a second factor is required for %s (rule %s)", id.target.Name, id.decision.Rule)
	}
	banner(what + "\n")
	// The key is proven; the session needs a TOTP code as well.
	return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
		KeyboardInteractiveCallback: func(conn ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			return s.secondFactor(conn, client, id, perms)
		},
	}}
}

// secondFactor asks for a TOTP code over keyboard-interactive and returns
// the permissions of the verified key once the code is right.
func (s *Server) secondFactor(conn ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge, id *identity, perms *ssh.Permissions) (*ssh.Permissions, error) {
	answers, err := client("", "", []string{"Verification code: "}, []bool{false})
	if err != nil || len(answers) != 1 {
		return nil, errAuth
	}
	err = s.cfg.Broker.VerifyTOTP(s.ctx, id.tech.Name, conn.RemoteAddr().String(), strings.TrimSpace(answers[0]))
	switch {
	case err == nil:
		return perms, nil
	case errors.Is(err, broker.ErrNotEnrolled):
		return nil, &ssh.BannerError{Err: errAuth, Message: fmt.Sprintf(
			"sekisho: a second factor is required but %s has none enrolled; ask the operator to run `sekisho technician enroll-totp %s`\n",
			id.tech.Name, id.tech.Name)}
	case errors.Is(err, broker.ErrThrottled):
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: too many wrong verification codes for you or from your address; wait a few minutes\n"}
	case errors.Is(err, broker.ErrCodeReused):
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: that verification code was already used; wait for the next one (codes change every 30 s)\n"}
	case errors.Is(err, broker.ErrWrongCode):
		return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: wrong verification code\n"}
	case errors.Is(err, broker.ErrUnopenable):
		// Waiting does not help: the operator enrols the technician again.
		s.log.Error("second factor check failed", "technician", id.tech.Name, "err", err)
		return nil, &ssh.BannerError{Err: errAuth, Message: fmt.Sprintf(
			"sekisho: your second factor must be enrolled again; ask the operator to run `sekisho technician enroll-totp %s`\n", id.tech.Name)}
	}
	// Vault did not answer, or the stored secret does not open: nothing
	// the technician can fix by typing; the log and the audit say why.
	s.log.Error("second factor check failed", "technician", id.tech.Name, "err", err)
	return nil, &ssh.BannerError{Err: errAuth, Message: "sekisho: your verification code could not be checked now; try again in a minute, or ask the operator (the server log says why)\n"}
}

// Serve accepts connections on ln until Shutdown is called.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.listener = ln
	if !s.flushing {
		s.flushing = true
		s.wg.Add(1) // under the lock, so Shutdown's Wait counts it
		go func() {
			defer s.wg.Done()
			s.auditHeldBack()
		}()
	}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				// Out of descriptors or buffers: wait and go on serving.
				s.log.Warn("accept failed, retrying", "err", err)
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if !s.track(nc, true) {
			nc.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			defer s.track(nc, false)
			s.handle(nc)
		}()
	}
}

func (s *Server) track(nc net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing {
			return false
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1) // under the lock, so Shutdown's Wait counts it
	} else {
		delete(s.conns, nc)
	}
	return true
}

// Revalidate re-checks every live session with the broker, after locks or
// rules changed, and ends those no longer allowed, telling the technician
// why. It returns how many it ended.
func (s *Server) Revalidate() int { return s.revalidate(false) }

// RevalidateGrants re-checks only the live sessions that run under a
// grant: cheap enough to run every second, so that a grant revoked on
// another node ends its sessions here within about that long.
func (s *Server) RevalidateGrants() int { return s.revalidate(true) }

func (s *Server) revalidate(grantsOnly bool) int {
	s.mu.Lock()
	live := make([]*conn, 0, len(s.live))
	for c := range s.live {
		if !grantsOnly || c.id.decision.Grant != nil {
			live = append(live, c)
		}
	}
	s.mu.Unlock()
	n := 0
	if a := s.cfg.Access; a != nil && !grantsOnly {
		s.mu.Lock()
		for sc, id := range s.commands {
			if ok, why := a.CommandAllowed(id.tech.Name, id.key); !ok {
				s.log.Warn("command connection ended", "technician", id.tech.Name, "why", why)
				go s.closeWithInner(sc, why)
			} else if !id.decision.RequireMFA && len(a.PowersNeedingMFA(id.tech.Name)) > 0 {
				// Given a power since it logged in without a code.
				why := "powers that need a second factor, logged in without one"
				s.log.Warn("command connection ended", "technician", id.tech.Name, "why", why)
				go s.closeWithInner(sc, why)
			}
		}
		s.mu.Unlock()
	}
	for _, c := range live {
		c.followGrant()
		if c.ending.Load() {
			continue
		}
		if ok, why := c.stillAllowed(); !ok {
			n++
			c.ending.Store(true)
			go c.terminate(why)
		}
	}
	return n
}

func (s *Server) setLive(c *conn, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live {
		s.live[c] = struct{}{}
	} else {
		delete(s.live, c)
	}
}

// Shutdown stops accepting, ends every connection (sessions end with the
// reason "server shutdown" and their recordings are closed) and waits for
// them until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	s.mu.Lock()
	s.closing = true
	if s.listener != nil {
		s.listener.Close()
	}
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handle serves one connection until it ends. Authentication runs in a
// function of its own, so that its large frame is gone from the stack
// the connection then idles on for hours (see conn.run).
func (s *Server) handle(nc net.Conn) {
	sc, chans, reqs, id := s.authenticate(nc)
	if sc == nil {
		return
	}
	if id.command {
		s.runCommands(sc, id, nc.RemoteAddr().String(), chans, reqs)
		return
	}
	c := &conn{srv: s, sc: sc, id: id, source: nc.RemoteAddr().String(), closing: make(chan struct{})}
	c.run(chans, reqs)
}

// authenticate admits nc, speaks SSH on it and authenticates the
// technician. It returns a nil connection when that failed or was
// refused (logged and audited here), and closes nc then.
func (s *Server) authenticate(nc net.Conn) (*ssh.ServerConn, <-chan ssh.NewChannel, <-chan *ssh.Request, *identity) {
	source := nc.RemoteAddr().String()
	host := sourceHost(source)
	place, evicted, why := s.preauth.admit(host, nc)
	if place == nil {
		nc.Close()
		if n := s.preauth.refusal(host); n > 0 {
			s.log.Warn("connection refused before the handshake", "source", source, "reason", why, "refused", n)
			s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Source: source,
				Detail: fmt.Sprintf("connection refused before the handshake: %s; %d refused from %s in this window (audited at most once per %s per source)", why, n, host, auditEvery)})
		}
		return nil, nil, nil, nil
	}
	if evicted != nil {
		// Its handshake fails and ends quietly; the eviction is audited
		// here, counted with the source's refusals.
		evicted.nc.Close()
		if n := s.preauth.refusal(evicted.host); n > 0 {
			limit := fmt.Sprintf("ssh.max_unauthenticated (%d) reached and %s held the most places", s.cfg.MaxUnauthenticated, evicted.host)
			if why == gaveWayPerSource {
				limit = fmt.Sprintf("ssh.max_unauthenticated_per_source (%d) reached for %s, so one of its pending connections (the oldest silent one, else the one longest without a step of its handshake) gave way to a newer one", s.cfg.MaxUnauthenticatedPerSource, evicted.host)
			}
			s.log.Warn("unauthenticated connection closed to make room", "source", evicted.host, "limit", why, "refused", n)
			s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Source: evicted.host,
				Detail: fmt.Sprintf("unauthenticated connection closed to make room: %s; %d refused or closed from %s in this window (audited at most once per %s per source)",
					limit, n, evicted.host, auditEvery)})
		}
	}
	nc.SetDeadline(time.Now().Add(s.cfg.AuthTimeout))
	s.places.Store(source, place)
	sc, chans, reqs, err := ssh.NewServerConn(&progressConn{Conn: nc, pc: place}, s.sshCfg)
	s.places.Delete(source)
	s.authing.Delete(source)
	s.preauth.done(place)
	offer, refused := s.refusedOffers.LoadAndDelete(source)
	if err != nil {
		nc.Close()
		if refused {
			// A refused key sent with a signature that did not verify
			// (a modified client): a failed attempt like any other.
			o := offer.(refusedOffer)
			const method = "publickey (signed without asking; the signature did not verify)"
			s.log.Info("authentication failed", "user", o.user, "source", source, "method", method, "key", o.fingerprint, "err", err)
			s.authAudit.failed(o.user, source, method, o.fingerprint, time.Now())
			s.preauth.failed(host)
			return nil, nil, nil, nil
		}
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) || errors.Is(err, proxyproto.ErrInvalidUpstream) {
			s.log.Warn("connection from a trusted balancer without a usable PROXY header refused", "source", source, "err", err)
			s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Source: source,
				Detail: "connection from a proxy_protocol.trusted peer without a usable PROXY header"})
			return nil, nil, nil, nil
		}
		if errors.Is(err, proxyproto.ErrSuperfluousProxyHeader) {
			s.log.Warn("PROXY protocol header from an untrusted peer: connection refused", "source", source)
			s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Source: source,
				Detail: "PROXY protocol header from a peer not in proxy_protocol.trusted"})
			return nil, nil, nil, nil
		}
		s.log.Debug("handshake ended", "source", source, "err", err)
		return nil, nil, nil, nil
	}
	nc.SetDeadline(time.Time{})
	id, ok := sc.Permissions.ExtraData[extraKey{}].(*identity)
	if !ok {
		// Cannot happen: every successful authentication sets it.
		sc.Close()
		return nil, nil, nil, nil
	}
	return sc, chans, reqs, id
}

// advance notes that the connection from source, still authenticating,
// reached st.
func (s *Server) advance(source string, st stage) {
	if pc, ok := s.places.Load(source); ok {
		pc.(*pendingConn).advance(st, time.Now())
	}
}

// auditHeldBack audits, as each source's audit window ends, how many
// pre-auth refusals and connections closed to make room were held back
// in it, until Shutdown; then those of the windows still open.
func (s *Server) auditHeldBack() {
	t := time.NewTicker(auditEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.auditRefusals(s.ctx, s.preauth.heldBack(false))
		case <-s.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.auditRefusals(ctx, s.preauth.heldBack(true))
			return
		}
	}
}

func (s *Server) auditRefusals(ctx context.Context, held map[string]int) {
	for host, n := range held {
		s.log.Warn("connections refused or closed before authenticating, held back from the audit log", "source", host, "refused", n)
		s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Source: host,
			Detail: fmt.Sprintf("%d more connections from %s refused before the handshake or closed to make room in the %s after the last one audited (audited at most once per %s per source)",
				n, host, auditEvery, auditEvery)})
	}
}

func (s *Server) envAllowed(name string) bool {
	if len(name) >= 3 && name[:3] == "LD_" {
		return false
	}
	for _, p := range s.cfg.EnvAllow {
		if p == name || (len(p) > 0 && p[len(p)-1] == '*' && len(name) >= len(p)-1 && name[:len(p)-1] == p[:len(p)-1]) {
			return true
		}
	}
	return false
}

// userError is shown to the technician as it is.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func userErrorf(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...)}
}
