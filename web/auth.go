package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// ErrNoConsoleRole is returned for a sign-in link asked for by a
// technician who is neither admin, approver nor reviewer.
var ErrNoConsoleRole = errors.New("the console is for admins, approvers and reviewers; you are none of them")

// errLinkNotStored is what a technician sees when the state store does
// not take their sign-in link; the log has why.
var errLinkNotStored = errors.New("the sign-in link could not be stored; try again in a moment, or tell the sekisho operator")

// Caps per technician: unused links (a new one drops the oldest) and
// browser sessions (a new sign-in ends the oldest).
const (
	maxLinksPerTechnician    = 3
	maxSessionsPerTechnician = 5
)

// touchEvery is how stale a browser session's stored "seen" may be
// before a request writes it again. A write on every request would put a
// write to the shared store on every page, script and poll; so a
// session may sign out for idleness up to touchEvery sooner than
// IdleTimeout after the last click, a difference nobody notices.
const touchEvery = 5 * time.Second

// storeTimeout bounds a call to the store made outside a request.
const storeTimeout = 10 * time.Second

// newToken returns 256 random bits, URL-safe.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenKey is what the server keeps of a token: its hash, so that the
// store holds nothing a browser could present.
func tokenKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// SignInLink returns a one-time link that signs technician in to the
// console, valid for LinkTTL, bound to the SSH key (its SHA256
// fingerprint) that asked for it. It is what `ssh … login` prints.
func (s *Server) SignInLink(technician, keyFingerprint string) (string, time.Time, error) {
	p, why, ok := s.check(technician, keyFingerprint)
	if !ok {
		s.audit(context.Background(), broker.EventWebSignInRefused, technician, "", why)
		if why == ErrNoConsoleRole.Error() {
			return "", time.Time{}, ErrNoConsoleRole
		}
		return "", time.Time{}, errors.New(why)
	}
	tok := newToken()
	now := s.now()
	exp := now.Add(s.cfg.LinkTTL)
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	l := broker.ConsoleLink{TokenHash: tokenKey(tok), Technician: p.Name, KeyFingerprint: keyFingerprint, Created: now, Expires: exp}
	if err := s.cfg.Store.PutConsoleLink(ctx, l, maxLinksPerTechnician, now); err != nil {
		s.log.Error("console sign-in link", "technician", p.Name, "err", err)
		return "", time.Time{}, errLinkNotStored
	}
	s.audit(ctx, broker.EventWebLinkIssued, p.Name, "", broker.JSONDetail(map[string]any{"roles": p.Roles(), "key": keyFingerprint, "expires": exp.UTC()}))
	return s.origin + "/login/" + tok, exp, nil
}

// check returns the person technician is now, if the SSH key keyFingerprint
// is still registered for them, they are not locked, and they have a
// console role; otherwise why not.
func (s *Server) check(technician, keyFingerprint string) (*person, string, bool) {
	if !s.cfg.Broker.HasKeyFingerprint(technician, keyFingerprint) {
		return nil, "the SSH key " + keyFingerprint + " is not registered for " + technician + " (any more)", false
	}
	if why, locked := s.cfg.Broker.Locked(technician); locked {
		return nil, why, false
	}
	p, ok := s.personOf(technician)
	if !ok {
		return nil, ErrNoConsoleRole.Error(), false
	}
	return p, "", true
}

// peekLink returns the unused, unexpired link tok, without using it;
// broker.ErrNotFound if there is none.
func (s *Server) peekLink(ctx context.Context, tok string) (broker.ConsoleLink, error) {
	return s.cfg.Store.PeekConsoleLink(ctx, tokenKey(tok), s.now())
}

// useLink uses a link up: it works once, on whichever node.
func (s *Server) useLink(ctx context.Context, tok string) (broker.ConsoleLink, error) {
	return s.cfg.Store.TakeConsoleLink(ctx, tokenKey(tok), s.now())
}

// cookieName is the session cookie's name; over TLS the __Host- prefix
// makes browsers refuse it unless it is Secure, host-only and for /.
func (s *Server) cookieName() string {
	if s.secure {
		return "__Host-sekisho"
	}
	return "sekisho"
}

