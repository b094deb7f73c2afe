package broker

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/recording"
)

// ErrUnknownTarget is returned when a technician names a target that is not
// configured. The message to the technician does not reveal which targets
// exist.
var ErrUnknownTarget = errors.New("unknown target")

// Broker answers the SSH side's questions: who is this, may they reach
// that, and with which certificate. It keeps the register of sessions.
type Broker struct {
	rules  atomic.Pointer[ruleSet] // replaced whole on reload
	locks  atomic.Pointer[[]Lock]  // the locks in force, refreshed from the store
	issuer *Issuer
	sealer Sealer // nil: no second factor can be enrolled
	store  Store
	log    *slog.Logger
	now    func() time.Time

	onAudit func(AuditEvent) // nil: nobody

	crossBorder sync.Map // session ID: *SessionNotice of a live cross-border session, for its end

	unsealedMu sync.Mutex
	unsealed   map[string][sha256.Size]byte // technician: hash of the secret SealTOTPSecrets left in the clear

	notifier    Notifier
	hub         requestHub
	reqMu       sync.Mutex // orders request transitions on this node
	grantHook   atomic.Pointer[func()]
	adminGroups atomic.Pointer[[]string]
	// reviewerGroups, like adminGroups, is replaced on a config reload.
	reviewerGroups atomic.Pointer[[]string]
	// powersWithoutMFA, like adminGroups, is replaced on a config reload.
	powersWithoutMFA atomic.Pointer[[]string]
}

// ruleSet is what a config reload replaces.
type ruleSet struct {
	technicians map[string]*Technician
	targets     map[string]*Target
	// jumps maps what a technician's direct-tcpip channel names,
	// "host port", to the target sekisho answers as (JumpTarget); nil
	// for an address two targets share.
	jumps  map[string]*Target
	policy *Policy
	geo    *Geo
}

// Config holds what a Broker is made of.
type Config struct {
	Technicians []*Technician
	Targets     []*Target
	Policy      *Policy
	Geo         *Geo // locates source addresses; nil knows none
	Issuer      *Issuer
	// Sealer seals TOTP secrets at rest; nil means the Issuer. Without
	// either, no second factor can be enrolled.
	Sealer Sealer
	Store  Store
	Logger *slog.Logger
	// Notifier is told of access request transitions and of
	// cross-border sessions starting and ending (webhooks); nil tells
	// nobody.
	Notifier Notifier
	// AdminGroups are the groups whose members may list and end any live
	// session and revoke any grant.
	AdminGroups []string
	// ReviewerGroups are the groups whose members may see sessions and
	// replay recordings in the web console.
	ReviewerGroups []string
	// PowersWithoutMFA are the groups whose powers (see PowerApprove)
	// are used without a verification code; every other holder of a
	// power gives one to log in to sekisho's commands.
	PowersWithoutMFA []string
	// OnAudit, if set, is told of every audit event once it is stored
	// (metrics). It runs in the caller's goroutine and must be quick.
	OnAudit func(AuditEvent)
}

// New returns a broker.
func New(c Config) *Broker {
	b := &Broker{issuer: c.Issuer, sealer: c.Sealer, store: c.Store, log: c.Logger, now: time.Now, notifier: c.Notifier, onAudit: c.OnAudit}
	if b.sealer == nil && c.Issuer != nil {
		b.sealer = c.Issuer
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.SetAdminGroups(c.AdminGroups)
	b.SetReviewerGroups(c.ReviewerGroups)
	b.SetPowersWithoutMFA(c.PowersWithoutMFA)
	b.Replace(c.Technicians, c.Targets, c.Policy, c.Geo)
	b.locks.Store(&[]Lock{})
	return b
}

// Replace puts new technicians, targets, rules and networks in force, as
// on a config reload. Decisions made from then on use them; live sessions
// are re-checked by the caller with StillAllowed. Pending requests and
// grants in force are held to them by ReviseRequests, which the caller
// runs next.
func (b *Broker) Replace(techs []*Technician, targets []*Target, policy *Policy, geo *Geo) {
	rs := &ruleSet{technicians: map[string]*Technician{}, targets: map[string]*Target{}, jumps: map[string]*Target{}, policy: policy, geo: geo}
	if rs.policy == nil {
		rs.policy = &Policy{}
	}
	for _, t := range techs {
		rs.technicians[t.Name] = t
	}
	for _, t := range targets {
		rs.targets[t.Name] = t
		for _, k := range jumpKeys(t) {
			if other, ok := rs.jumps[k]; ok && other != t {
				rs.jumps[k] = nil // two targets at one address: neither
				continue
			}
			rs.jumps[k] = t
		}
	}
	b.rules.Store(rs)
}

// jumpKeys are the destinations of a direct-tcpip channel that name t:
// its name, its host names and the host of its address, on port 22.
func jumpKeys(t *Target) []string {
	var keys []string
	for _, n := range t.JumpNames() {
		keys = append(keys, n+" 22")
	}
	return keys
}

// JumpTarget returns the target a technician's direct-tcpip channel to
// host:port names (ssh -J, ProxyJump): one of its names, or its address's
// host, on port 22. Any other port is a port forward, whatever the host.
func (b *Broker) JumpTarget(host string, port uint32) (*Target, bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		host = a.Unmap().String()
	}
	t := b.rules.Load().jumps[host+" "+strconv.FormatUint(uint64(port), 10)]
	return t, t != nil
}

