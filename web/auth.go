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

// Audit event kinds of the console.
const (
	EventLinkIssued   = "web.link_issued"
	EventSignIn       = "web.sign_in"
	EventSignInFailed = "web.sign_in_refused"
	EventSignOut      = "web.sign_out"
	EventRefused      = "web.refused"
)

// ErrNoConsoleRole is returned for a sign-in link asked for by a
// technician who is neither admin, approver nor reviewer.
var ErrNoConsoleRole = errors.New("the console is for admins, approvers and reviewers; you are none of them")

// link is an unused sign-in link.
type link struct {
	technician string
	key        string // SHA256 fingerprint of the SSH key that asked for it
	seq        uint64 // order of issue: the oldest goes first
	expires    time.Time
}

// browserSession is a signed-in browser, bound to the technician and the
// SSH key whose link made it.
type browserSession struct {
	technician string
	key        string
	seq        uint64 // order of sign-in: the oldest goes first
	csrf       string
	created    time.Time
	seen       time.Time
}

// Caps per technician: unused links (a new one drops the oldest) and
// browser sessions (a new sign-in ends the oldest).
const (
	maxLinksPerTechnician    = 3
	maxSessionsPerTechnician = 5
)

// newToken returns 256 random bits, URL-safe.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenKey is what the server keeps of a token: its hash, so that the
// maps hold nothing a browser could present.
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
		s.audit(context.Background(), EventSignInFailed, technician, "", why)
		if why == ErrNoConsoleRole.Error() {
			return "", time.Time{}, ErrNoConsoleRole
		}
		return "", time.Time{}, errors.New(why)
	}
	tok := newToken()
	now := s.now()
	exp := now.Add(s.cfg.LinkTTL)
	s.mu.Lock()
	var oldest string
	n := 0
	for k, l := range s.links {
		switch {
		case now.After(l.expires):
			delete(s.links, k)
		case l.technician == p.Name:
			n++
			if oldest == "" || l.seq < s.links[oldest].seq {
				oldest = k
			}
		}
	}
	if n >= maxLinksPerTechnician {
		delete(s.links, oldest)
	}
	s.seq++
	s.links[tokenKey(tok)] = link{technician: p.Name, key: keyFingerprint, seq: s.seq, expires: exp}
	s.mu.Unlock()
	s.audit(context.Background(), EventLinkIssued, p.Name, "", broker.JSONDetail(map[string]any{"roles": p.Roles(), "key": keyFingerprint, "expires": exp.UTC()}))
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

// peekLink reports who an unused, unexpired link is for, without using it.
func (s *Server) peekLink(tok string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.links[tokenKey(tok)]
	if !ok || s.now().After(l.expires) {
		return "", false
	}
	return l.technician, true
}

// useLink uses a link up: it works once.
func (s *Server) useLink(tok string) (link, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := tokenKey(tok)
	l, ok := s.links[k]
	delete(s.links, k)
	if !ok || s.now().After(l.expires) {
		return link{}, false
	}
	return l, true
}

// cookieName is the session cookie's name; over TLS the __Host- prefix
// makes browsers refuse it unless it is Secure, host-only and for /.
func (s *Server) cookieName() string {
	if s.secure {
		return "__Host-sekisho"
	}
	return "sekisho"
}

// startSession signs the link's technician in on this browser, ending
// the technician's oldest browser session if they have too many.
func (s *Server) startSession(w http.ResponseWriter, l link) {
	tok := newToken()
	now := s.now()
	s.mu.Lock()
	var oldest string
	n := 0
	for k, bs := range s.sessions {
		switch {
		case s.expired(bs, now):
			delete(s.sessions, k)
		case bs.technician == l.technician:
			n++
			if oldest == "" || bs.seq < s.sessions[oldest].seq {
				oldest = k
			}
		}
	}
	if n >= maxSessionsPerTechnician {
		delete(s.sessions, oldest)
	}
	s.seq++
	s.sessions[tokenKey(tok)] = &browserSession{technician: l.technician, key: l.key, seq: s.seq, csrf: newToken(), created: now, seen: now}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: tok, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL / time.Second)})
}

func (s *Server) expired(bs *browserSession, now time.Time) bool {
	return now.Sub(bs.seen) > s.cfg.IdleTimeout || now.Sub(bs.created) > s.cfg.SessionTTL
}

// session returns the browser session of r, if it has one in force.
func (s *Server) session(r *http.Request) (*browserSession, string, bool) {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return nil, "", false
	}
	k := tokenKey(c.Value)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	bs, ok := s.sessions[k]
	if !ok {
		return nil, "", false
	}
	if s.expired(bs, now) {
		delete(s.sessions, k)
		return nil, "", false
	}
	// A page refreshing itself is not the person at work: an unattended
	// overview still signs out when idle.
	if r.Header.Get(pollHeader) == "" {
		bs.seen = now
	}
	return bs, k, true
}