// startSession signs bs's technician in on this browser (bs says how:
// the link's key, or the single sign-on's account and roles), ending the
// technician's oldest browser session if they have too many.
func (s *Server) startSession(ctx context.Context, w http.ResponseWriter, bs broker.ConsoleSession) error {
	tok := newToken()
	now := s.now()
	bs.TokenHash, bs.CSRF = tokenKey(tok), newToken()
	bs.Created, bs.Seen, bs.IdleTimeout, bs.Expires = now, now, s.cfg.IdleTimeout, now.Add(s.cfg.SessionTTL)
	if err := s.cfg.Store.PutConsoleSession(ctx, bs, maxSessionsPerTechnician, now); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: tok, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL / time.Second)})
	return nil
}

// session returns the browser session of r and its key, if it has one
// in force; an error only if the store failed.
func (s *Server) session(r *http.Request) (broker.ConsoleSession, string, bool, error) {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return broker.ConsoleSession{}, "", false, nil
	}
	k := tokenKey(c.Value)
	now := s.now()
	bs, ok, err := s.inForce(r.Context(), k)
	if !ok || err != nil {
		return bs, "", false, err
	}
	// A page refreshing itself is not the person at work: an unattended
	// overview still signs out when idle. See touchEvery for why a
	// request within a few seconds of the last written one writes
	// nothing.
	if r.Header.Get(pollHeader) == "" && now.Sub(bs.Seen) >= touchEvery {
		if err := s.cfg.Store.TouchConsoleSession(r.Context(), k, now); err != nil {
			// The request is served; the session's idle end is where the
			// last touch put it.
			s.log.Warn("console session activity not stored", "technician", bs.Technician, "err", err)
		}
		bs.Seen = now
	}
	return bs, k, true, nil
}

// pollHeader marks a request a page's script makes by itself.
const pollHeader = "X-Sekisho-Poll"

// inForce reports whether the browser session with key is still signed
// in and unexpired, without counting as activity; one found expired is
// deleted.
func (s *Server) inForce(ctx context.Context, key string) (broker.ConsoleSession, bool, error) {
	bs, err := s.cfg.Store.ConsoleSession(ctx, key)
	if errors.Is(err, broker.ErrNotFound) {
		return broker.ConsoleSession{}, false, nil
	}
	if err != nil {
		return broker.ConsoleSession{}, false, err
	}
	if !bs.InForce(s.now()) {
		if err := s.cfg.Store.DeleteConsoleSession(ctx, key); err != nil {
			s.log.Warn("expired console session not deleted", "technician", bs.Technician, "err", err)
		}
		return broker.ConsoleSession{}, false, nil
	}
	return bs, true, nil
}

// endSession signs the browser out, on every node. The cookie is
// cleared even if the store fails; the error says the session may
// still be in force elsewhere.
func (s *Server) endSession(ctx context.Context, w http.ResponseWriter, key string) error {
	err := s.cfg.Store.DeleteConsoleSession(ctx, key)
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	return err
}

// request is one authenticated request: who, and the CSRF token pages
// put in their forms.
type request struct {
	*http.Request
	p    *person
	csrf string
	key  string
	bs   broker.ConsoleSession
}

// authed wraps a handler that needs a signed-in person. A state-changing
// request must carry the session's CSRF token (form field csrf or header
// X-CSRF-Token) and, if the browser says where it comes from, come from
// the console's own origin.
func (s *Server) authed(api bool, h func(http.ResponseWriter, *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bs, key, ok, err := s.session(r)
		if err != nil {
			s.storeFailed(w, r, api, err)
			return
		}
		if !ok {
			s.unauthorized(w, r, api)
			return
		}
		p, why, ok := s.checkSession(bs)
		if !ok {
			if err := s.endSession(r.Context(), w, key); err != nil {
				s.log.Error("console sign-out", "technician", bs.Technician, "err", err)
			}
			s.audit(r.Context(), broker.EventWebRefused, bs.Technician, "", "signed out: "+why)
			s.unauthorized(w, r, api)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if o := r.Header.Get("Origin"); o != "" && o != s.origin && !sameHostOrigin(o, r) {
				s.refuse(w, r, p, api, http.StatusForbidden, "request from another site ("+o+") refused")
				return
			}
			got := r.Header.Get("X-CSRF-Token")
			if got == "" {
				got = r.PostFormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(bs.CSRF)) != 1 {
				s.refuse(w, r, p, api, http.StatusForbidden, "missing or wrong CSRF token: reload the page and try again")
				return
			}
		}
		h(w, &request{Request: r, p: p, csrf: bs.CSRF, key: key, bs: bs})
	}
}

