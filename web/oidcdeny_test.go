package web_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/web"
)

// kenji is admin and approver by the config; signed on through a provider
// whose groups gave him the approver role only, he may not deny, as an
// admin, a request his rule does not let him decide (a colleague's of his
// own affiliate, under other_affiliate). Signed in with the link, as an
// admin, he may.
func TestWithheldAdminCannotDenyAsAdmin(t *testing.T) {
	f := newFixture(t, "")
	srv, err := web.New(web.Config{Broker: f.brk, Store: f.store, RecordingDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Now: f.clock.now,
		URL:  "http://127.0.0.1",
		OIDC: &web.OIDCConfig{Issuer: "https://idp.example", ClientID: "sekisho", ClientSecret: "s", RedirectURL: "http://127.0.0.1/oidc/callback", TechnicianClaim: "sub", Roles: map[string][]string{"approver": {"jp"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	req, _, err := f.brk.RequestAccess(t.Context(), "aya", "db-jp-01", "192.0.2.1:50000", "INC-1 disk", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// An OIDC browser session for kenji with the approver role only.
	tok := "an-oidc-session-token-of-kenji-0123456789abcdef"
	sum := sha256.Sum256([]byte(tok))
	now := f.clock.now()
	if err := f.store.PutConsoleSession(t.Context(), broker.ConsoleSession{TokenHash: hex.EncodeToString(sum[:]), Technician: "kenji",
		CSRF: "csrf-of-kenji", Created: now, Seen: now, IdleTimeout: time.Hour, Expires: now.Add(time.Hour),
		Via: broker.ViaOIDC, Issuer: "https://idp.example", Subject: "u-kenji", Roles: []string{"approver"}}, 5, now); err != nil {
		t.Fatal(err)
	}
	post := func(base, cookie, csrf string) (int, string) {
		form := url.Values{"comment": {"not now"}}
		r, _ := http.NewRequest("POST", base+"/api/requests/"+strconv.FormatInt(req.ID, 10)+"/deny", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("X-CSRF-Token", csrf)
		if cookie != "" {
			r.Header.Set("Cookie", "sekisho="+cookie)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := post(ts.URL, tok, "csrf-of-kenji"); code != http.StatusForbidden || !strings.Contains(body, "did not make you an admin") {
		t.Errorf("deny through single sign-on without the admin role: %d %s; want 403 saying the admin role was withheld", code, body)
	}
	if r, err := f.store.Request(t.Context(), req.ID); err != nil || r.State != broker.RequestPending {
		t.Fatalf("the request after the refused denial: %+v, %v; want it pending", r.State, err)
	}
	b := f.signIn(t, "kenji")
	if resp, body := b.do("POST", "/api/requests/"+strconv.FormatInt(req.ID, 10)+"/deny", url.Values{"comment": {"not now"}}, map[string]string{"X-CSRF-Token": b.csrf}); resp.StatusCode != http.StatusOK {
		t.Errorf("deny by kenji as admin through the link: %d %s", resp.StatusCode, body)
	}
}
