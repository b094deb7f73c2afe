package web

import (
	"context"
	"crypto/ed25519"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

//go:embed templates assets
var files embed.FS

// Broker is what the console needs of the domain: who people are, and the
// same access-request decisions as the SSH commands.
type Broker interface {
	Technician(name string) (*broker.Technician, bool)
	Target(name string) (*broker.Target, bool)
	IsAdmin(technician string) bool
	IsApprover(technician string) bool
	IsReviewer(technician string) bool
	Request(ctx context.Context, id int64) (broker.AccessRequest, error)
	Requests(ctx context.Context, f broker.RequestFilter) ([]broker.AccessRequest, error)
	Approve(ctx context.Context, approver string, id int64, comment string) (broker.AccessRequest, error)
	Deny(ctx context.Context, approver string, id int64, reason string) (broker.AccessRequest, error)
	Approvers(r *broker.AccessRequest) []string
	Audit(ctx context.Context, e broker.AuditEvent)
	Directory() (affiliates, technicians, targets []string)
	Locked(technician string) (why string, locked bool)
	HasKeyFingerprint(technician, fingerprint string) bool
	// CheckScope refuses, and audits, an action outside actor's scope
	// (review_residency): the one scope check of every action, as over
	// SSH. LockConcern is a lock as it sees it.
	CheckScope(ctx context.Context, actor, action, source string, c broker.Concern) error
	LockConcern(kind, name string) broker.Concern
}

// Store is the register the console reads: sessions, requests and locks,
// and the text index of recordings for search. It also keeps the
// console's sign-in links and browser sessions, which every node shares.
type Store interface {
	broker.Store
	// IndexSessionText stores what a session's recording holds as text.
	IndexSessionText(ctx context.Context, id string, t broker.SessionText) error
	// SessionsToIndex lists ended sessions whose text is not indexed yet.
	SessionsToIndex(ctx context.Context, limit int) ([]string, error)
	// TextSnippets returns an excerpt around the first match of query in
	// each of the sessions ids.
	TextSnippets(ctx context.Context, query string, ids []string) (map[string]string, error)
}

// LiveSessions ends a live session on this node, as `kill` over SSH does.
type LiveSessions interface {
	Kill(id, why string) bool
}

// Config is what a console is made of.
type Config struct {
	Broker Broker
	Store  Store
	Live   LiveSessions
	// Moderation, if set, lets those a rule names moderate its sessions
	// on this node from the console.
	Moderation Moderation
	// NodeName is this node's name in a cluster; Peers, if set, relays
	// the live view of a session another node serves (the register
	// names the node), over the node-to-node link.
	NodeName string
	Peers    Peers
	// RecordingDir is the local recording directory; RecordingKey the
	// public key that signs recordings, to verify them.
	RecordingDir string
	RecordingKey ed25519.PublicKey
	// URL is the console's address as browsers reach it, for sign-in
	// links ("https://bastion.example.com:8443"). Secure cookies are set
	// when it is https.
	URL string
	// LinkTTL is how long a sign-in link is valid (default 1 minute);
	// IdleTimeout and SessionTTL end a browser session after that long
	// without a request (default 30 minutes) and after that long in all
	// (default 8 hours).
	LinkTTL     time.Duration
	IdleTimeout time.Duration
	SessionTTL  time.Duration
	Logger      *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// OIDC, if set, offers single sign-on through an OpenID provider
	// beside the links `ssh … login` prints.
	OIDC *OIDCConfig
	// Balancers are the load balancers' addresses (proxy_protocol.trusted):
	// behind one the console sees its address for every browser, so the
	// per-source bound on single sign-ons does not apply to it, only the
	// node's own.
	Balancers []netip.Prefix
}

// Server is the console: an http.Handler, and the issuer of sign-in links
// for the SSH `login` command.
type Server struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	pages  map[string]*pageTemplate
	assets fs.FS
	secure bool
	origin string // scheme://host[:port] of cfg.URL

	throttle signInThrottle
	// oidcStarts bounds the single sign-ons a source starts.
	oidcStarts startCounter
	sso        *sso // nil without single sign-on

	factsMu sync.Mutex
	facts   map[string]recordingFacts // of ended sessions, by session ID
	heavy   chan struct{}             // recordings being read whole
}

// New returns a console. It does not listen; serve it with net/http.
func New(cfg Config) (*Server, error) {
	if cfg.Broker == nil || cfg.Store == nil {
		return nil, errors.New("web: Broker and Store are required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("web: url %q: give the console's address as browsers reach it, such as https://bastion.example.com:8443", cfg.URL)
	}
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, secure: u.Scheme == "https",
		origin: u.Scheme + "://" + u.Host, facts: map[string]recordingFacts{}, heavy: make(chan struct{}, 2)}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.OIDC != nil {
		s.sso = newSSO(*cfg.OIDC)
	}
	s.assets, _ = fs.Sub(files, "assets")
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// ServeHTTP serves the console with its security headers on every response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// No form of the console is near this; a larger body is refused.
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	// no-referrer would make browsers send "Origin: null" on our own form
	// posts; same-origin keeps URLs (session IDs) from other sites alike.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if s.secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	s.mux.ServeHTTP(w, r)
}

// maxBody bounds a request's body.
const maxBody = 64 << 10

// contentSecurityPolicy allows scripts, styles and the player's
// WebAssembly from this server only: no inline script or style, no
// framing, forms posting only here. 'wasm-unsafe-eval' lets the player
// compile its terminal emulator; it does not allow eval of JavaScript.
const contentSecurityPolicy = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// person is who a browser session belongs to, with their roles as the
// config gives them now.
type person struct {
	tech     *broker.Technician // as configured when the request came
	Name     string
	Admin    bool
	Approver bool
	Reviewer bool
	// Residencies limit what the person sees of sessions and recordings;
	// nil means every residency.
	Residencies []string
	// viaOIDC is set when the browser session was started by single
	// sign-on: its roles are then those the sign-in granted, at most.
	viaOIDC bool
}

// mayReview reports whether p may see sessions and recordings.
func (p *person) mayReview() bool { return p.Admin || p.Reviewer }

// Roles names p's roles for display.
func (p *person) Roles() string {
	var r []string
	for _, x := range []struct {
		on   bool
		name string
	}{{p.Admin, "admin"}, {p.Approver, "approver"}, {p.Reviewer, "reviewer"}} {
		if x.on {
			r = append(r, x.name)
		}
	}
	return strings.Join(r, ", ")
}

// sees reports whether residency is within p's scope.
func (p *person) sees(residency string) bool { return p.tech.Scope().Covers(residency) }

// Scope describes p's residency scope for display.
func (p *person) Scope() string { return p.tech.Scope().String() }

// personOf returns the technician called name with the roles the config
// gives now; ok is false if they are no longer configured or have no role
// in the console. check adds the key and the locks.
func (s *Server) personOf(name string) (*person, bool) {
	t, ok := s.cfg.Broker.Technician(name)
	if !ok {
		return nil, false
	}
	p := &person{tech: t, Name: name, Admin: s.cfg.Broker.IsAdmin(name), Approver: s.cfg.Broker.IsApprover(name)}
	p.Reviewer = s.cfg.Broker.IsReviewer(name)
	if t.ReviewResidency != nil {
		p.Residencies = slices.Clone(t.ReviewResidency)
	}
	return p, p.Admin || p.Approver || p.Reviewer
}
