package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

func vaultRequest(t *testing.T, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), method, env.state.Vault+"/v1/"+path, rd)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("vault %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestVaultSetupIsIdempotentAndLeastPrivilege(t *testing.T) {
	t.Parallel()
	root, err := os.ReadFile(env.state.VaultTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(filepath.Join(env.dir, "vault", "user_ca.pub"))
	secretBefore, _ := os.ReadFile(filepath.Join(env.dir, "vault", "secret-id"))

	cmd := exec.Command(env.sekisho, "vault", "setup", "--config", env.state.Config)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+strings.TrimSpace(string(root)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("second vault setup: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "generated") || strings.Contains(string(out), "enabled") {
		t.Errorf("second run changed what already existed:\n%s", out)
	}
	if !strings.Contains(string(out), strings.TrimSpace(string(caBefore))) {
		t.Errorf("the CA changed; got:\n%s\nwant %s", out, caBefore)
	}
	if after, _ := os.ReadFile(filepath.Join(env.dir, "vault", "secret-id")); !bytes.Equal(after, secretBefore) {
		t.Error("the secret ID was replaced")
	}
	// Sessions still work after the second run.
	if r := run(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "echo after-setup"), nil); r.code != 0 || r.stdout != "after-setup\n" {
		t.Fatalf("after setup: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// sekisho's AppRole token can sign with its role and nothing else.
	roleID, _ := os.ReadFile(filepath.Join(env.dir, "vault", "role-id"))
	code, login := vaultRequest(t, "POST", "auth/approle/login", "", map[string]string{
		"role_id": strings.TrimSpace(string(roleID)), "secret_id": strings.TrimSpace(string(secretBefore))})
	if code != 200 {
		t.Fatalf("approle login: %d %v", code, login)
	}
	token := login["auth"].(map[string]any)["client_token"].(string)
	policies := fmt.Sprint(login["auth"].(map[string]any)["token_policies"])
	if !strings.Contains(policies, "sekisho") || strings.Contains(policies, "root") {
		t.Errorf("token policies %s", policies)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "sys/mounts"},
		{"POST", "ssh/roles/sekisho"},
		{"POST", "ssh/config/ca"},
		{"GET", "auth/approle/role/sekisho/role-id"},
		{"POST", "ssh/sign/other-role"},
		{"POST", "sys/policies/acl/sekisho"},
	} {
		if code, _ := vaultRequest(t, c.method, c.path, token, map[string]any{}); code != 403 {
			t.Errorf("sekisho's token: %s %s answered %d, want 403", c.method, c.path, code)
		}
	}
	// And the role refuses principals that are no target's login.
	pub, _ := os.ReadFile(env.state.Keys["aiko"] + ".pub")
	if code, body := vaultRequest(t, "POST", "ssh/sign/sekisho", token, map[string]any{
		"public_key": string(pub), "valid_principals": "some-other-user", "key_id": "x"}); code == 200 {
		t.Errorf("the role signed a certificate for an arbitrary principal: %v", body)
	}
	// Nor one with no principal (CVE-2024-7594: empty principals meant any user).
	if code, body := vaultRequest(t, "POST", "ssh/sign/sekisho", token, map[string]any{
		"public_key": string(pub), "key_id": "x"}); code == 200 {
		t.Errorf("the role signed a certificate without a principal: %v", body)
	}
	// Nor one with a critical option other than sekisho's two.
	if code, body := vaultRequest(t, "POST", "ssh/sign/sekisho", token, map[string]any{
		"public_key": string(pub), "valid_principals": targetNamed(t, "db-jp-01").Login, "key_id": "x",
		"critical_options": map[string]string{"verify-required": ""}}); code == 200 {
		t.Errorf("the role signed a certificate with another critical option: %v", body)
	}
	// The role as written: user certificates only, named extensions and
	// critical options and no defaults (a certificate carries what
	// sekisho asks for), no empty principals, minutes long.
	code, role := vaultRequest(t, "GET", "ssh/roles/sekisho", strings.TrimSpace(string(root)), nil)
	if code != 200 {
		t.Fatalf("read the role: %d %v", code, role)
	}
	data, _ := role["data"].(map[string]any)
	for k, want := range map[string]string{
		"allow_user_certificates":  "true",
		"allow_host_certificates":  "false",
		"allow_empty_principals":   "false",
		"allowed_extensions":       "permit-pty,permit-port-forwarding",
		"allowed_critical_options": "force-command,source-address",
		"default_critical_options": "map[]",
		"default_extensions":       "map[]",
	} {
		if got := fmt.Sprint(data[k]); got != want {
			t.Errorf("role %s = %q, want %q", k, got, want)
		}
	}
	hardening.Report(t, "4", "sekisho's Vault token tried on 6 other paths (mounts, role and CA config, role ID, another role's signing, policies): all 403; the role refuses an arbitrary and an empty principal and a critical option other than force-command and source-address; read back: user certificates only, 2 named extensions, 2 named critical options, no default extensions or options; a second setup changes nothing")
}

func TestUnauthenticatedConnectionsAreDropped(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nvault:", "\nssh:\n  auth_timeout: 2s\n\nvault:", 1)
	})
	c, err := net.Dial("tcp", "127.0.0.1:"+v.port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Send our banner and nothing else; the server must hang up by itself.
	c.Write([]byte("SSH-2.0-stalled\r\n"))
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, c)
	closed := time.Since(start)
	if err != nil {
		t.Fatalf("the server did not close a stalled handshake within 30s: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("closed after %s, want about the 2s auth timeout", d)
	}
	// The server still serves.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo alive"), nil); r.code != 0 || r.stdout != "alive\n" {
		t.Errorf("exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "21", "a client that sends its banner and nothing more: closed by sekisho after %.1f s (auth_timeout 2 s); the next login served", closed.Seconds())
	hardening.Report(t, "7", "a connection stalled after the client banner, before any auth message: dropped after %.1f s without a crash; the next login served", closed.Seconds())
}
