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
	hardening.Report(t, "4", "sekisho's own AppRole token in the real Vault: signs with its role, reads the CA, seals and opens with its transit key; %d other operations refused with 403 (another signing role, rewriting its role, reading, exporting, rotating, reconfiguring or deleting the transit key, another transit key, reading policies, mounting an engine, minting secret IDs)", len(refused))
}