// HostSigner returns what answers as t through ProxyJump: this node's
// host key with a certificate for t's names from Vault's host CA.
func (b *Broker) HostSigner(ctx context.Context, t *Target) (ssh.Signer, error) {
	if b.issuer == nil {
		return nil, errors.New("no Vault issuer")
	}
	return b.issuer.HostSigner(ctx, t)
}

// Technician returns the technician called name.
func (b *Broker) Technician(name string) (*Technician, bool) {
	t, ok := b.rules.Load().technicians[name]
	return t, ok
}

// Directory lists the names of the technicians and targets configured
// now and of their technicians' affiliates, each sorted: what a console
// offers to lock.
func (b *Broker) Directory() (affiliates, technicians, targets []string) {
	rs := b.rules.Load()
	seen := map[string]bool{}
	for name, t := range rs.technicians {
		technicians = append(technicians, name)
		if !seen[t.Affiliate.Name] {
			seen[t.Affiliate.Name] = true
			affiliates = append(affiliates, t.Affiliate.Name)
		}
	}
	for name := range rs.targets {
		targets = append(targets, name)
	}
	slices.Sort(affiliates)
	slices.Sort(technicians)
	slices.Sort(targets)
	return affiliates, technicians, targets
}

// Target returns the target called name.
func (b *Broker) Target(name string) (*Target, bool) {
	t, ok := b.rules.Load().targets[name]
	return t, ok
}

// Authorize decides whether technician may reach target from source. The
// decision, with its full trace, is written to the audit log whatever it
// is; a refusal is logged as well.
func (b *Broker) Authorize(ctx context.Context, technician, target, source string) (Decision, *Target, error) {
	rs := b.rules.Load()
	tech, ok := rs.technicians[technician]
	if !ok {
		return Decision{}, nil, fmt.Errorf("unknown technician %q", technician)
	}
	tg, ok := rs.targets[target]
	if !ok {
		b.Audit(ctx, AuditEvent{Kind: EventRefused, Technician: technician, Target: target, Source: source,
			Detail: "unknown target"})
		return Decision{Effect: Deny, Reason: fmt.Sprintf("no target called %q is available to you", target)}, nil, ErrUnknownTarget
	}
	if l := b.lockFor(tech, tg); l != nil {
		reason := lockReason(tg.Name, l)
		b.Audit(ctx, AuditEvent{Kind: EventRefused, Technician: technician, Target: target, Source: source,
			Detail: JSONDetail(struct {
				Lock   int64  `json:"lock"`
				Kind   string `json:"kind"`
				Name   string `json:"name"`
				Reason string `json:"reason"`
			}{l.ID, l.Kind, l.Name, l.Reason})})
		return Decision{Effect: Deny, Rule: "", Reason: reason}, tg, nil
	}
	d := b.Decide(tech, tg, source, b.now())
	if err := b.applyGrant(ctx, tech, tg, &d); err != nil {
		b.log.Error("grants unavailable: approval rules refuse until they are", "err", err)
		d.Reason += "; grants cannot be checked at the moment, try again later"
	}
	detail, _ := json.Marshal(struct {
		Effect Effect      `json:"effect"`
		Rule   string      `json:"rule"`
		Reason string      `json:"reason"`
		Grant  *Grant      `json:"grant,omitempty"`
		Inputs Inputs      `json:"inputs"`
		Trace  []TraceStep `json:"trace"`
	}{d.Effect, d.Rule, d.Reason, d.Grant, d.Inputs, d.Trace})
	b.Audit(ctx, AuditEvent{Kind: EventDecision, Technician: technician, Target: target, Source: source, Detail: string(detail)})
	if !d.Allowed() && d.Effect != Approval {
		b.log.Warn("access refused", "technician", technician, "affiliate", tech.Affiliate.Name,
			"target", target, "residency", tg.Residency, "source", source, "rule", d.Rule, "reason", d.Reason)
	}
	return d, tg, nil
}

