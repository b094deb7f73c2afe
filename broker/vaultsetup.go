package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// VaultSetup is what `sekisho vault setup` makes Vault hold for sekisho.
type VaultSetup struct {
	Vault VaultConfig
	// Principals are the target logins sekisho may put in a certificate;
	// the signing role allows nothing else.
	Principals []string
	// HostNames are the names sekisho may answer to as a target through
	// ProxyJump (every target's JumpNames); the host signing role allows
	// nothing else.
	HostNames []string
	// Policy is the name of the Vault policy for sekisho, default "sekisho".
	Policy string
	// AppRole is the AppRole role name, default "sekisho".
	AppRole string
	// CAPublicKeyFile, when set, receives the user CA public key, ready to
	// be used as sshd's TrustedUserCAKeys.
	CAPublicKeyFile string
}

// SetupReport says what Setup changed.
type SetupReport struct {
	Changes []string
	CA      string // user CA public key, authorized_keys format
	HostCA  string // host CA public key, authorized_keys format
}

// PolicyHCL is sekisho's least-privilege Vault policy: it can sign user
// certificates with its one role, host certificates with its one host
// role, read the user CA's public key, and encrypt and decrypt with its
// one transit key, nothing else. (Renewing and looking up its own token
// come with Vault's default policy; the host CA's public key needs no
// token.)
func PolicyHCL(v VaultConfig) string {
	return fmt.Sprintf(`# sekisho: sign user certificates with one role, read the CA public key.
path "%[1]s/sign/%[2]s" {
  capabilities = ["update"]
}
path "%[1]s/config/ca" {
  capabilities = ["read"]
}
# sekisho: seal and open technicians' TOTP secrets with one transit key.
path "%[3]s/encrypt/%[4]s" {
  capabilities = ["update"]
}
path "%[3]s/decrypt/%[4]s" {
  capabilities = ["update"]
}
# sekisho: sign the host certificates it presents as a target through
# ProxyJump, with one role of the host CA's mount.
path "%[5]s/sign/%[6]s" {
  capabilities = ["update"]
}
`, v.Mount, v.Role, v.TransitMount, v.TOTPKey, v.HostMount, v.HostRole)
}

