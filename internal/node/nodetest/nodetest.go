// Package nodetest holds what tests of a node and of the command line
// start from: one valid configuration with deterministic keys, and the
// check that a config error names its file and line.
package nodetest

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Key returns a deterministic ed25519 key: its authorized_keys line
// (without newline), its public key and a signer.
func Key(t testing.TB, seed byte, comment string) (string, ssh.PublicKey, ssh.Signer) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line, pub, signer
}

const validTmpl = `# sekisho test configuration
listen: 127.0.0.1:2222
host_key: host_key
state: state/sekisho.db
recordings: recordings
log_format: json
log_level: info

vault:
  address: http://127.0.0.1:8200
  role_id_file: vault/role-id
  secret_id_file: /etc/sekisho/secret-id
  mount: ssh
  role: sekisho
  cert_ttl: 5m
  timeout: 10s

ssh:
  auth_timeout: 30s
  max_auth_tries: 3
  dial_timeout: 5s
  env_allow: [LANG, LC_ALL]

affiliates:
  - name: ops-jp
    country: JP
  - name: ops-cn
    country: CN

technicians:
  - name: aiko
    affiliate: ops-jp
    groups: [dba]
    keys:
      - AIKO_KEY
  - name: li
    affiliate: ops-cn
    keys:
      - LI_KEY

targets:
  - name: db-jp-01
    address: 10.0.0.1:22
    login: dbadmin
    residency: JP
    data: [pii, messages]
    labels:
      env: prod
    host_keys:
      - DB_HOST_KEY
  - name: web-sg-01
    address: 10.0.1.1
    login: www
    residency: SG
    host_cas:
      - HOST_CA_KEY

# An explicit deny beats every allow.
rules:
  - name: pii-stays-in-residency
    effect: deny
    data: [pii]
    cross_border: true
    message: personal data stays with technicians of its residency country
  - name: pii-in-residency
    effect: allow
    data: [pii]
    cross_border: false
  - name: any-affiliate-to-web
    effect: allow
    targets: [web-*]
    login: deploy
`

// Keys are the public keys in the valid configuration, and the signer of
// its host CA.
type Keys struct {
	Aiko, Li, DBHost, HostCA ssh.PublicKey
	CASigner                 ssh.Signer
}

// Config returns the valid configuration with real keys spliced in.
func Config(t testing.TB) (string, Keys) {
	t.Helper()
	var k Keys
	aiko, pub, _ := Key(t, 1, "aiko@laptop")
	k.Aiko = pub
	li, pub, _ := Key(t, 2, "")
	k.Li = pub
	db, pub, _ := Key(t, 3, "")
	k.DBHost = pub
	ca, pub, signer := Key(t, 4, "host-ca")
	k.HostCA, k.CASigner = pub, signer
	cfg := strings.NewReplacer("AIKO_KEY", aiko, "LI_KEY", li, "DB_HOST_KEY", db, "HOST_CA_KEY", ca).Replace(validTmpl)
	return cfg, k
}

// WriteConfig writes the valid configuration, changed by edit unless it
// is nil, to a sekisho.yaml of its own and returns its path.
func WriteConfig(t testing.TB, edit func(string) string) string {
	t.Helper()
	cfg, _ := Config(t)
	if edit != nil {
		cfg = edit(cfg)
	}
	path := filepath.Join(t.TempDir(), "sekisho.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WantErr checks that err names file (and line, unless 0) first and
// contains every one of words.
func WantErr(t *testing.T, err error, file string, line int, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an error containing %q", words)
	}
	msg := err.Error()
	prefix := file + ": "
	if line > 0 {
		prefix = file + ":" + strconv.Itoa(line) + ": "
	}
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
}
