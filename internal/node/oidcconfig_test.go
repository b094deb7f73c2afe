package node

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/node/nodetest"
)

// web.oidc: the defaults, the secret read from its file and never from
// the config, and an error that says what to do for each mistake.
func TestOIDCSection(t *testing.T) {
	valid, _ := nodetest.Config(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "oidc-secret")
	if err := os.WriteFile(secret, []byte("s3cr3t-from-the-provider\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const web = "web:\n  listen: 127.0.0.1:8443\n  url: https://bastion.example.com:8443\n"
	ok := "  oidc:\n    issuer: https://idp.example.com/realms/ops\n    client_id: sekisho\n    client_secret_file: " + secret +
		"\n    technician_claim: sekisho_technician\n    roles: {admin: [sec-admins], approver: [jp-approvers]}\n"
	parse := func(text string) (*Config, error) {
		return ParseConfig(strings.NewReader(valid+"\n"+text), filepath.Join(dir, "sekisho.yaml"))
	}

	cfg, err := parse(web + ok)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.consoleOIDC()
	if o.RedirectURL != "https://bastion.example.com:8443/oidc/callback" || o.PostLogoutRedirectURL != "https://bastion.example.com:8443/signed-out" ||
		!slices.Equal(o.Scopes, []string{"openid", "profile", "email", "groups"}) || o.GroupsClaim != "groups" ||
		o.Name != "idp.example.com" || o.ClientSecret != "s3cr3t-from-the-provider" || !slices.Equal(o.Roles["admin"], []string{"sec-admins"}) {
		t.Errorf("defaults: %+v", o)
	}
	if cfg, err := parse(web); err != nil || cfg.consoleOIDC() != nil {
		t.Errorf("without web.oidc: %v, %v; want no single sign-on", cfg.consoleOIDC(), err)
	}

	for _, tc := range []struct{ from, to, err string }{
		{"    issuer: https://idp.example.com/realms/ops\n", "", "issuer is required"},
		{"https://idp.example.com/realms/ops", "http://idp.example.com/realms/ops", "plain http:// to another host"},
		{"https://idp.example.com/realms/ops", "idp.example.com", "write the provider's issuer URL"},
		{"    client_id: sekisho\n", "", "client_id is required"},
		{"    client_secret_file: " + secret + "\n", "", "client_secret_file is required"},
		{"client_secret_file: " + secret, "client_secret_file: " + filepath.Join(dir, "missing"), "no such file"},
		{"client_secret_file: " + secret, "client_secret_file: " + empty, "must hold the client secret on one line"},
		{"    technician_claim: sekisho_technician\n", "", "technician_claim is required"},
		{"{admin: [sec-admins], approver: [jp-approvers]}", "{owner: [sec-admins]}", `"owner" is not a console role`},
		{"{admin: [sec-admins], approver: [jp-approvers]}", "{admin: []}", "maps no group to a role"},
		{"    roles: {admin: [sec-admins], approver: [jp-approvers]}\n", "", "maps no group to a role"},
		{"{admin: [sec-admins], approver: [jp-approvers]}", `{admin: [""]}`, "a group name is empty"},
		{"    client_id: sekisho\n", "    client_id: sekisho\n    scopes: [profile, groups]\n", "openid is required"},
		{"    client_id: sekisho\n", "    client_id: sekisho\n    redirect_url: https://other.example.com/oidc/callback\n", "the console's own callback"},
	} {
		text := strings.Replace(web+ok, tc.from, tc.to, 1)
		_, err := parse(text)
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "web.oidc") {
			t.Errorf("%q → %q: %v; want an error about web.oidc saying %q", tc.from, tc.to, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("the error quotes the client secret: %v", err)
		}
	}
	if _, err := parse(web + ok + "    technician_clam: x\n"); err == nil || !strings.Contains(err.Error(), "technician_clam") {
		t.Errorf("a misspelt key in web.oidc: %v; want it named", err)
	}
	if _, err := parse("web:\n" + ok); err == nil || !strings.Contains(err.Error(), "listen is required") {
		t.Errorf("web.oidc without web.listen: %v", err)
	}
	// Plain http to a provider on this host (the tests' provider) is allowed.
	if _, err := parse(strings.Replace(web+ok, "https://idp.example.com/realms/ops", "http://127.0.0.1:9998", 1)); err != nil {
		t.Errorf("a provider on loopback over http: %v", err)
	}
}