// sourceHost returns the address part of host:port.
func sourceHost(source string) string {
	if h, _, err := net.SplitHostPort(source); err == nil {
		return h
	}
	return source
}

// Decide evaluates the rules for tech reaching tg from source at now,
// locating the source first. It records nothing: Authorize does that.
func (b *Broker) Decide(tech *Technician, tg *Target, source string, now time.Time) Decision {
	rs := b.rules.Load()
	req := Request{Technician: tech, Target: tg, Source: source, Now: now}
	host := source
	if h, _, err := net.SplitHostPort(source); err == nil {
		host = h
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		req.SourceCountry, req.SourceNetwork = rs.geo.Locate(addr)
	}
	return rs.policy.Decide(req)
}

// Policy returns the rules in force.
func (b *Broker) Policy() *Policy { return b.rules.Load().policy }

// StillAllowed re-checks a live session against the technicians, targets,
// rules and locks in force now: the key it authenticated with must still
// be registered, and the rules must still allow it with the same rule,
// login and limits (a session keeps the limits it started with, so when
// they change it must start again). When the answer is no, the reason is
// what the technician is told as the session ends.
func (b *Broker) StillAllowed(technician, target, source string, key ssh.PublicKey, prev Decision) (bool, string) {
	rs := b.rules.Load()
	tech, ok := rs.technicians[technician]
	if !ok {
		return false, fmt.Sprintf("technician %s is no longer registered", technician)
	}
	if !tech.HasKey(key) {
		return false, fmt.Sprintf("the key this session used is no longer registered for %s", technician)
	}
	tg, ok := rs.targets[target]
	if !ok {
		return false, fmt.Sprintf("target %s is no longer available", target)
	}
	if l := b.lockFor(tech, tg); l != nil {
		return false, lockReason(target, l)
	}
	d := b.Decide(tech, tg, source, b.now())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if prev.Grant != nil && d.Effect == Approval && d.Rule == prev.Rule {
		// The session runs under its own grant, whatever other grants
		// the technician holds: that one must still be in force.
		r, err := b.store.Request(ctx, prev.Grant.RequestID)
		switch {
		case err != nil:
			b.log.Error("grants unavailable: a session under a grant is kept until they are", "request", prev.Grant.RequestID, "err", err)
		case !r.ActiveGrant(b.now()) || r.Technician != technician || r.Target != target || r.Rule != prev.Rule:
			return false, b.grantGone(ctx, prev.Grant)
		}
		d.Effect, d.Grant = Allow, prev.Grant
	}
	if !d.Allowed() {
		return false, "the rules no longer allow it: " + d.Reason
	}
	if d.Rule != prev.Rule || d.Login != prev.Login || (d.RequireMFA && !prev.RequireMFA) || !reflect.DeepEqual(d.Limits, prev.Limits) ||
		!reflect.DeepEqual(d.Moderation, prev.Moderation) {
		return false, fmt.Sprintf("the rules for this session changed (now rule %q); connect again", d.Rule)
	}
	return true, ""
}

// RefreshLocks reloads the locks in force from the store and reports
// whether they changed.
func (b *Broker) RefreshLocks(ctx context.Context) (bool, error) {
	locks, err := b.store.Locks(ctx, b.now())
	if err != nil {
		return false, fmt.Errorf("read locks: %w", err)
	}
	old := *b.locks.Load()
	b.locks.Store(&locks)
	if len(old) != len(locks) {
		return true, nil
	}
	for i := range old {
		if old[i].ID != locks[i].ID {
			return true, nil
		}
	}
	return false, nil
}