// checkSession returns the person browser session bs belongs to now, if
// it still counts: one started by a link while the key that asked for
// it is registered, one started by single sign-on within the roles it
// granted; neither when locked or without a console role left.
func (s *Server) checkSession(bs broker.ConsoleSession) (*person, string, bool) {
	if bs.Via == broker.ViaOIDC {
		return s.checkOIDC(bs)
	}
	return s.check(bs.Technician, bs.KeyFingerprint)
}

// sameHostOrigin accepts an Origin naming the host the request was sent
// to, so that a console reached by another name than its configured URL
// (a port forward) still works; another site's origin never matches.
func sameHostOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host && (u.Scheme == "http" || u.Scheme == "https")
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, api bool) {
	if api {
		writeJSONError(w, http.StatusUnauthorized, "not signed in: run `ssh -p PORT NAME@BASTION login` and open the link it prints")
		return
	}
	w.WriteHeader(http.StatusUnauthorized)
	s.render(w, r, "signin.html", nil, map[string]any{"Next": strings.TrimPrefix(r.URL.Path, "/")})
}

// storeFailed answers a request the console cannot serve because the
// state store, which holds who is signed in, did not answer.
func (s *Server) storeFailed(w http.ResponseWriter, r *http.Request, api bool, err error) {
	s.log.Error("console: the state store failed", "path", r.URL.Path, "err", err)
	const msg = "the console cannot reach its state store; try again in a moment, or tell the sekisho operator"
	if api {
		writeJSONError(w, http.StatusServiceUnavailable, msg)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	s.render(w, r, "error.html", nil, map[string]any{"Code": http.StatusServiceUnavailable, "Message": msg})
}

// refuse answers a request the person may not make, and audits it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p *person, api bool, code int, msg string) {
	s.audit(r.Context(), broker.EventWebRefused, p.Name, "", broker.JSONDetail(map[string]string{"method": r.Method, "path": r.URL.Path, "why": msg}))
	if api {
		writeJSONError(w, code, msg)
		return
	}
	w.WriteHeader(code)
	s.render(w, r, "error.html", p, map[string]any{"Code": code, "Message": msg})
}

func (s *Server) audit(ctx context.Context, kind broker.EventKind, technician, session, detail string) {
	s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: kind, Technician: technician, Session: session, Detail: detail})
}

// signInWindow is the window in which refused sign-ins from one source
// are audited once, then counted.
const signInWindow = 10 * time.Second

// signInThrottle keeps, per source address, the window of refused
// sign-ins being counted. It stays in each node's memory: it bounds the
// audit rows a prober makes, not the prober's chances (a link's token is
// 256 random bits), so several nodes only make a row per node per window.
type signInThrottle struct {
	mu sync.Mutex
	m  map[string]*refusedWindow
}

type refusedWindow struct {
	start time.Time
	more  int // refusals after the audited first one
}

// signInRefused audits a refused sign-in (an unknown, used or expired
// link, a post from another site, a person no longer allowed). Anyone can
// send those, so a source gets one audit row per signInWindow, and the
// next row says how many more there were: probing cannot flood the audit
// log or the register it shares with sessions.
func (s *Server) signInRefused(r *http.Request, technician, why string) {
	s.signInRefusedDetail(r, technician, map[string]any{"why": why})
}

