package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/web"
)

// The scenario: kenji (operator-jp) is an admin and approver, mika an
// admin and approver of SG only, sara a reviewer of SG sessions only, rin
// a reviewer of everything, aiko a technician with no console role, li
// (ops-cn) a DBA who asks for JP personal data.
const (
	jpSession = "0b1c6a9e-5d4f-4c39-9a53-1f7f3a0e9a01"
	sgSession = "7e0c3b7a-2f1d-4a8e-8f5e-6b7d2c1e9b02"
)

type fixture struct {
	srv   *web.Server
	ts    *httptest.Server
	store *sqlitestore.Store
	path  string // of the store's file
	brk   *broker.Broker
	clock *clock
	keys  map[string]string // technician: fingerprint of their key

	techs   []*broker.Technician
	targets []*broker.Target
	policy  *broker.Policy
}

// link asks for name's sign-in link with their registered key.
func (f *fixture) link(name string) (string, error) {
	l, _, err := f.srv.SignInLink(name, f.keys[name])
	return l, err
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFixture(t *testing.T, consoleURL string) *fixture {
	t.Helper()
	return newFixtureWith(t, consoleURL, nil)
}

// newFixtureWith is newFixture with edit applied to the console's
// config.
func newFixtureWith(t *testing.T, consoleURL string, edit func(*web.Config)) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	store, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	operatorJP := broker.Affiliate{Name: "operator-jp", Country: "JP"}
	techs := []*broker.Technician{
		{Name: "kenji", Affiliate: operatorJP, Groups: []string{"approvers", "admins"}},
		{Name: "mika", Affiliate: broker.Affiliate{Name: "operator-sg", Country: "SG"}, Groups: []string{"approvers", "admins"}, ReviewResidency: []string{"SG"}},
		{Name: "sara", Affiliate: broker.Affiliate{Name: "operator-sg", Country: "SG"}, Groups: []string{"reviewers"}, ReviewResidency: []string{"SG"}},
		{Name: "rin", Affiliate: operatorJP, Groups: []string{"reviewers"}},
		{Name: "aya", Affiliate: operatorJP, Groups: []string{"approvers"}},
		{Name: "aiko", Affiliate: broker.Affiliate{Name: "ops-jp", Country: "JP"}},
		{Name: "li", Affiliate: broker.Affiliate{Name: "ops-cn", Country: "CN"}, Groups: []string{"dba"}},
	}
	targets := []*broker.Target{
		{Name: "db-jp-01", Address: "10.0.0.1:22", Login: "ops", Residency: "JP", Data: []string{"pii"}},
		{Name: "web-sg-01", Address: "10.0.1.1:22", Login: "ops", Residency: "SG"},
	}
	policy, err := broker.NewPolicy([]broker.Rule{{Name: "pii-needs-approval", Effect: broker.Approval,
		Match:    broker.Match{Targets: []string{"db-jp-01"}},
		Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, OtherAffiliate: true}}})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, tech := range techs {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := ssh.NewPublicKey(pub)
		tech.Keys = []ssh.PublicKey{k}
		keys[tech.Name] = ssh.FingerprintSHA256(k)
	}
	brk := broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Store: store,
		AdminGroups: []string{"admins"}, ReviewerGroups: []string{"reviewers"}, Logger: slog.New(slog.DiscardHandler)})
	c := &clock{t: time.Now()}
	ts := httptest.NewUnstartedServer(nil)
	if consoleURL == "" {
		consoleURL = "http://" + ts.Listener.Addr().String()
	}
	cfg := web.Config{Broker: brk, Store: store, RecordingDir: t.TempDir(), URL: consoleURL,
		Logger: slog.New(slog.DiscardHandler), Now: c.now}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv
	ts.Start()
	t.Cleanup(ts.Close)
	for _, s := range []broker.SessionRecord{
		{ID: jpSession, Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: "203.0.113.9", SourceCountry: "CN",
			Target: "db-jp-01", Residency: "JP", Login: "ops", CrossBorder: true, Rule: "pii-needs-approval", Trace: "{}", StartedAt: c.now().Add(-time.Hour), Recording: jpSession},
		{ID: sgSession, Technician: "aiko", Affiliate: "ops-jp", AffiliateCountry: "JP", Source: "198.51.100.7", SourceCountry: "JP",
			Target: "web-sg-01", Residency: "SG", Login: "ops", CrossBorder: true, Rule: "web", Trace: "{}", StartedAt: c.now().Add(-30 * time.Minute), Recording: sgSession},
	} {
		if err := store.StartSession(t.Context(), &s); err != nil {
			t.Fatal(err)
		}
		if err := store.EndSession(t.Context(), s.ID, broker.SessionEnd{At: s.StartedAt.Add(time.Minute), Reason: "client closed"}); err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{srv: srv, ts: ts, store: store, path: path, brk: brk, clock: c, keys: keys, techs: techs, targets: targets, policy: policy}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see each answer.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
	csrf string
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: f.ts.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// signIn signs name in with a fresh link and keeps the CSRF token.
func (f *fixture) signIn(t *testing.T, name string) *browser {
	t.Helper()
	b := f.browser(t)
	link, err := f.link(name)
	if err != nil {
		t.Fatalf("SignInLink(%s): %v", name, err)
	}
	tok := link[strings.LastIndex(link, "/")+1:]
	if resp, body := b.do("GET", "/login/"+tok, nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "Sign in as <span id=\"link-technician\">"+name) {
		t.Fatalf("GET the link: %d\n%s", resp.StatusCode, body)
	}
	resp, body := b.do("POST", "/login", url.Values{"token": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST /login: %d, want 303\n%s", resp.StatusCode, body)
	}
	_, me := b.do("GET", "/api/me", nil, nil)
	var m struct {
		Technician string `json:"technician"`
		CSRF       string `json:"csrf_token"`
	}
	if err := json.Unmarshal([]byte(me), &m); err != nil || m.Technician != name || m.CSRF == "" {
		t.Fatalf("/api/me after sign-in: %s (%v)", me, err)
	}
	b.csrf = m.CSRF
	return b
}

func audited(t *testing.T, store *sqlitestore.Store, kind broker.EventKind, substr string) bool {
	t.Helper()
	events, err := store.AuditEvents(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Kind == kind && strings.Contains(e.Technician+" "+e.Detail+" "+e.Session, substr) {
			return true
		}
	}
	return false
}

func TestSignInLinkWorksOnceAndExpires(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "kenji")
	if resp, body := b.do("GET", "/", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `<span id="me-name">kenji</span>`) {
		t.Fatalf("overview after sign-in: %d", resp.StatusCode)
	}
	if !audited(t, f.store, broker.EventWebSignIn, "kenji") || !audited(t, f.store, broker.EventWebLinkIssued, "kenji") {
		t.Error("sign-in or link not audited")
	}

	// Used once: a second use, even by the same browser, is refused.
	link, _ := f.link("kenji")
	tok := link[strings.LastIndex(link, "/")+1:]
	other := f.browser(t)
	if resp, _ := other.do("POST", "/login", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: %d", resp.StatusCode)
	}
	third := f.browser(t)
	if resp, body := third.do("POST", "/login", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "unknown, used or expired") {
		t.Errorf("second use of a link: %d, want 401 with an explanation", resp.StatusCode)
	}
	if resp, _ := third.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the refused browser is signed in: %d", resp.StatusCode)
	}
	// Expired after a minute, unused.
	link, _ = f.link("kenji")
	tok = link[strings.LastIndex(link, "/")+1:]
	f.clock.add(61 * time.Second)
	if resp, _ := f.browser(t).do("POST", "/login", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired link: %d, want 401", resp.StatusCode)
	}
	if !audited(t, f.store, broker.EventWebSignInRefused, "expired") {
		t.Error("refused sign-in not audited")
	}
	// A made-up link.
	if resp, _ := f.browser(t).do("GET", "/login/AAAA", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("made-up link: %d, want 401", resp.StatusCode)
	}
}