// Setup configures Vault for sekisho with an admin client: the SSH
// secrets engine and its CA, the signing role, the policy, and an AppRole
// whose role ID and secret ID are written to the configured files (mode
// 0600). It is idempotent: existing mounts, the CA and an existing secret
// ID file are kept, the role and policy are rewritten to their intended
// state.
func Setup(ctx context.Context, client *vault.Client, s VaultSetup) (*SetupReport, error) {
	v := s.Vault.WithDefaults()
	if v.HostMount == v.Mount {
		return nil, fmt.Errorf("vault.host_mount and vault.mount are both %q: host and user certificates must not share a CA", v.Mount)
	}
	if s.Policy == "" {
		s.Policy = "sekisho"
	}
	if s.AppRole == "" {
		s.AppRole = "sekisho"
	}
	if v.Role == "" {
		return nil, errors.New("vault.role is not set")
	}
	if len(s.Principals) == 0 {
		return nil, errors.New("no target logins to allow: configure at least one target")
	}
	rep := &SetupReport{}
	sys := client.Sys()
	logical := client.Logical()

	mounts, err := sys.ListMountsWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list secrets engines: %w", err)
	}
	if m, ok := mounts[v.Mount+"/"]; !ok {
		if err := sys.MountWithContext(ctx, v.Mount, &vault.MountInput{Type: "ssh", Description: "sekisho user certificates"}); err != nil {
			return nil, fmt.Errorf("enable ssh secrets engine at %s: %w", v.Mount, err)
		}
		rep.Changes = append(rep.Changes, "enabled ssh secrets engine at "+v.Mount)
	} else if m.Type != "ssh" {
		return nil, fmt.Errorf("mount %s exists with type %q, want ssh", v.Mount, m.Type)
	}

	if m, ok := mounts[v.TransitMount+"/"]; !ok {
		if err := sys.MountWithContext(ctx, v.TransitMount, &vault.MountInput{Type: "transit", Description: "sekisho secrets at rest"}); err != nil {
			return nil, fmt.Errorf("enable transit secrets engine at %s: %w", v.TransitMount, err)
		}
		rep.Changes = append(rep.Changes, "enabled transit secrets engine at "+v.TransitMount)
	} else if m.Type != "transit" {
		return nil, fmt.Errorf("mount %s exists with type %q, want transit", v.TransitMount, m.Type)
	}
	keyPath := v.TransitMount + "/keys/" + v.TOTPKey
	key, err := logical.ReadWithContext(ctx, keyPath)
	if err != nil && !isStatus(err, 404) {
		return nil, fmt.Errorf("read transit key %s: %w", v.TOTPKey, err)
	}
	if key == nil {
		// Derived: each technician's secret is sealed under a key of
		// its own (the technician's name is the context). Not
		// exportable, no plaintext backup: the key stays in Vault.
		if _, err := logical.WriteWithContext(ctx, keyPath, map[string]any{
			"type": "aes256-gcm96", "derived": true, "exportable": false, "allow_plaintext_backup": false,
		}); err != nil {
			return nil, fmt.Errorf("create transit key %s: %w", v.TOTPKey, err)
		}
		rep.Changes = append(rep.Changes, "created transit key "+v.TOTPKey+" for TOTP secrets")
	} else if err := checkTransitKey(key.Data); err != nil {
		return nil, fmt.Errorf("transit key %s exists, but %v; name another with vault.totp_key", v.TOTPKey, err)
	}

	auths, err := sys.ListAuthWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list auth methods: %w", err)
	}
	if a, ok := auths[v.AppRoleMount+"/"]; !ok {
		if err := sys.EnableAuthWithOptionsWithContext(ctx, v.AppRoleMount, &vault.EnableAuthOptions{Type: "approle"}); err != nil {
			return nil, fmt.Errorf("enable approle at %s: %w", v.AppRoleMount, err)
		}
		rep.Changes = append(rep.Changes, "enabled approle auth at "+v.AppRoleMount)
	} else if a.Type != "approle" {
		return nil, fmt.Errorf("auth mount %s exists with type %q, want approle", v.AppRoleMount, a.Type)
	}

	ca, err := logical.ReadWithContext(ctx, v.Mount+"/config/ca")
	if err != nil && !isStatus(err, 400, 404) {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	if ca == nil || ca.Data["public_key"] == nil {
		ca, err = logical.WriteWithContext(ctx, v.Mount+"/config/ca", map[string]any{
			"generate_signing_key": true,
			"key_type":             "ed25519",
		})
		if err != nil {
			return nil, fmt.Errorf("generate CA: %w", err)
		}
		rep.Changes = append(rep.Changes, "generated ed25519 user CA")
	}
	rep.CA, _ = ca.Data["public_key"].(string)
	if rep.CA == "" {
		return nil, errors.New("vault returned no CA public key")
	}

	principals := append([]string(nil), s.Principals...)
	sort.Strings(principals)
	if _, err := logical.WriteWithContext(ctx, v.Mount+"/roles/"+v.Role, map[string]any{
		"key_type":                "ca",
		"algorithm_signer":        "default",
		"allow_user_certificates": true,
		"allow_host_certificates": false,
		"allowed_users":           strings.Join(principals, ","),
		"allow_user_key_ids":      true,
		"allowed_extensions":      strings.Join(allowedExtensions, ","),
		// No defaults: a certificate carries what sekisho asks for and
		// nothing else (an SFTP-only one, not even a pty).
		"default_extensions":       map[string]string{},
		"allowed_critical_options": strings.Join(allowedCriticalOptions, ","),
		"default_critical_options": map[string]string{},
		"ttl":                      v.TTL.String(),
		"max_ttl":                  (3 * v.TTL).String(),
		"allow_empty_principals":   false,
		"allowed_user_key_lengths": map[string][]int{"ed25519": {0}},
	}); err != nil {
		return nil, fmt.Errorf("write signing role %s: %w", v.Role, err)
	}
	rep.Changes = append(rep.Changes, fmt.Sprintf("wrote signing role %s (principals %s)", v.Role, strings.Join(principals, ",")))

	if err := setupHostCA(ctx, client, v, s.HostNames, mounts, rep); err != nil {
		return nil, err
	}

	if err := sys.PutPolicyWithContext(ctx, s.Policy, PolicyHCL(v)); err != nil {
		return nil, fmt.Errorf("write policy %s: %w", s.Policy, err)
	}
	rep.Changes = append(rep.Changes, "wrote policy "+s.Policy)

	rolePath := "auth/" + v.AppRoleMount + "/role/" + s.AppRole
	if _, err := logical.WriteWithContext(ctx, rolePath, map[string]any{
		"token_policies": s.Policy,
		"token_ttl":      "1h",
		"token_max_ttl":  "4h",
		"bind_secret_id": true,
	}); err != nil {
		return nil, fmt.Errorf("write approle %s: %w", s.AppRole, err)
	}
	sec, err := logical.ReadWithContext(ctx, rolePath+"/role-id")
	if err != nil || sec == nil {
		return nil, fmt.Errorf("read approle role ID: %w", err)
	}
	roleID, _ := sec.Data["role_id"].(string)
	if err := writeSecretFile(v.RoleIDFile, roleID); err != nil {
		return nil, fmt.Errorf("write role ID: %w", err)
	}
	if _, err := readSecretFile(v.SecretIDFile); err != nil {
		sec, err := logical.WriteWithContext(ctx, rolePath+"/secret-id", nil)
		if err != nil || sec == nil {
			return nil, fmt.Errorf("generate approle secret ID: %w", err)
		}
		secretID, _ := sec.Data["secret_id"].(string)
		if err := writeSecretFile(v.SecretIDFile, secretID); err != nil {
			return nil, fmt.Errorf("write secret ID: %w", err)
		}
		rep.Changes = append(rep.Changes, "generated approle secret ID into "+v.SecretIDFile)
	}
	if s.CAPublicKeyFile != "" {
		if err := os.WriteFile(s.CAPublicKeyFile, []byte(strings.TrimSpace(rep.CA)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write CA public key: %w", err)
		}
	}
	return rep, nil
}

// setupHostCA enables the host CA's mount, generates its key once and
// writes the host signing role: host certificates only, for names and
// nothing else, no user key IDs beyond sekisho's own, no options.
func setupHostCA(ctx context.Context, client *vault.Client, v VaultConfig, names []string, mounts map[string]*vault.MountOutput, rep *SetupReport) error {
	sys, logical := client.Sys(), client.Logical()
	if m, ok := mounts[v.HostMount+"/"]; !ok {
		if err := sys.MountWithContext(ctx, v.HostMount, &vault.MountInput{Type: "ssh", Description: "sekisho host certificates (ProxyJump)"}); err != nil {
			return fmt.Errorf("enable ssh secrets engine at %s: %w", v.HostMount, err)
		}
		rep.Changes = append(rep.Changes, "enabled ssh secrets engine at "+v.HostMount+" for host certificates")
	} else if m.Type != "ssh" {
		return fmt.Errorf("mount %s exists with type %q, want ssh", v.HostMount, m.Type)
	}
	ca, err := logical.ReadWithContext(ctx, v.HostMount+"/config/ca")
	if err != nil && !isStatus(err, 400, 404) {
		return fmt.Errorf("read host CA: %w", err)
	}
	if ca == nil || ca.Data["public_key"] == nil {
		ca, err = logical.WriteWithContext(ctx, v.HostMount+"/config/ca", map[string]any{
			"generate_signing_key": true,
			"key_type":             "ed25519",
		})
		if err != nil {
			return fmt.Errorf("generate host CA: %w", err)
		}
		rep.Changes = append(rep.Changes, "generated ed25519 host CA")
	}
	rep.HostCA, _ = ca.Data["public_key"].(string)
	if rep.HostCA == "" {
		return errors.New("vault returned no host CA public key")
	}
	if len(names) == 0 {
		return errors.New("no target names to allow in host certificates: configure at least one target")
	}
	names = slices.Clone(names)
	sort.Strings(names)
	names = slices.Compact(names)
	if _, err := logical.WriteWithContext(ctx, v.HostMount+"/roles/"+v.HostRole, map[string]any{
		"key_type":                 "ca",
		"algorithm_signer":         "default",
		"allow_user_certificates":  false,
		"allow_host_certificates":  true,
		"allowed_domains":          strings.Join(names, ","),
		"allow_bare_domains":       true,
		"allow_subdomains":         false,
		"allow_user_key_ids":       true,
		"allowed_extensions":       "",
		"default_extensions":       map[string]string{},
		"allowed_critical_options": "",
		"default_critical_options": map[string]string{},
		"ttl":                      v.HostTTL.String(),
		"max_ttl":                  v.HostTTL.String(),
		"allow_empty_principals":   false,
		"allowed_user_key_lengths": map[string][]int{"ed25519": {0}},
	}); err != nil {
		return fmt.Errorf("write host signing role %s: %w", v.HostRole, err)
	}
	rep.Changes = append(rep.Changes, fmt.Sprintf("wrote host signing role %s (names %s)", v.HostRole, strings.Join(names, ",")))
	return nil
}

// checkTransitKey refuses a transit key that could let a secret out of
// Vault, or seal one technician's secret so that it opens for another.
func checkTransitKey(data map[string]any) error {
	switch typ, _ := data["type"].(string); typ {
	case "aes256-gcm96", "aes128-gcm96", "chacha20-poly1305":
	default:
		return fmt.Errorf("it is of type %q, not a symmetric encryption key", typ)
	}
	if derived, _ := data["derived"].(bool); !derived {
		return errors.New("it is not derived (one key per technician)")
	}
	if exportable, _ := data["exportable"].(bool); exportable {
		return errors.New("it is exportable")
	}
	if backup, _ := data["allow_plaintext_backup"].(bool); backup {
		return errors.New("it allows a plaintext backup")
	}
	return nil
}

func writeSecretFile(path, value string) error {
	if path == "" {
		return errors.New("no file configured")
	}
	if value == "" {
		return errors.New("vault returned an empty value")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(value+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func isStatus(err error, codes ...int) bool {
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, c := range codes {
		if re.StatusCode == c {
			return true
		}
	}
	return false
}