// pollHeader marks a request a page's script makes by itself.
const pollHeader = "X-Sekisho-Poll"

// inForce reports whether the browser session with key is still signed
// in and unexpired, without counting as activity.
func (s *Server) inForce(key string) (*browserSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs, ok := s.sessions[key]
	if !ok || s.expired(bs, s.now()) {
		return nil, false
	}
	return bs, true
}

// endSession signs the browser out.
func (s *Server) endSession(w http.ResponseWriter, key string) {
	s.mu.Lock()
	delete(s.sessions, key)
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// request is one authenticated request: who, and the CSRF token pages
// put in their forms.
type request struct {
	*http.Request
	p    *person
	csrf string
	key  string
}

// authed wraps a handler that needs a signed-in person. A state-changing
// request must carry the session's CSRF token (form field csrf or header
// X-CSRF-Token) and, if the browser says where it comes from, come from
// the console's own origin.
func (s *Server) authed(api bool, h func(http.ResponseWriter, *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bs, key, ok := s.session(r)
		if !ok {
			s.unauthorized(w, r, api)
			return
		}
		p, why, ok := s.check(bs.technician, bs.key)
		if !ok {
			s.endSession(w, key)
			s.audit(r.Context(), EventRefused, bs.technician, "", "signed out: "+why)
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
			if subtle.ConstantTimeCompare([]byte(got), []byte(bs.csrf)) != 1 {
				s.refuse(w, r, p, api, http.StatusForbidden, "missing or wrong CSRF token: reload the page and try again")
				return
			}
		}
		h(w, &request{Request: r, p: p, csrf: bs.csrf, key: key})
	}
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

// refuse answers a request the person may not make, and audits it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p *person, api bool, code int, msg string) {
	s.audit(r.Context(), EventRefused, p.Name, "", broker.JSONDetail(map[string]string{"method": r.Method, "path": r.URL.Path, "why": msg}))
	if api {
		writeJSONError(w, code, msg)
		return
	}
	w.WriteHeader(code)
	s.render(w, r, "error.html", p, map[string]any{"Code": code, "Message": msg})
}

func (s *Server) audit(ctx context.Context, kind, technician, session, detail string) {
	s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: kind, Technician: technician, Session: session, Detail: detail})
}

// signInWindow is the window in which refused sign-ins from one source
// are audited once, then counted.
const signInWindow = 10 * time.Second

// signInThrottle keeps, per source address, the window of refused
// sign-ins being counted.
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
	detail := map[string]any{"why": why}
	if more > 0 {
		detail["refused_since_last_row"] = more
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: EventSignInFailed, Technician: technician, Source: src, Detail: broker.JSONDetail(detail)})
}

// handleLinkPage shows who a sign-in link is for, with a button that uses
// it: a link preview or a mail scanner fetching the link does not use it
// up.
func (s *Server) handleLinkPage(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	tech, ok := s.peekLink(tok)
	if !ok {
		s.signInRefused(r, "", "unknown, used or expired sign-in link")
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "signin.html", nil, map[string]any{"Expired": true})
		return
	}
	s.render(w, r, "link.html", nil, map[string]any{"Technician": tech, "Token": tok})
}

// handleSignIn uses a sign-in link and starts the browser session.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	if o := r.Header.Get("Origin"); o != "" && o != s.origin && !sameHostOrigin(o, r) {
		s.signInRefused(r, "", "sign-in posted from another site: "+o)
		http.Error(w, "sign-in from another site refused", http.StatusForbidden)
		return
	}
	l, ok := s.useLink(r.PostFormValue("token"))
	if !ok {
		s.signInRefused(r, "", "unknown, used or expired sign-in link")
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "signin.html", nil, map[string]any{"Expired": true})
		return
	}
	p, why, ok := s.check(l.technician, l.key)
	if !ok {
		s.signInRefused(r, l.technician, why)
		w.WriteHeader(http.StatusForbidden)
		s.render(w, r, "signin.html", nil, map[string]any{"NoRole": true})
		return
	}
	if c, err := r.Cookie(s.cookieName()); err == nil {
		s.mu.Lock()
		delete(s.sessions, tokenKey(c.Value)) // a sign-in replaces the browser's earlier one
		s.mu.Unlock()
	}
	s.startSession(w, l)
	s.audit(r.Context(), EventSignIn, p.Name, "", broker.JSONDetail(map[string]string{"roles": p.Roles(), "scope": p.Scope(), "from": r.RemoteAddr}))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleSignOut ends the browser session.
func (s *Server) handleSignOut(w http.ResponseWriter, r *request) {
	s.endSession(w, r.key)
	s.audit(r.Context(), EventSignOut, r.p.Name, "", "")
	w.WriteHeader(http.StatusOK)
	s.render(w, r.Request, "signin.html", nil, map[string]any{"SignedOut": true})
}
