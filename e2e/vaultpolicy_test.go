package e2e

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestVaultPolicyIsLeastPrivilege: logged in with sekisho's own AppRole,
// as the server is, Vault lets it sign with its role, read the CA, and
// seal and open secrets with its transit key, and refuses everything
// else tried: another signing role, the transit key's settings, its
// export, rotation or deletion, another transit key, other mounts, the
// policies and the AppRole's secret IDs.
func TestVaultPolicyIsLeastPrivilege(t *testing.T) {
	t.Parallel()
	c, read := sekishoVault(t)

	ctxB64 := base64.StdEncoding.EncodeToString([]byte("aiko"))
	sealed, err := c.Logical().Write("transit/encrypt/sekisho-totp", map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString([]byte("JBSWY3DPEHPK3PXP")), "context": ctxB64})
	if err != nil {
		t.Fatalf("seal with the TOTP key: %v", err)
	}
	if _, err := c.Logical().Write("transit/decrypt/sekisho-totp", map[string]any{
		"ciphertext": sealed.Data["ciphertext"], "context": ctxB64}); err != nil {
		t.Errorf("open with the TOTP key: %v", err)
	}
	if _, err := c.Logical().Read("ssh/config/ca"); err != nil {
		t.Errorf("read the CA: %v", err)
	}

	pub := strings.TrimSpace(read("../keys/aiko.pub"))
	refused := []struct {
		op, path string
		data     map[string]any
	}{
		{"write", "ssh/sign/other", map[string]any{"public_key": pub, "valid_principals": "root"}},
		{"write", "ssh/roles/sekisho", map[string]any{"allowed_users": "*"}},
		{"read", "transit/keys/sekisho-totp", nil},
		{"read", "transit/export/encryption-key/sekisho-totp", nil},
		{"write", "transit/keys/sekisho-totp/rotate", nil},
		{"write", "transit/keys/sekisho-totp/config", map[string]any{"deletion_allowed": true, "exportable": true}},
		{"delete", "transit/keys/sekisho-totp", nil},
		{"write", "transit/encrypt/other", map[string]any{"plaintext": "eA==", "context": ctxB64}},
		{"write", "transit/keys/other", nil},
		{"read", "sys/policy/sekisho", nil},
		{"write", "sys/mounts/kv", map[string]any{"type": "kv"}},
		{"write", "auth/approle/role/sekisho/secret-id", nil},
		{"write", "ssh-host/roles/sekisho-host", map[string]any{"allowed_domains": "*"}},
		{"write", "ssh-host/config/ca", map[string]any{"generate_signing_key": true}},
		{"write", "ssh-host/sign/other", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "db-jp-01"}},
	}
	for _, r := range refused {
		var err error
		switch r.op {
		case "read":
			_, err = c.Logical().Read(r.path)
		case "write":
			_, err = c.Logical().Write(r.path, r.data)
		case "delete":
			_, err = c.Logical().Delete(r.path)
		}
		var re *vault.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("%s %s with sekisho's token: %v; want 403 permission denied", r.op, r.path, err)
		}
	}
	hardening.Report(t, "4", "sekisho's own AppRole token in the real Vault: signs with its role, reads the CA, seals and opens with its transit key; %d other operations refused with 403 (another signing role, rewriting its role, reading, exporting, rotating, reconfiguring or deleting the transit key, another transit key, reading policies, mounting an engine, minting secret IDs, rewriting the host role or the host CA, another host role)", len(refused))
}

// sekishoVault is a client of the demo's Vault logged in with sekisho's
// own AppRole, as the server is, and what reads the demo's vault files.
func sekishoVault(t *testing.T) (*vault.Client, func(name string) string) {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(env.dir, "vault", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	cfg := vault.DefaultConfig()
	cfg.Address = env.state.Vault
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	sec, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": read("role-id"), "secret_id": read("secret-id")})
	if err != nil || sec == nil || sec.Auth == nil {
		t.Fatalf("approle login: %v", err)
	}
	c.SetToken(sec.Auth.ClientToken)
	return c, read
}

// TestVaultHostRoleSignsTargetsOnly: with sekisho's own token, the host
// role signs host certificates for the targets' names and nothing else:
// not another name, not a user certificate; and the user role signs no
// host certificate. A stolen token cannot make sekisho's host CA vouch
// for a host that is not a target.
func TestVaultHostRoleSignsTargetsOnly(t *testing.T) {
	t.Parallel()
	c, read := sekishoVault(t)
	pub := strings.TrimSpace(read("../keys/aiko.pub"))
	sec, err := c.Logical().Write("ssh-host/sign/sekisho-host", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "db-jp-01"})
	if err != nil || sec == nil || sec.Data["signed_key"] == nil {
		t.Fatalf("a host certificate for db-jp-01: %v", err)
	}
	for _, r := range []struct {
		path string
		data map[string]any
	}{
		{"ssh-host/sign/sekisho-host", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "vault.example.com"}},
		{"ssh-host/sign/sekisho-host", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "db-jp-01,github.com"}},
		{"ssh-host/sign/sekisho-host", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "sub.db-jp-01"}},
		{"ssh-host/sign/sekisho-host", map[string]any{"public_key": pub, "cert_type": "user", "valid_principals": "root"}},
		{"ssh/sign/sekisho", map[string]any{"public_key": pub, "cert_type": "host", "valid_principals": "db-jp-01"}},
	} {
		_, err := c.Logical().Write(r.path, r.data)
		var re *vault.ResponseError
		if !errors.As(err, &re) || re.StatusCode < 400 || re.StatusCode >= 500 {
			t.Errorf("%s %v with sekisho's token: %v; want a refusal", r.path, r.data["valid_principals"], err)
		}
	}
	hardening.Report(t, "4", "the host role with sekisho's own token: a host certificate for a target's name signed; another name, a target's name with another beside it, a subdomain, a user certificate from the host role and a host certificate from the user role all refused")
}
