package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/sekisho/sekisho/broker"
)

// OIDCConfig is single sign-on for the console through an OpenID
// provider: the authorization code flow with PKCE (S256), state and
// nonce. The provider says who the person is (TechnicianClaim) and which
// of their console roles it lets them use (GroupsClaim through Roles);
// sekisho's own config says which roles they have. A person gets the
// roles both give: the provider can take roles away, never add one.
type OIDCConfig struct {
	// Name is the provider's name on the sign-in button.
	Name string
	// Issuer is the provider's issuer URL; its discovery document is
	// read from Issuer/.well-known/openid-configuration.
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is the console's callback as registered with the
	// provider (https://bastion.example.com:8443/oidc/callback).
	RedirectURL string
	// PostLogoutRedirectURL is where the provider sends the browser after
	// signing out there, as registered with it.
	PostLogoutRedirectURL string
	Scopes                []string
	// TechnicianClaim is the ID token claim naming the sekisho
	// technician; GroupsClaim the claim listing the person's groups.
	TechnicianClaim string
	GroupsClaim     string
	// Roles maps each console role (admin, approver, reviewer) to the
	// provider's groups that let a person use it.
	Roles map[string][]string
	// HTTPClient makes the calls to the provider; nil is a client with a
	// 15 s timeout.
	HTTPClient *http.Client
}

// Console roles, as the provider's groups are mapped to them.
const (
	RoleAdmin    = "admin"
	RoleApprover = "approver"
	RoleReviewer = "reviewer"
)

// ConsoleRoles lists the console roles, in the order they are shown.
var ConsoleRoles = []string{RoleAdmin, RoleApprover, RoleReviewer}

// oidcLoginTTL is how long a person has at the provider between leaving
// the console and coming back to its callback.
const oidcLoginTTL = 10 * time.Minute

// providerTimeout bounds one call to the provider.
const providerTimeout = 15 * time.Second

// sso is the console's client of one OpenID provider. Discovery is read
// the first time it is needed and kept once it succeeded: a provider
// down when a node starts does not keep the node from serving links.
type sso struct {
	cfg  OIDCConfig
	http *http.Client

	mu         sync.Mutex
	provider   *oidc.Provider
	endSession string        // the provider's end_session_endpoint, if any
	reading    chan struct{} // closed when the discovery under way ends
	failed     error         // the last discovery's error, at failedAt
	failedAt   time.Time
}

func newSSO(cfg OIDCConfig) *sso {
	c := cfg.HTTPClient
	if c == nil {
		c = &http.Client{Timeout: providerTimeout}
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID, "profile", "email", "groups"}
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Issuer
		if u, err := url.Parse(cfg.Issuer); err == nil && u.Host != "" {
			cfg.Name = u.Hostname()
		}
	}
	return &sso{cfg: cfg, http: c}
}

// errProviderUnreachable is what a person sees when the provider does
// not answer; the log has why.
var errProviderUnreachable = errors.New("the identity provider cannot be reached; try again in a moment, " +
	"or sign in with the link `ssh … login` prints")

// discoveryRetry is how long a failed discovery is answered from memory:
// a provider that is away costs one attempt per interval, not one per
// request.
const discoveryRetry = 5 * time.Second

// discover returns the provider, reading its discovery document if it
// has not been read yet. One reading runs at a time, outside the lock;
// the others wait for it, or for their own request's end.
func (c *sso) discover(ctx context.Context) (*oidc.Provider, error) {
	for {
		c.mu.Lock()
		if c.provider != nil {
			p := c.provider
			c.mu.Unlock()
			return p, nil
		}
		if c.failed != nil && time.Since(c.failedAt) < discoveryRetry {
			err := c.failed
			c.mu.Unlock()
			return nil, err
		}
		if wait := c.reading; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("discovery of %s: %w", c.cfg.Issuer, ctx.Err())
			}
		}
		done := make(chan struct{})
		c.reading = done
		c.mu.Unlock()

		p, end, err := c.read(ctx)
		c.mu.Lock()
		c.reading = nil
		if err == nil {
			c.provider, c.endSession, c.failed = p, end, nil
		} else {
			c.failed, c.failedAt = err, time.Now()
		}
		c.mu.Unlock()
		close(done)
		return p, err
	}
}