func TestNoLinkWithoutConsoleRole(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.link("nobody"); err == nil {
		t.Error("SignInLink(nobody) gave a link")
	}
	for _, name := range []string{"aiko", "li"} {
		if _, err := f.link(name); err != web.ErrNoConsoleRole {
			t.Errorf("SignInLink(%s) = %v, want ErrNoConsoleRole", name, err)
		}
	}
	if !audited(t, f.store, broker.EventWebSignInRefused, "aiko") {
		t.Error("refused link not audited")
	}
}

func TestBrowserSessionsExpireAndSignOut(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "rin")
	f.clock.add(29 * time.Minute)
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("after 29 idle minutes: %d, want 200", resp.StatusCode)
	}
	f.clock.add(31 * time.Minute)
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after 31 idle minutes: %d, want 401", resp.StatusCode)
	}
	// Absolute lifetime: active every 20 minutes, out after 8 hours.
	b = f.signIn(t, "rin")
	for range 25 {
		f.clock.add(20 * time.Minute)
		b.do("GET", "/api/me", nil, nil)
	}
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after 8 active hours: %d, want 401", resp.StatusCode)
	}
	b = f.signIn(t, "rin")
	if resp, _ := b.do("POST", "/logout", url.Values{"csrf": {b.csrf}}, nil); resp.StatusCode != 200 {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after signing out: %d, want 401", resp.StatusCode)
	}
}

