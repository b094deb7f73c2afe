package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// The demo's single sign-on (demo --sso): a real OpenID provider
// (bin/oidcprovider, zitadel/oidc's op package) on loopback with the demo's
// people, their groups, and the claim naming their technician; the
// console's web.oidc points at it.

// demoSSOUsers are the provider's accounts: kenji in both groups that
// give his roles, sara in the reviewers' group, li in none (a sign-in the
// console refuses: she has no console role).
var demoSSOUsers = []struct {
	name   string
	groups []string
}{
	{"kenji", []string{"sec-admins", "jp-approvers"}},
	{"sara", []string{"sec-review"}},
	{"li", nil},
}

// demoSSO is the provider the demo started.
type demoSSO struct {
	Issuer     string            `json:"issuer"`
	SecretFile string            `json:"client_secret_file"`
	Passwords  map[string]string `json:"passwords"` // user: password, for the provider's login page
}

var providerReady = regexp.MustCompile(`oidcprovider ready (\S+)`)

// startSSO starts the provider for the console at webURL.
func (d *demo) startSSO(ctx context.Context, bin, webURL string) (*demoSSO, error) {
	if err := os.MkdirAll(d.path("sso"), 0o700); err != nil {
		return nil, err
	}
	s := &demoSSO{SecretFile: d.path("sso", "client-secret"), Passwords: map[string]string{}}
	if err := os.WriteFile(s.SecretFile, []byte(rand.Text()+"\n"), 0o600); err != nil {
		return nil, err
	}
	type user struct {
		ID       string         `json:"id"`
		Username string         `json:"username"`
		Password string         `json:"password"`
		Groups   []string       `json:"groups"`
		Claims   map[string]any `json:"claims"`
	}
	var users []user
	for _, u := range demoSSOUsers {
		pw := strings.ToLower(rand.Text()[:10])
		s.Passwords[u.name] = pw
		users = append(users, user{ID: "demo-" + u.name, Username: u.name, Password: pw, Groups: u.groups,
			Claims: map[string]any{"sekisho_technician": u.name}})
	}
	b, _ := json.MarshalIndent(users, "", "  ")
	usersFile := d.path("sso", "users.json")
	if err := os.WriteFile(usersFile, b, 0o600); err != nil {
		return nil, err
	}
	logPath := d.path("sso", "provider.log")
	p, err := d.start(bin, logPath, "-listen", "127.0.0.1:0", "-users", usersFile, "-client-id", "sekisho",
		"-client-secret-file", s.SecretFile, "-redirect-uri", webURL+"/oidc/callback", "-post-logout-uri", webURL+"/signed-out")
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 30*time.Second, "the OpenID provider to start (see "+logPath+")", func() bool {
		if !p.alive() {
			return true
		}
		b, _ := os.ReadFile(logPath)
		if m := providerReady.FindSubmatch(b); m != nil {
			s.Issuer = string(m[1])
			return true
		}
		return false
	})
	if err == nil && s.Issuer == "" {
		err = fmt.Errorf("the OpenID provider exited at start; see %s", logPath)
	}
	return s, err
}

func printDemoSSO(w io.Writer, s *demoSSO, web string) {
	fmt.Fprintf(w, `
Single sign-on (--sso): %s/ offers "Sign in with Demo IdP", a real OpenID
provider at %s. Its accounts (user / password):
  kenji / %s   groups sec-admins, jp-approvers: admin and approver
  sara  / %s   group sec-review: reviewer of SG sessions
  li    / %s   no group: refused, with why (li has no console role)
`, web, s.Issuer, s.Passwords["kenji"], s.Passwords["sara"], s.Passwords["li"])
}