// read reads the discovery document once, within providerTimeout.
func (c *sso) read(ctx context.Context) (*oidc.Provider, string, error) {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), c.http), providerTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, c.cfg.Issuer)
	if err != nil {
		return nil, "", fmt.Errorf("discovery of %s: %w", c.cfg.Issuer, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := p.Claims(&extra); err != nil {
		return nil, "", fmt.Errorf("discovery of %s: %w", c.cfg.Issuer, err)
	}
	return p, extra.EndSession, nil
}

func (c *sso) oauth2(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: c.cfg.RedirectURL, Scopes: c.cfg.Scopes}
}

// endSessionURL is where the browser goes to sign out at the provider
// too, or "" if the provider has no end_session_endpoint.
func (c *sso) endSessionURL(ctx context.Context, idToken string) string {
	if _, err := c.discover(ctx); err != nil {
		return ""
	}
	c.mu.Lock()
	end := c.endSession
	c.mu.Unlock()
	u, err := url.Parse(end)
	if end == "" || err != nil {
		return ""
	}
	q := u.Query()
	q.Set("client_id", c.cfg.ClientID)
	if idToken != "" {
		q.Set("id_token_hint", idToken)
	}
	if c.cfg.PostLogoutRedirectURL != "" {
		q.Set("post_logout_redirect_uri", c.cfg.PostLogoutRedirectURL)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// oidcCookie is the cookie that binds a sign-on under way to the browser
// that started it. It is SameSite=Lax, not Strict: the provider's
// redirect back to the callback is a navigation from another site.
func (s *Server) oidcCookie() string {
	if s.secure {
		return "__Host-sekisho-oidc"
	}
	return "sekisho-oidc"
}

// nextPath is a console path a sign-in may go on to: letters, digits,
// '/', '-', '_' and '.', never another site.
var nextPath = regexp.MustCompile(`^[A-Za-z0-9_.-][A-Za-z0-9/_.-]*$`)

// handleOIDCLogin sends the browser to the provider, with a state kept
// in the shared store (so that the callback works on any node, once) and
// a cookie binding it to this browser.
func (s *Server) handleOIDCLogin(w http.ResponseWriter, r *http.Request) {
	if !s.oidcStarts.allow(r, s.cfg.Balancers, s.now()) {
		// Each start stores a row for oidcLoginTTL: a source gets a
		// person's worth of them, not a database's.
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
		s.render(w, r, "error.html", nil, map[string]any{"Code": http.StatusTooManyRequests,
			"Message": "Too many sign-ins started from your address; wait a minute and try again."})
		return
	}
	p, err := s.sso.discover(r.Context())
	if err != nil {
		s.providerUnreachable(w, r, err)
		return
	}
	next := r.URL.Query().Get("next")
	if !nextPath.MatchString(next) || strings.Contains(next, "..") {
		next = ""
	}
	state, binding := newToken(), newToken()
	now := s.now()
	l := broker.OIDCLogin{StateHash: tokenKey(state), BrowserHash: tokenKey(binding), Nonce: newToken(),
		Verifier: oauth2.GenerateVerifier(), Next: next, Created: now, Expires: now.Add(oidcLoginTTL)}
	if err := s.cfg.Store.PutOIDCLogin(r.Context(), l, now); err != nil {
		s.storeFailed(w, r, false, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: s.oidcCookie(), Value: binding, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: int(oidcLoginTTL / time.Second)})
	u := s.sso.oauth2(p).AuthCodeURL(state, oidc.Nonce(l.Nonce), oauth2.S256ChallengeOption(l.Verifier))
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// oidcRefusal is a refused single sign-on: what the person sees, and
// what the audit log gets.
type oidcRefusal struct {
	code       int
	msg        string // for the person
	why        string // for the audit log
	technician string
	subject    string
}

// handleOIDCCallback finishes a single sign-on: the state is taken once
// from the store and must belong to this browser, the code is exchanged
// with the PKCE verifier, the ID token checked (signature, issuer,
// audience, expiry, nonce), and the person signed in with the roles both
// sekisho's config and the provider's groups give.
func (s *Server) handleOIDCCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l, err := s.cfg.Store.TakeOIDCLogin(r.Context(), tokenKey(q.Get("state")), s.now())
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		s.storeFailed(w, r, false, err)
		return
	}
	// The binding cookie has done its work, whatever comes next.
	http.SetCookie(w, &http.Cookie{Name: s.oidcCookie(), Value: "", Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: -1})
	if err != nil {
		s.oidcRefused(w, r, oidcRefusal{code: http.StatusUnauthorized,
			msg: "This sign-in is unknown, used or expired. Start again from the sign-in page.",
			why: "single sign-on callback with an unknown, used or expired state"})
		return
	}
	c, err := r.Cookie(s.oidcCookie())
	if err != nil || subtle.ConstantTimeCompare([]byte(tokenKey(c.Value)), []byte(l.BrowserHash)) != 1 {
		s.oidcRefused(w, r, oidcRefusal{code: http.StatusForbidden,
			msg: "This sign-in did not start in this browser. Start again from the sign-in page.",
			why: "single sign-on callback without the cookie of the browser that started it (login CSRF, or cookies blocked)"})
		return
	}
	if e := q.Get("error"); e != "" {
		desc := q.Get("error_description")
		if len(desc) > 200 {
			desc = desc[:200]
		}
		s.oidcRefused(w, r, oidcRefusal{code: http.StatusForbidden,
			msg: "The identity provider did not sign you in (" + e + ").",
			why: "the identity provider answered " + e + ": " + desc})
		return
	}
	id, refusal := s.oidcIdentity(r, l, q.Get("code"))
	if refusal != nil {
		if refusal.code == http.StatusServiceUnavailable {
			s.providerUnreachable(w, r, errors.New(refusal.why))
			return
		}
		s.oidcRefused(w, r, *refusal)
		return
	}
	p, roles, refusal := s.oidcPerson(id)
	if refusal != nil {
		s.oidcRefused(w, r, *refusal)
		return
	}
	if c, err := r.Cookie(s.cookieName()); err == nil {
		// A sign-in replaces the browser's earlier one.
		if err := s.cfg.Store.DeleteConsoleSession(r.Context(), tokenKey(c.Value)); err != nil {
			s.storeFailed(w, r, false, err)
			return
		}
	}
	bs := broker.ConsoleSession{Technician: p.Name, Via: broker.ViaOIDC, Issuer: s.sso.cfg.Issuer, Subject: id.subject,
		Roles: roles, IDToken: id.rawIDToken}
	if err := s.startSession(r.Context(), w, bs); err != nil {
		s.storeFailed(w, r, false, err)
		return
	}
	s.audit(r.Context(), broker.EventWebSignIn, p.Name, "", broker.JSONDetail(map[string]any{"via": broker.ViaOIDC,
		"issuer": s.sso.cfg.Issuer, "subject": id.subject, "roles": p.Roles(), "groups": id.groups,
		"scope": p.Scope(), "from": r.RemoteAddr}))
	// A page, not a redirect: the browser came here from the provider's
	// site, and would not send the SameSite=Strict session cookie on a
	// redirect that follows; a navigation from this page does.
	s.render(w, r, "signedin.html", nil, map[string]any{"Technician": p.Name, "Roles": p.Roles(), "Next": "/" + l.Next})
}

// oidcIdentity is who the provider says signed in.
type oidcIdentity struct {
	subject    string
	technician string // the technician claim; "" if absent
	groups     []string
	rawIDToken string
}

// oidcIdentity exchanges the code and checks the ID token; a refusal
// with code 503 means the provider could not be reached.
func (s *Server) oidcIdentity(r *http.Request, l broker.OIDCLogin, code string) (oidcIdentity, *oidcRefusal) {
	unverified := func(why string) *oidcRefusal {
		return &oidcRefusal{code: http.StatusForbidden, why: why,
			msg: "The identity provider's answer could not be verified, so you are not signed in. Try again; if it persists, tell the sekisho operator."}
	}
	p, err := s.sso.discover(r.Context())
	if err != nil {
		return oidcIdentity{}, &oidcRefusal{code: http.StatusServiceUnavailable, why: err.Error()}
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), s.sso.http), providerTimeout)
	defer cancel()
	tok, err := s.sso.oauth2(p).Exchange(ctx, code, oauth2.VerifierOption(l.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) {
			return oidcIdentity{}, &oidcRefusal{code: http.StatusServiceUnavailable, why: "code exchange: " + err.Error()}
		}
		return oidcIdentity{}, unverified("the identity provider refused the code exchange: " + re.Error())
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return oidcIdentity{}, unverified("the identity provider's token response has no ID token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: s.sso.cfg.ClientID, Now: s.now}).Verify(ctx, raw)
	if err != nil {
		return oidcIdentity{}, unverified("ID token refused: " + err.Error())
	}
	var azp struct {
		AZP string `json:"azp"`
	}
	if err := idt.Claims(&azp); err != nil || len(idt.Audience) > 1 && azp.AZP != s.sso.cfg.ClientID {
		// OpenID Connect Core 3.1.3.7: a token for several audiences
		// must name this client as the party it was issued to.
		return oidcIdentity{}, unverified("ID token refused: issued to several audiences, and not to " + s.sso.cfg.ClientID + " as its authorized party")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(l.Nonce)) != 1 {
		return oidcIdentity{}, unverified("ID token refused: its nonce is not the one this sign-in sent")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return oidcIdentity{}, unverified("ID token claims: " + err.Error())
	}
	id := oidcIdentity{subject: idt.Subject, rawIDToken: raw, groups: stringsClaim(claims[s.sso.cfg.GroupsClaim])}
	id.technician, _ = claims[s.sso.cfg.TechnicianClaim].(string)
	return id, nil
}

// stringsClaim reads a claim that lists names: an array of strings, or
// one string.
func stringsClaim(v any) []string {
	switch v := v.(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// oidcPerson decides a single sign-on: the technician the provider names
// must be one of sekisho's, not locked, and keep at least one console
// role once the provider's groups have had their say. It returns the
// person and the roles granted.
func (s *Server) oidcPerson(id oidcIdentity) (*person, []string, *oidcRefusal) {
	cfg := s.sso.cfg
	refuse := func(tech, msg string) (*person, []string, *oidcRefusal) {
		return nil, nil, &oidcRefusal{code: http.StatusForbidden, msg: msg, why: msg, technician: tech, subject: id.subject}
	}
	if id.technician == "" {
		return refuse("", fmt.Sprintf("your identity provider account has no %s claim naming a sekisho technician; ask its administrator to set it", cfg.TechnicianClaim))
	}
	if _, ok := s.cfg.Broker.Technician(id.technician); !ok {
		return refuse("", fmt.Sprintf("your identity provider account names %s, who is not a sekisho technician", id.technician))
	}
	if why, locked := s.cfg.Broker.Locked(id.technician); locked {
		return refuse(id.technician, why)
	}
	p, ok := s.personOf(id.technician)
	if !ok {
		return refuse(id.technician, ErrNoConsoleRole.Error())
	}
	have := p.roleList()
	granted := intersectRoles(have, rolesOfGroups(cfg.Roles, id.groups))
	if len(granted) == 0 {
		return refuse(id.technician, noRoleMessage(have, cfg.Roles, id.groups))
	}
	p.limitTo(granted)
	return p, granted, nil
}

// rolesOfGroups returns the console roles that groups are mapped to.
func rolesOfGroups(mapping map[string][]string, groups []string) []string {
	var out []string
	for _, role := range ConsoleRoles {
		for _, g := range mapping[role] {
			if slices.Contains(groups, g) {
				out = append(out, role)
				break
			}
		}
	}
	return out
}

// intersectRoles returns the roles in both a and b, in ConsoleRoles'
// order.
func intersectRoles(a, b []string) []string {
	var out []string
	for _, role := range ConsoleRoles {
		if slices.Contains(a, role) && slices.Contains(b, role) {
			out = append(out, role)
		}
	}
	return out
}

// noRoleMessage tells a person whose groups give none of their roles
// which groups would.
func noRoleMessage(have []string, mapping map[string][]string, groups []string) string {
	var would []string
	for _, role := range have {
		for _, g := range mapping[role] {
			would = append(would, g+" ("+role+")")
		}
	}
	in := "none"
	if len(groups) > 0 {
		in = strings.Join(groups, ", ")
	}
	msg := "your identity provider groups (" + in + ") give you none of your console roles (" + strings.Join(have, ", ") + ")"
	if len(would) == 0 {
		return msg + ", and no group is mapped to them: tell the sekisho operator"
	}
	return msg + "; a member of " + strings.Join(would, " or ") + " would have one"
}

// roleList returns p's roles by name.
func (p *person) roleList() []string {
	var out []string
	for _, x := range []struct {
		on   bool
		name string
	}{{p.Admin, RoleAdmin}, {p.Approver, RoleApprover}, {p.Reviewer, RoleReviewer}} {
		if x.on {
			out = append(out, x.name)
		}
	}
	return out
}

// via says how p's browser session was started: "oidc" or "link".
func (p *person) via() string {
	if p.viaOIDC {
		return broker.ViaOIDC
	}
	return "link"
}

// limitTo takes from p the roles not in roles.
func (p *person) limitTo(roles []string) {
	p.Admin = p.Admin && slices.Contains(roles, RoleAdmin)
	p.Approver = p.Approver && slices.Contains(roles, RoleApprover)
	p.Reviewer = p.Reviewer && slices.Contains(roles, RoleReviewer)
}

// checkOIDC returns the person a browser session started by single
// sign-on belongs to now: the technician, not locked, with the roles the
// config gives now among those the sign-in granted; otherwise why not.
// A session of another provider than the configured one (or of none)
// no longer counts.
func (s *Server) checkOIDC(bs broker.ConsoleSession) (*person, string, bool) {
	if s.sso == nil || bs.Issuer != s.sso.cfg.Issuer {
		return nil, "single sign-on through " + bs.Issuer + " is no longer configured", false
	}
	if why, locked := s.cfg.Broker.Locked(bs.Technician); locked {
		return nil, why, false
	}
	p, ok := s.personOf(bs.Technician)
	if !ok {
		return nil, ErrNoConsoleRole.Error(), false
	}
	p.limitTo(bs.Roles)
	if !p.Admin && !p.Approver && !p.Reviewer {
		return nil, "none of the console roles granted at sign-in (" + strings.Join(bs.Roles, ", ") + ") is still given by the config", false
	}
	p.viaOIDC = true
	return p, "", true
}

// oidcRefused audits a refused single sign-on (throttled like every
// refused sign-in: anyone can send a callback) and shows the sign-in
// page with what the person can do.
func (s *Server) oidcRefused(w http.ResponseWriter, r *http.Request, f oidcRefusal) {
	detail := map[string]any{"why": f.why, "via": broker.ViaOIDC, "issuer": s.sso.cfg.Issuer}
	if f.subject != "" {
		detail["subject"] = f.subject
	}
	s.signInRefusedDetail(r, f.technician, detail)
	w.WriteHeader(f.code)
	msg := f.msg
	if len(msg) > 0 && msg[0] >= 'a' && msg[0] <= 'z' {
		msg = strings.ToUpper(msg[:1]) + msg[1:] + "."
	}
	s.render(w, r, "signin.html", nil, map[string]any{"OIDCError": msg})
}

// providerUnreachable answers a sign-on the provider did not let finish
// because it could not be reached.
func (s *Server) providerUnreachable(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("console: the identity provider cannot be reached", "issuer", s.sso.cfg.Issuer, "err", err)
	w.WriteHeader(http.StatusServiceUnavailable)
	s.render(w, r, "error.html", nil, map[string]any{"Code": http.StatusServiceUnavailable, "Message": errProviderUnreachable.Error()})
}

// handleSignedOut is where the provider sends the browser back after
// signing out there.
func (s *Server) handleSignedOut(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "signin.html", nil, map[string]any{"SignedOut": true})
}

// startLimit bounds the single sign-ons a source may start per minute on
// a node: enough for a person, and a few for an office behind one
// address. nodeStartLimit bounds them all on a node, whatever their
// source: each stores a row for oidcLoginTTL, so a node never holds more
// than ten minutes of them (6000), and a prober spread over many
// addresses, or behind a balancer, blocks single sign-on at worst, never
// the store. The link ssh prints still signs in then.
const (
	startLimit     = 30
	nodeStartLimit = 600
)

// startCounter counts sign-ons started in the current minute, per source
// (an IPv6 source by its /48) and in all, in each node's memory.
type startCounter struct {
	mu     sync.Mutex
	minute time.Time
	all    int
	n      map[string]int
}

// allow counts a start from r and reports whether it is within the
// bounds; a balancer's address is counted in all only.
func (c *startCounter) allow(r *http.Request, balancers []netip.Prefix, now time.Time) bool {
	src, balancer := r.RemoteAddr, false
	if ap, err := netip.ParseAddrPort(src); err == nil {
		a := ap.Addr().Unmap()
		src = a.String()
		if a.Is6() {
			p, _ := a.Prefix(48)
			src = p.String()
		}
		for _, b := range balancers {
			balancer = balancer || b.Contains(a)
		}
	}
	m := now.Truncate(time.Minute)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !m.Equal(c.minute) || c.n == nil {
		c.minute, c.all, c.n = m, 0, map[string]int{}
	}
	if c.all >= nodeStartLimit {
		return false
	}
	if !balancer {
		if c.n[src] >= startLimit {
			return false
		}
		c.n[src]++
	}
	c.all++
	return true
}