func TestCookieAttributes(t *testing.T) {
	for _, tc := range []struct {
		url, name string
		secure    bool
	}{{"", "sekisho", false}, {"https://bastion.example.com:8443", "__Host-sekisho", true}} {
		f := newFixture(t, tc.url)
		link, _ := f.link("kenji")
		tok := link[strings.LastIndex(link, "/")+1:]
		if tc.url != "" && !strings.HasPrefix(link, tc.url+"/login/") {
			t.Errorf("link %s does not start with the console URL %s", link, tc.url)
		}
		resp, _ := f.browser(t).do("POST", "/login", url.Values{"token": {tok}}, nil)
		var got *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == tc.name {
				got = c
			}
		}
		if got == nil || !got.HttpOnly || got.SameSite != http.SameSiteStrictMode || got.Secure != tc.secure || got.Path != "/" || got.Domain != "" {
			t.Errorf("console %q: cookie %+v; want %s, HttpOnly, SameSite=Strict, Secure=%v, Path=/", tc.url, got, tc.name, tc.secure)
		}
	}
}

func TestEveryAnswerCarriesTheCSP(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "kenji")
	for _, path := range []string{"/", "/sessions", "/requests", "/locks", "/reports/cross-border", "/api/sessions",
		"/login/x", "/nonexistent", "/assets/app.css", "/sessions/" + jpSession} {
		resp, _ := b.do("GET", path, nil, nil)
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self' 'wasm-unsafe-eval';", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "'unsafe-eval'") {
			t.Errorf("%s: CSP %q allows inline or eval", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
}

func TestEveryPageRenders(t *testing.T) {
	f := newFixture(t, "")
	for _, who := range []string{"kenji", "rin", "sara"} {
		b := f.signIn(t, who)
		for _, path := range []string{"/", "/sessions", "/sessions?q=x&cross_border=yes&from=2026-01-01", "/requests", "/locks",
			"/reports/cross-border", "/sessions/" + sgSession, "/sessions/" + sgSession + "/live", "/api/overview", "/api/sessions/" + sgSession} {
			if resp, body := b.do("GET", path, nil, nil); resp.StatusCode != 200 {
				t.Errorf("%s GET %s: %d\n%s", who, path, resp.StatusCode, body)
			}
		}
	}
	b := f.signIn(t, "kenji")
	for path, want := range map[string]string{"/sessions?from=yesterday": "not a date", "/sessions?cross_border=maybe": "not yes or no",
		"/reports/cross-border?from=2026-02-01&to=2026-01-01": "must not come after", "/sessions/not-a-session": "no session"} {
		resp, body := b.do("GET", path, nil, nil)
		if resp.StatusCode < 400 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d; want an error saying %q", path, resp.StatusCode, want)
		}
	}
}

