package e2e

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// `sekisho demo --sso` starts a real OpenID provider with the demo's
// people and points the console at it: kenji signs in there with the
// password the demo printed and lands in the console as admin and
// approver; li, in no group, is refused with why.
func TestDemoSSO(t *testing.T) {
	t.Parallel()
	d := startOwnDemo(t, t.TempDir(), "--sso")
	account := regexp.MustCompile(`(?m)^  (kenji|li) +/ (\S+) `)
	passwords := map[string]string{}
	waitUntil(t, 30*time.Second, "the demo to print the provider's accounts", func() bool {
		for _, m := range account.FindAllStringSubmatch(d.out.String(), -1) {
			passwords[m[1]] = m[2]
		}
		return len(passwords) == 2
	})

	signIn := func(user string) (int, string) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		resp, err := c.Get(d.state.Web + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), `href="/oidc/login">Sign in with Demo IdP`) {
			t.Fatalf("the console's sign-in page offers no single sign-on:\n%s", page)
		}
		resp, err = c.Get(d.state.Web + "/oidc/login")
		if err != nil {
			t.Fatal(err)
		}
		page, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		id := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(page)
		if id == nil {
			t.Fatalf("the provider's login page (%s) has no form:\n%s", resp.Request.URL, page)
		}
		form := url.Values{"id": {string(id[1])}, "username": {user}, "password": {passwords[user]}}
		login := *resp.Request.URL
		login.RawQuery = ""
		resp, err = c.PostForm(login.String(), form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		page, _ = io.ReadAll(resp.Body)
		return resp.StatusCode, string(page)
	}
	if code, page := signIn("kenji"); code != http.StatusOK || !strings.Contains(page, "Signed in as kenji (admin, approver)") {
		t.Errorf("kenji through the demo's provider: %d\n%s", code, page)
	}
	if code, page := signIn("li"); code != http.StatusForbidden || !strings.Contains(page, "you are none of them") {
		t.Errorf("li through the demo's provider: %d\n%s", code, page)
	}
}