// signInRefusedDetail is signInRefused with more than why in the audit
// row's detail.
func (s *Server) signInRefusedDetail(r *http.Request, technician string, detail map[string]any) {
	src := r.RemoteAddr
	if host, _, err := net.SplitHostPort(src); err == nil {
		src = host
	}
	now := s.now()
	t := &s.throttle
	t.mu.Lock()
	if t.m == nil || len(t.m) > 10000 {
		t.m = map[string]*refusedWindow{} // bounded: forgetting only loses counts
	}
	w, ok := t.m[src]
	if ok && now.Sub(w.start) < signInWindow {
		w.more++
		t.mu.Unlock()
		return
	}
	more := 0
	if ok {
		more = w.more
	}
	t.m[src] = &refusedWindow{start: now}
	t.mu.Unlock()
	if more > 0 {
		detail["refused_since_last_row"] = more
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventWebSignInRefused, Technician: technician, Source: src, Detail: broker.JSONDetail(detail)})
}

// handleLinkPage shows who a sign-in link is for, with a button that uses
// it: a link preview or a mail scanner fetching the link does not use it
// up.
func (s *Server) handleLinkPage(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	l, err := s.peekLink(r.Context(), tok)
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		s.storeFailed(w, r, false, err)
		return
	}
	if err != nil {
		s.signInRefused(r, "", "unknown, used or expired sign-in link")
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "signin.html", nil, map[string]any{"Expired": true})
		return
	}
	s.render(w, r, "link.html", nil, map[string]any{"Technician": l.Technician, "Token": tok})
}

// handleSignIn uses a sign-in link and starts the browser session.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && o != s.origin && !sameHostOrigin(o, r) {
		s.signInRefused(r, "", "sign-in posted from another site: "+o)
		http.Error(w, "sign-in from another site refused", http.StatusForbidden)
		return
	}
	l, err := s.useLink(r.Context(), r.PostFormValue("token"))
	if err != nil && !errors.Is(err, broker.ErrNotFound) {
		s.storeFailed(w, r, false, err)
		return
	}
	if err != nil {
		s.signInRefused(r, "", "unknown, used or expired sign-in link")
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "signin.html", nil, map[string]any{"Expired": true})
		return
	}
	p, why, ok := s.check(l.Technician, l.KeyFingerprint)
	if !ok {
		s.signInRefused(r, l.Technician, why)
		w.WriteHeader(http.StatusForbidden)
		s.render(w, r, "signin.html", nil, map[string]any{"NoRole": true})
		return
	}
	if c, err := r.Cookie(s.cookieName()); err == nil {
		// A sign-in replaces the browser's earlier one.
		if err := s.cfg.Store.DeleteConsoleSession(r.Context(), tokenKey(c.Value)); err != nil {
			s.storeFailed(w, r, false, err)
			return
		}
	}
	if err := s.startSession(r.Context(), w, broker.ConsoleSession{Technician: l.Technician, KeyFingerprint: l.KeyFingerprint}); err != nil {
		s.storeFailed(w, r, false, err)
		return
	}
	s.audit(r.Context(), broker.EventWebSignIn, p.Name, "", broker.JSONDetail(map[string]string{"roles": p.Roles(), "scope": p.Scope(), "from": r.RemoteAddr}))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleSignOut ends the browser session, on every node. A session
// started by single sign-on goes on to sign out at the provider too
// (RP-initiated logout), when the provider offers it.
func (s *Server) handleSignOut(w http.ResponseWriter, r *request) {
	if err := s.endSession(r.Context(), w, r.key); err != nil {
		s.storeFailed(w, r.Request, false, err)
		return
	}
	if r.bs.Via == broker.ViaOIDC {
		end := s.sso.endSessionURL(r.Context(), r.bs.IDToken)
		s.audit(r.Context(), broker.EventWebSignOut, r.p.Name, "", broker.JSONDetail(map[string]any{"via": broker.ViaOIDC,
			"issuer": r.bs.Issuer, "subject": r.bs.Subject, "at_provider": end != ""}))
		if end != "" {
			// A page that moves on, not a redirect: the console's CSP
			// (form-action 'self') stops a form whose answer redirects to
			// another site.
			s.render(w, r.Request, "leaving.html", nil, map[string]any{"URL": end})
			return
		}
		w.WriteHeader(http.StatusOK)
		s.render(w, r.Request, "signin.html", nil, map[string]any{"SignedOut": true})
		return
	}
	s.audit(r.Context(), broker.EventWebSignOut, r.p.Name, "", "")
	w.WriteHeader(http.StatusOK)
	s.render(w, r.Request, "signin.html", nil, map[string]any{"SignedOut": true})
}