func TestStateChangesNeedCSRFTokenAndSameOrigin(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "kenji")
	form := url.Values{"kind": {"affiliate"}, "name": {"ops-cn"}, "reason": {"INC-7 freeze during the audit"}}
	if resp, body := b.do("POST", "/locks", form, nil); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Errorf("lock without a CSRF token: %d, want 403", resp.StatusCode)
	}
	form.Set("csrf", "wrong")
	if resp, _ := b.do("POST", "/locks", form, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("lock with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	form.Set("csrf", b.csrf)
	if resp, _ := b.do("POST", "/locks", form, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("lock from another origin: %d, want 403", resp.StatusCode)
	}
	if locks, _ := f.store.Locks(t.Context(), time.Now()); len(locks) != 0 {
		t.Fatalf("a refused request locked: %+v", locks)
	}
	if !audited(t, f.store, broker.EventWebRefused, "CSRF") {
		t.Error("CSRF refusal not audited")
	}
	if resp, _ := b.do("POST", "/locks", form, map[string]string{"Origin": f.ts.URL}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("lock with the token, same origin: %d, want 303", resp.StatusCode)
	}
	locks, _ := f.store.Locks(t.Context(), time.Now())
	if len(locks) != 1 || locks[0].Name != "ops-cn" || locks[0].By != "kenji" {
		t.Fatalf("locks: %+v", locks)
	}
	// The API takes the token in a header; DELETE lifts the lock.
	if resp, _ := b.do("DELETE", "/api/locks/1?reason=audit+done", nil, map[string]string{"X-CSRF-Token": b.csrf}); resp.StatusCode != 200 {
		t.Fatalf("DELETE /api/locks/1: %d", resp.StatusCode)
	}
	if locks, _ := f.store.Locks(t.Context(), time.Now()); len(locks) != 0 {
		t.Fatalf("lock not removed: %+v", locks)
	}
	// A reviewer may not lock.
	r := f.signIn(t, "rin")
	if resp, _ := r.do("POST", "/api/locks", form, map[string]string{"X-CSRF-Token": r.csrf}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("reviewer locking: %d, want 403", resp.StatusCode)
	}
}

func TestReviewerScopeHidesOtherResidencies(t *testing.T) {
	f := newFixture(t, "")
	sara := f.signIn(t, "sara")
	_, body := sara.do("GET", "/api/sessions", nil, nil)
	var list struct {
		Sessions []struct {
			ID string `json:"id"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Sessions) != 1 || list.Sessions[0].ID != sgSession {
		t.Fatalf("sara's sessions: %s", body)
	}
	for _, path := range []string{"/sessions/" + jpSession, "/api/sessions/" + jpSession, "/api/sessions/" + jpSession + "/cast",
		"/api/sessions/" + jpSession + "/timeline", "/sessions/" + jpSession + "/live", "/api/sessions/" + jpSession + "/live"} {
		resp, body := sara.do("GET", path, nil, nil)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "db-jp-01") {
			t.Errorf("sara GET %s: %d (body names the target: %v); want 404 revealing nothing", path, resp.StatusCode, strings.Contains(body, "db-jp-01"))
		}
	}
	if resp, _ := sara.do("GET", "/api/sessions/"+sgSession, nil, nil); resp.StatusCode != 200 {
		t.Errorf("sara GET her SG session: %d", resp.StatusCode)
	}
	if !audited(t, f.store, broker.EventRefused, "of residency JP is outside the reviewer's residencies (SG)") {
		t.Error("out-of-scope access not audited with why")
	}
	_, rep := sara.do("GET", "/reports/cross-border.csv", nil, nil)
	if strings.Contains(rep, jpSession) || !strings.Contains(rep, sgSession) {
		t.Errorf("sara's report:\n%s", rep)
	}
	rin := f.signIn(t, "rin")
	if resp, _ := rin.do("GET", "/api/sessions/"+jpSession, nil, nil); resp.StatusCode != 200 {
		t.Errorf("rin (all residencies) GET the JP session: %d", resp.StatusCode)
	}
	// Without a browser session, and with one of a person who is no
	// reviewer, nothing of a recording is served either.
	anon := f.browser(t)
	for _, path := range []string{"/api/sessions/" + sgSession, "/api/sessions/" + sgSession + "/cast", "/api/sessions/" + sgSession + "/live", "/sessions/" + sgSession} {
		if resp, body := anon.do("GET", path, nil, nil); resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "web-sg-01") {
			t.Errorf("anonymous GET %s: %d, want 401", path, resp.StatusCode)
		}
	}
	aya := f.signIn(t, "aya") // an approver, no reviewer
	for _, path := range []string{"/api/sessions", "/api/sessions/" + sgSession, "/api/sessions/" + sgSession + "/cast"} {
		if resp, _ := aya.do("GET", path, nil, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("approver GET %s: %d, want 403", path, resp.StatusCode)
		}
	}
	hardening.Report(t, "13", "every console path to a recording (page, API, cast, timeline, live) refused without a browser session (401), an approver who is no reviewer gets 403, and, "+
		"for a reviewer limited to SG, a JP session answers 404 on all 6 paths, revealing nothing; the refusal is audited")
}

func TestUntrustedTextIsInertInPages(t *testing.T) {
	f := newFixture(t, "")
	const payload = `<img src=x onerror=alert(1)><script>alert(2)</script><a href="javascript:alert(3)">x</a>`
	req, _, err := f.brk.RequestAccess(t.Context(), "li", "db-jp-01", "203.0.113.9", "INC-1 "+payload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := f.signIn(t, "kenji")
	for _, path := range []string{"/requests", "/"} {
		_, body := b.do("GET", path, nil, nil)
		if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;") {
			t.Errorf("%s does not show the reason as text", path)
		}
		if regexp.MustCompile(`<img src=x|<script>alert|href="javascript:`).MatchString(body) {
			t.Errorf("%s carries the payload as markup", path)
		}
	}
	// The same rules as over SSH: li may not approve his own request.
	l := f.signIn(t, "kenji")
	if resp, _ := l.do("POST", "/api/requests/1/deny", url.Values{}, map[string]string{"X-CSRF-Token": l.csrf}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("deny without a reason: %d, want 400", resp.StatusCode)
	}
	resp, body := l.do("POST", "/api/requests/1/approve", url.Values{"comment": {"ok " + payload}}, map[string]string{"X-CSRF-Token": l.csrf})
	if resp.StatusCode != 200 || !strings.Contains(body, `"state": "approved"`) {
		t.Fatalf("approve request %d: %d %s", req.ID, resp.StatusCode, body)
	}
	_, page := l.do("GET", "/requests", nil, nil)
	if !strings.Contains(page, "approved by kenji (<span class=\"reason\">ok &lt;img src=x") || regexp.MustCompile(`<img src=x|<script>alert`).MatchString(page) {
		t.Errorf("the approval's comment is not shown as text on /requests")
	}
}

func TestLockedPeopleAreSignedOut(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "rin")
	if _, err := f.store.AddLock(t.Context(), broker.Lock{Kind: broker.LockAffiliate, Name: "operator-jp", Reason: "INC-3 audit", By: "ops", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.brk.RefreshLocks(t.Context()); err != nil {
		t.Fatal(err)
	}
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("locked rin's browser: %d, want 401", resp.StatusCode)
	}
	if !audited(t, f.store, broker.EventWebRefused, "INC-3 audit") {
		t.Error("signing out a locked person not audited with the lock")
	}
	if _, err := f.link("kenji"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("SignInLink for locked kenji: %v, want a refusal naming the lock", err)
	}
	if _, err := f.link("sara"); err != nil {
		t.Errorf("SignInLink for sara of another affiliate: %v", err)
	}
}

func TestRemovingTheKeyEndsBrowserSessions(t *testing.T) {
	f := newFixture(t, "")
	b := f.signIn(t, "kenji")
	other := f.signIn(t, "rin")
	// The operator replaces kenji's key (a stolen laptop) and reloads.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	k, _ := ssh.NewPublicKey(pub)
	var techs []*broker.Technician
	for _, tech := range f.techs {
		c := *tech
		if c.Name == "kenji" {
			c.Keys = []ssh.PublicKey{k}
		}
		techs = append(techs, &c)
	}
	f.brk.Replace(techs, f.targets, f.policy, nil)
	if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("kenji's browser after his key was replaced: %d, want 401", resp.StatusCode)
	}
	if !audited(t, f.store, broker.EventWebRefused, "is not registered for kenji") {
		t.Error("signing out for a removed key not audited")
	}
	if resp, _ := other.do("GET", "/api/me", nil, nil); resp.StatusCode != 200 {
		t.Errorf("rin's browser: %d, want 200", resp.StatusCode)
	}
	if _, err := f.link("kenji"); err == nil {
		t.Error("a link for kenji's old key")
	}
}

