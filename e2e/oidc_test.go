package e2e

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/webdriver"
)

// The console's single sign-on, against a real OpenID provider
// (bin/oidcprovider: zitadel/oidc's op package) and a real headless
// Chromium: the person signs in at the provider's own login page. What
// is asserted is what the person sees and what the audit log says.

// idpUser is a user of the test provider.
type idpUser struct {
	ID       string         `json:"id"`
	Username string         `json:"username"`
	Password string         `json:"password"`
	Groups   []string       `json:"groups,omitempty"`
	Claims   map[string]any `json:"claims,omitempty"`
}

// idpUsers are the provider's accounts. The claim sekisho_technician
// names the sekisho technician; the groups map to console roles as
// withOIDC configures.
var idpUsers = []idpUser{
	{ID: "u-kenji", Username: "kenji", Groups: []string{"sec-admins", "jp-approvers", "staff"},
		Claims: map[string]any{"sekisho_technician": "kenji"}},
	// kenji's second account, in the admin group only: sekisho's config
	// makes kenji an approver too, the provider does not.
	{ID: "u-kenji-ops", Username: "kenji-ops", Groups: []string{"sec-admins"},
		Claims: map[string]any{"sekisho_technician": "kenji"}},
	// sara reviews by sekisho's config, but is not in the review group.
	{ID: "u-sara", Username: "sara", Groups: []string{"staff"}, Claims: map[string]any{"sekisho_technician": "sara"}},
	{ID: "u-mallory", Username: "mallory", Groups: []string{"sec-admins"}, Claims: map[string]any{"sekisho_technician": "mallory"}},
}

// idp is a running test provider.
type idp struct {
	issuer     string
	secretFile string
	out        *syncBuffer
}

// startIDP starts the provider with idpUsers and a client whose callback
// is the console on consolePort; flags add fault injection.
func startIDP(t *testing.T, consolePort string, flags ...string) *idp {
	t.Helper()
	dir := t.TempDir()
	users := make([]idpUser, len(idpUsers))
	for i, u := range idpUsers {
		u.Password = "pw-" + u.Username
		users[i] = u
	}
	b, _ := json.Marshal(users)
	p := &idp{secretFile: filepath.Join(dir, "client-secret"), out: &syncBuffer{}}
	if err := os.WriteFile(filepath.Join(dir, "users.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.secretFile, []byte(rand.Text()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	console := "http://127.0.0.1:" + consolePort
	args := append([]string{"-listen", "127.0.0.1:" + freePort(t), "-users", filepath.Join(dir, "users.json"),
		"-client-id", "sekisho", "-client-secret-file", p.secretFile,
		"-redirect-uri", console + "/oidc/callback", "-post-logout-uri", console + "/signed-out"}, flags...)
	cmd := exec.Command(filepath.Join(env.root, "bin", "oidcprovider"), args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bin/oidcprovider (make build builds it): %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("provider output:\n%s", tail(p.out.String(), 30))
		}
	})
	ready := regexp.MustCompile(`oidcprovider ready (\S+)`)
	waitUntil(t, 30*time.Second, "the OpenID provider to serve", func() bool {
		select {
		case <-exited:
			t.Fatalf("the OpenID provider exited:\n%s", p.out.String())
		default:
		}
		m := ready.FindStringSubmatch(p.out.String())
		if m != nil {
			p.issuer = m[1]
		}
		return m != nil
	})
	return p
}

// withOIDC is a variant's config edit that gives it a console on port
// with single sign-on through issuer.
func withOIDC(port, issuer, secretFile string, edit func(string) string) func(string) string {
	web := withWeb(port, edit)
	return func(cfg string) string {
		return web(cfg) + "  oidc:\n    name: Test IdP\n    issuer: " + issuer + "\n    client_id: sekisho\n    client_secret_file: " + secretFile +
			"\n    technician_claim: sekisho_technician\n    roles:\n      admin: [sec-admins]\n      approver: [jp-approvers]\n      reviewer: [sec-review]\n"
	}
}

// oidcVariant starts a provider (with flags) and a variant with an
// approval rule (kenji is admin and approver there) whose console signs
// in through it.
func oidcVariant(t *testing.T, flags ...string) (*variant, console, *idp) {
	t.Helper()
	port := freePort(t)
	p := startIDP(t, port, flags...)
	v := approvalVariant(t, "15m", withOIDC(port, p.issuer, p.secretFile, nil))
	return v, variantConsole(v, port), p
}

// ssoSignIn signs in as the provider's user through the sign-in page and
// the provider's own login form, as a person would; it returns once the
// browser is back on the console.
func (c console) ssoSignIn(t *testing.T, b *webdriver.Browser, user string) {
	t.Helper()
	b.Go(c.url + "/")
	b.WaitText("#oidc-sign-in", "Sign in with Test IdP")
	b.Find("#oidc-sign-in").Click()
	b.Find("#username").Type(user)
	b.Find("#password").Type("pw-" + user)
	b.Find("button[type=submit]").Click()
	webdriver.Wait(t, "the browser to come back to the console", func() bool {
		return strings.HasPrefix(b.URL(), c.url+"/")
	})
	// What the browser logged on the way (the sign-in page's 401, the
	// provider's missing favicon) is no fault of the console's.
	b.Logs()
}