// lockFor returns the first lock in force on tech, their affiliate or tg.
func (b *Broker) lockFor(tech *Technician, tg *Target) *Lock {
	now := b.now()
	for _, l := range *b.locks.Load() {
		if !l.Active(now) {
			continue
		}
		switch {
		case l.Kind == LockAffiliate && l.Name == tech.Affiliate.Name,
			l.Kind == LockTechnician && l.Name == tech.Name,
			l.Kind == LockTarget && l.Name == tg.Name:
			return &l
		}
	}
	return nil
}

func lockReason(target string, l *Lock) string {
	return fmt.Sprintf("access to %s refused: %s %s is locked (lock %d): %s", target, l.Kind, l.Name, l.ID, l.Reason)
}

// Certificate issues a short-lived certificate for one session. The key
// ID names the technician, the affiliate and the session, so the target's
// own sshd log says who connected. local are sekisho's own addresses
// towards the target: the certificate is accepted from there only,
// unless sekisho's addresses are configured (vault.source_addresses).
// Under a direction-limited rule without transfers run as commands, the
// target's sshd serves SFTP and nothing else with it.
func (b *Broker) Certificate(ctx context.Context, tech *Technician, d Decision, target *Target, sessionID string, local []netip.Addr) (*Credential, error) {
	if !d.Allowed() {
		return nil, errors.New("certificate refused: access not allowed")
	}
	keyID := fmt.Sprintf("sekisho technician=%s affiliate=%s session=%s target=%s", tech.Name, tech.Affiliate.Name, sessionID, target.Name)
	req := CertRequest{Principal: d.Login, KeyID: keyID,
		PTY:            d.Limits.AllowsChannel(ChannelShell) || d.Limits.AllowsChannel(ChannelExec),
		PortForwarding: d.Limits.AllowsChannel(ChannelPortForward),
		SourceAddress:  b.issuer.sourceAddress(local)}
	if d.Limits.TargetSFTPOnly() {
		req.ForceCommand = ForceSFTP
	}
	began := time.Now()
	cred, err := b.issuer.Issue(ctx, req)
	took := time.Since(began)
	if err != nil {
		b.Audit(ctx, AuditEvent{Kind: EventCertFailed, Technician: tech.Name, Target: target.Name, Session: sessionID, Detail: err.Error()})
		return nil, err
	}
	b.Audit(ctx, AuditEvent{Kind: EventCertIssued, Technician: tech.Name, Target: target.Name, Session: sessionID,
		Detail: JSONDetail(struct {
			Serial          uint64            `json:"serial"`
			KeyID           string            `json:"key_id"`
			Principal       string            `json:"principal"`
			ValidBefore     string            `json:"valid_before"`
			CriticalOptions map[string]string `json:"critical_options"`
			Extensions      []string          `json:"extensions"`
			SignMS          float64           `json:"sign_ms"`
		}{cred.Certificate.Serial, keyID, d.Login, time.Unix(int64(cred.Certificate.ValidBefore), 0).UTC().Format(time.RFC3339),
			req.criticalOptions(), req.extensions(), float64(took.Microseconds()/10) / 100})})
	return cred, nil
}

// Audit writes an event to the audit log (store and structured log). A
// failure to store it is logged; it never hides the event from the log.
func (b *Broker) Audit(ctx context.Context, e AuditEvent) {
	if e.At.IsZero() {
		e.At = b.now().UTC()
	}
	b.log.Info("audit", "kind", e.Kind, "technician", e.Technician, "target", e.Target,
		"source", e.Source, "session", e.Session, "detail", e.Detail)
	if b.store != nil {
		if err := b.store.Audit(ctx, e); err != nil {
			b.log.Error("audit store write failed", "kind", e.Kind, "err", err)
		}
	}
	if b.onAudit != nil {
		b.onAudit(e)
	}
}

// LocksInForce is the number of locks in force, as last refreshed.
func (b *Broker) LocksInForce() int {
	return len(*b.locks.Load())
}