func TestLinksAndSessionsPerPersonAreCapped(t *testing.T) {
	f := newFixture(t, "")
	var links []string
	for range 4 {
		l, err := f.link("rin")
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l[strings.LastIndex(l, "/")+1:])
	}
	// The oldest of four unused links was dropped.
	if resp, _ := f.browser(t).do("POST", "/login", url.Values{"token": {links[0]}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the oldest of 4 links: %d, want 401", resp.StatusCode)
	}
	if resp, _ := f.browser(t).do("POST", "/login", url.Values{"token": {links[3]}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the newest link: %d, want 303", resp.StatusCode)
	}
	var bs []*browser
	for range 6 {
		f.clock.add(time.Second)
		bs = append(bs, f.signIn(t, "sara"))
	}
	if resp, _ := bs[0].do("GET", "/api/me", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the oldest of 6 browser sessions: %d, want 401", resp.StatusCode)
	}
	for i, b := range bs[1:] {
		if resp, _ := b.do("GET", "/api/me", nil, nil); resp.StatusCode != 200 {
			t.Errorf("browser session %d of 6: %d, want 200", i+2, resp.StatusCode)
		}
	}
}

func TestRefusedSignInsAreAuditedOncePerWindow(t *testing.T) {
	f := newFixture(t, "")
	b := f.browser(t)
	for range 500 {
		if resp, _ := b.do("POST", "/login", url.Values{"token": {"made-up"}}, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a made-up token: %d", resp.StatusCode)
		}
	}
	f.clock.add(11 * time.Second)
	b.do("GET", "/login/made-up-too", nil, nil)
	events, _ := f.store.AuditEvents(t.Context(), 10000)
	var rows []broker.AuditEvent
	for _, e := range events {
		if e.Kind == broker.EventWebSignInRefused {
			rows = append(rows, e)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("%d audit rows for 501 refused sign-ins from one address, want 2 (one per window)", len(rows))
	}
	if !slices.ContainsFunc(rows, func(e broker.AuditEvent) bool {
		return strings.Contains(e.Detail, `"refused_since_last_row":499`) && e.Source == "127.0.0.1"
	}) {
		t.Errorf("no row counts the 499 refusals after the first, from 127.0.0.1: %+v", rows)
	}
}

func TestRequestsAndLocksFollowTheScope(t *testing.T) {
	f := newFixture(t, "")
	if _, _, err := f.brk.RequestAccess(t.Context(), "li", "db-jp-01", "203.0.113.9", "INC-11 rotate the replication password", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.AddLock(t.Context(), broker.Lock{Kind: broker.LockTarget, Name: "db-jp-01", Reason: "INC-12 migration", By: "ops", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	pending := func(who string) int {
		_, body := f.signIn(t, who).do("GET", "/api/requests", nil, nil)
		var a struct {
			Pending []any `json:"pending"`
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatal(err)
		}
		return len(a.Pending)
	}
	for who, want := range map[string]int{"kenji": 1, "aya": 1, "rin": 1, "sara": 0} {
		if got := pending(who); got != want {
			t.Errorf("%s sees %d pending requests, want %d", who, got, want)
		}
	}
	_, body := f.signIn(t, "sara").do("GET", "/api/locks", nil, nil)
	if strings.Contains(body, "db-jp-01") || strings.Contains(body, "INC-12") {
		t.Errorf("sara (SG only) sees the JP target or its lock: %s", body)
	}
	_, body = f.signIn(t, "kenji").do("GET", "/api/locks", nil, nil)
	if !strings.Contains(body, "INC-12") || !strings.Contains(body, `"technicians": [`) {
		t.Errorf("kenji (admin) does not see the lock and the directory: %s", body)
	}
}

// The overview refreshes its live part from /overview/live: the part
// alone, in the person's scope; and its polling is not activity, so an
// unattended overview still signs out when idle.
func TestOverviewRefreshPart(t *testing.T) {
	f := newFixture(t, "")
	live := broker.SessionRecord{ID: "9b2f6c1e-1d7a-4a53-9d0e-2b8f1c3a4d5e", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN",
		Source: "203.0.113.9", SourceCountry: "CN", Target: "db-jp-01", Residency: "JP", Login: "ops", CrossBorder: true,
		Rule: "pii-needs-approval", Trace: "{}", StartedAt: f.clock.now(), Recording: "9b2f6c1e-1d7a-4a53-9d0e-2b8f1c3a4d5e"}
	if err := f.store.StartSession(t.Context(), &live); err != nil {
		t.Fatal(err)
	}
	rin := f.signIn(t, "rin")
	resp, body := rin.do("GET", "/overview/live", nil, map[string]string{"X-Sekisho-Poll": "1"})
	if resp.StatusCode != 200 || strings.Contains(body, "<html") || !strings.Contains(body, `data-session="`+live.ID+`"`) ||
		!strings.Contains(body, `class="cross-border"`) {
		t.Fatalf("rin's overview part: %d\n%s", resp.StatusCode, body)
	}
	sara := f.signIn(t, "sara")
	if _, body := sara.do("GET", "/overview/live", nil, nil); strings.Contains(body, live.ID) || strings.Contains(body, "db-jp-01") {
		t.Errorf("sara (SG only) sees the JP live session in the overview part:\n%s", body)
	}

	f.clock.add(20 * time.Minute)
	if resp, _ := rin.do("GET", "/overview/live", nil, map[string]string{"X-Sekisho-Poll": "1"}); resp.StatusCode != 200 {
		t.Fatalf("polling after 20 idle minutes: %d", resp.StatusCode)
	}
	f.clock.add(11 * time.Minute)
	if resp, _ := rin.do("GET", "/overview/live", nil, map[string]string{"X-Sekisho-Poll": "1"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("polling only, 31 minutes after the last click: %d, want 401 (idle)", resp.StatusCode)
	}
}