// callbackURL plays the flow with a plain HTTP client up to the
// provider's redirect back to the console, and returns the callback URL
// with its code and state, and the client, which holds the cookie of
// the browser that started the sign-in.
func (c console) callbackURL(t *testing.T, p *idp, user string) (string, *http.Client) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), c.url+"/oidc/callback") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := hc.Get(c.url + "/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Request.URL.Query().Get("authRequestID")
	if resp.StatusCode != 200 || id == "" {
		t.Fatalf("the provider's login page: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	resp, err = hc.PostForm(p.issuer+"/login/username", url.Values{"id": {id}, "username": {user}, "password": {"pw-" + user}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, c.url+"/oidc/callback?") {
		t.Fatalf("the provider's login answered %d, Location %q; want a redirect to the console's callback", resp.StatusCode, loc)
	}
	return loc, hc
}

// get fetches u with hc, returning the status and the body.
func get(t *testing.T, hc *http.Client, u string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// oidcAudit waits until the variant's audit log has an event of kind
// whose detail holds every one of want, and returns it.
func oidcAudit(t *testing.T, v *variant, kind, technician string, want ...string) map[string]string {
	t.Helper()
	var found map[string]string
	seen := ""
	waitUntil(t, 30*time.Second, kind+" audited with "+strings.Join(want, ", "), func() bool {
		seen = ""
		for _, e := range v.audit(t) {
			if e["kind"] != kind {
				continue
			}
			seen += e["technician"] + " " + e["detail"] + "\n"
			ok := e["technician"] == technician
			for _, w := range want {
				ok = ok && strings.Contains(e["detail"], w)
			}
			if ok {
				found = e
				return true
			}
		}
		return false
	})
	if found == nil {
		t.Logf("%s events seen:\n%s", kind, seen)
	}
	return found
}

// kenji signs in at the provider; the overview names him with the roles
// the provider's groups and sekisho's config both give; the callback
// replayed afterwards signs nobody in; signing out ends the session on
// the console (the old cookie is worth nothing) and at the provider.
func TestOIDCSignInReplayAndSignOut(t *testing.T) {
	t.Parallel()
	v, c, p := oidcVariant(t)
	b := startBrowser(t)

	c.ssoSignIn(t, b, "kenji")
	b.WaitText("#me-name", "kenji")
	b.WaitText(".me", "admin, approver")
	b.Find("#pending-count") // the overview
	noSevere(t, b, "overview after single sign-on")
	if got, _ := b.Exec(`return fetch("/api/me").then(r => r.json()).then(j => j.via);`).(string); got != "oidc" {
		t.Errorf("/api/me via = %q, want oidc", got)
	}
	oidcAudit(t, v, "web.sign_in", "kenji", `"via":"oidc"`, `"issuer":"`+p.issuer+`"`, `"subject":"u-kenji"`, `"roles":"admin, approver"`)
	var session string
	for _, ck := range b.Cookies() {
		if ck.Name == "sekisho" {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatal("signed in, the browser holds no session cookie")
	}

	// The link ssh prints still works beside single sign-on.
	b2 := startBrowser(t)
	c.signIn(t, b2, "sara")
	b2.WaitText(".me", "reviewer")

	// A callback replayed after it signed in: refused, whichever browser
	// replays it, and audited.
	cb, hc := c.callbackURL(t, p, "kenji")
	if code, body := get(t, hc, cb); code != 200 || !strings.Contains(body, "Signed in as kenji") {
		t.Fatalf("the callback, first time: %d\n%s", code, body)
	}
	if code, body := get(t, hc, cb); code != http.StatusUnauthorized || !strings.Contains(body, "unknown, used or expired") {
		t.Errorf("the callback replayed by the browser that used it: %d\n%s", code, body)
	}
	b2.Go(cb)
	b2.WaitText("#signin-error", "This sign-in is unknown, used or expired")
	oidcAudit(t, v, "web.sign_in_refused", "", `unknown, used or expired state`, `"via":"oidc"`)

	// Sign out: to the provider's end_session, back to the console.
	b.Go(c.url + "/")
	b.Find("#sign-out").Click()
	b.WaitText("#signed-out", "You are signed out")
	if !strings.HasPrefix(b.URL(), c.url+"/signed-out") {
		t.Errorf("after signing out the browser is at %s, want %s/signed-out", b.URL(), c.url)
	}
	if out := p.out.String(); !strings.Contains(out, "path=/end_session") {
		t.Errorf("the provider's end_session was not reached:\n%s", tail(out, 20))
	}
	oidcAudit(t, v, "web.sign_out", "kenji", `"via":"oidc"`, `"at_provider":true`)
	if code, _ := get(t, http.DefaultClient, c.url+"/api/me", "Cookie", "sekisho="+session); code != http.StatusUnauthorized {
		t.Errorf("the signed-out session's cookie on /api/me: %d, want 401", code)
	}
	b.Go(c.url + "/")
	b.WaitText("h1", "Sign in")
}

// The provider takes roles away, never adds one: kenji, admin and
// approver by sekisho's config, signs in with an account in the admin
// group only and gets no approve button, and the approve API refuses
// him; he may still deny, as an admin.
func TestOIDCGroupsTakeRolesAway(t *testing.T) {
	t.Parallel()
	v, c, _ := oidcVariant(t)
	id := fileRequest(t, v, "li", "db-jp-01")

	b := startBrowser(t)
	c.ssoSignIn(t, b, "kenji-ops")
	b.WaitText("#me-name", "kenji")
	if roles := b.Find(".me").Text(); !strings.Contains(roles, "(admin)") {
		t.Errorf("kenji through the admin group only shows %q, want (admin)", roles)
	}
	b.Go(c.url + "/requests")
	req := "#request-" + id
	b.Find(req + " button.deny")
	if n := len(b.FindAll(req + " button.approve")); n != 0 {
		t.Errorf("an approver whose provider groups do not make him one sees %d approve buttons", n)
	}
	got := b.Exec(`return fetch("/api/me").then(r => r.json()).then(me =>
  fetch("/api/requests/` + id + `/approve", {method: "POST", headers: {"X-CSRF-Token": me.csrf_token}}))
  .then(r => r.text().then(t => r.status + " " + t));`)
	if s, _ := got.(string); !strings.HasPrefix(s, "403 ") || !strings.Contains(s, "did not make you an approver") {
		t.Errorf("approve through the API: %v; want 403 saying the provider's groups did not make him an approver", got)
	}
	oidcAudit(t, v, "web.sign_in", "kenji", `"via":"oidc"`, `"roles":"admin"`, `"subject":"u-kenji-ops"`)
}

// What the provider says that sekisho refuses: each is shown to the
// person in a sentence and audited once, with why.
func TestOIDCRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, user string
		flags      []string
		page       string // what the person sees
		tech       string // the audit row's technician
		why        string // in the audit row's detail
	}{
		{name: "no group of her roles", user: "sara", page: "give you none of your console roles (reviewer)",
			tech: "sara", why: "a member of sec-review (reviewer) would have one"},
		{name: "not a technician", user: "mallory", page: "names mallory, who is not a sekisho technician",
			why: "names mallory, who is not a sekisho technician"},
		{name: "another audience", user: "kenji", flags: []string{"-audience", "another-client"},
			page: "answer could not be verified", why: "expected audience"},
		{name: "expired ID token", user: "kenji", flags: []string{"-id-token-lifetime", "-1h"},
			page: "answer could not be verified", why: "token is expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, c, _ := oidcVariant(t, tc.flags...)
			b := startBrowser(t)
			c.ssoSignIn(t, b, tc.user)
			b.WaitText("#signin-error", tc.page)
			if n := len(b.FindAll("#me-name")); n != 0 {
				t.Errorf("refused, the page still names someone")
			}
			if got := fetchStatus(t, b, "/api/me"); got != http.StatusUnauthorized {
				t.Errorf("/api/me after the refusal: %d, want 401", got)
			}
			oidcAudit(t, v, "web.sign_in_refused", tc.tech, tc.why, `"via":"oidc"`)
		})
	}
	// Login CSRF: a callback made for another browser (the attacker's
	// own sign-in) is refused in the victim's.
	t.Run("callback from another browser", func(t *testing.T) {
		t.Parallel()
		v, c, p := oidcVariant(t)
		cb, _ := c.callbackURL(t, p, "kenji")
		b := startBrowser(t)
		b.Go(cb)
		b.WaitText("#signin-error", "This sign-in did not start in this browser")
		if got := fetchStatus(t, b, "/api/me"); got != http.StatusUnauthorized {
			t.Errorf("/api/me after the refused callback: %d, want 401", got)
		}
		oidcAudit(t, v, "web.sign_in_refused", "", "without the cookie of the browser that started it")
	})
}

// A provider that cannot be reached: a page that says so, 503, and the
// reason in the log; the link from ssh still signs in.
func TestOIDCProviderUnreachable(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	secret := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secret, []byte("unused\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := startVariant(t, withOIDC(port, "http://127.0.0.1:"+freePort(t), secret, nil))
	c := variantConsole(v, port)
	code, body := get(t, &http.Client{Timeout: 30 * time.Second}, c.url+"/oidc/login")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "identity provider cannot be reached") {
		t.Errorf("/oidc/login with the provider down: %d\n%s", code, body)
	}
	waitUntil(t, 10*time.Second, "the log to say why", func() bool {
		return strings.Contains(v.out.String(), "the identity provider cannot be reached")
	})
	b := startBrowser(t)
	c.signIn(t, b, "kenji")
}