// SessionStarted registers a session that is about to relay, and audits it.
func (b *Broker) SessionStarted(ctx context.Context, r *SessionRecord) error {
	if err := b.store.StartSession(ctx, r); err != nil {
		return err
	}
	b.Audit(ctx, AuditEvent{Kind: EventSessionStart, Technician: r.Technician, Target: r.Target, Source: r.Source, Session: r.ID,
		Detail: JSONDetail(struct {
			Affiliate   string `json:"affiliate"`
			Residency   string `json:"residency"`
			CrossBorder bool   `json:"cross_border"`
			Rule        string `json:"rule"`
			Login       string `json:"login"`
		}{r.Affiliate, r.Residency, r.CrossBorder, r.Rule, r.Login})})
	if r.CrossBorder && b.notifier != nil {
		n := &SessionNotice{ID: r.ID, Technician: r.Technician, Affiliate: r.Affiliate, AffiliateCountry: r.AffiliateCountry,
			Source: r.Source, SourceCountry: r.SourceCountry, Target: r.Target, Residency: r.Residency, Login: r.Login,
			Rule: r.Rule, Request: r.Request, StartedAt: r.StartedAt}
		b.crossBorder.Store(r.ID, n)
		b.notifier.Notify(Event{Kind: EventSessionCrossBorder, At: b.now().UTC(), Session: n})
	}
	return nil
}

// SessionEnded records the end of a session, and audits it.
func (b *Broker) SessionEnded(ctx context.Context, id string, end SessionEnd) error {
	err := b.store.EndSession(ctx, id, end)
	b.Audit(ctx, AuditEvent{Kind: EventSessionEnd, Session: id, Technician: end.Technician, Target: end.Target, Source: end.Source,
		Detail: JSONDetail(struct {
			Reason   string `json:"reason"`
			BytesIn  int64  `json:"bytes_in"`
			BytesOut int64  `json:"bytes_out"`
		}{end.Reason, end.BytesIn, end.BytesOut})})
	if v, ok := b.crossBorder.LoadAndDelete(id); ok && b.notifier != nil {
		n := *v.(*SessionNotice)
		n.EndedAt, n.EndReason, n.BytesIn, n.BytesOut = end.At, end.Reason, end.BytesIn, end.BytesOut
		b.notifier.Notify(Event{Kind: EventSessionCrossBorderEnded, At: b.now().UTC(), Session: &n})
	}
	return err
}

// RecordingSeal is the seal of a session's recording.
type RecordingSeal struct {
	Session    string `json:"session"`
	Complete   bool   `json:"complete"`
	Reason     string `json:"reason,omitempty"`
	Chunks     int    `json:"chunks"`
	Head       string `json:"head"`
	MetaSHA256 string `json:"meta_sha256"`
	Key        string `json:"key"`
	Signature  string `json:"signature"`
	// Technician and Target name the session in the audit event; they
	// are not part of the seal.
	Technician string `json:"-"`
	Target     string `json:"-"`
}

// RecordingSealed records a recording's seal in the register and the
// audit log, so that a seal.json replaced or re-made later is found out.
func (b *Broker) RecordingSealed(ctx context.Context, s RecordingSeal) error {
	detail, _ := json.Marshal(s)
	b.Audit(ctx, AuditEvent{Kind: EventRecordingSealed, Session: s.Session, Technician: s.Technician, Target: s.Target, Detail: string(detail)})
	return b.store.SetRecordingSeal(ctx, s.Session, recording.RegisterHead(s.Head), s.Chunks, s.Complete)
}

// SessionRefused registers a session that was allowed but could not start,
// as ended at once with reason. The refusal itself is already audited.
func (b *Broker) SessionRefused(ctx context.Context, r *SessionRecord, at time.Time, reason string) error {
	if err := b.store.StartSession(ctx, r); err != nil {
		return err
	}
	return b.store.EndSession(ctx, r.ID, SessionEnd{At: at, Reason: reason})
}

// JSONDetail is v as the JSON text of an audit event's detail. Strings in
// it may come from technicians or targets; encoding/json escapes what
// would break the JSON or a terminal (control characters, invalid UTF-8).
func JSONDetail(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(v)) // cannot happen for the structs passed
	}
	return strings.TrimSuffix(b.String(), "\n")
}
