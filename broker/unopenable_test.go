package broker_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// transitVault answers the AppRole login, the SSH CA and the transit engine's encrypt
// and decrypt as Vault does, with a key that replace swaps for a new one:
// what the old key sealed then gets Vault's 400, as on a new dev Vault or
// a Vault restored without its transit keys. (The end-to-end demo test
// does the same with the real dev Vault.)
type transitVault struct {
	*httptest.Server
	key atomic.Int32
}

func newTransitVault(t *testing.T) *transitVault {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	v := &transitVault{}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		key := string(rune('a' + v.key.Load()))
		switch {
		case strings.HasSuffix(r.URL.Path, "/auth/approle/login"):
			json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{"client_token": "t", "lease_duration": 3600}})
		case strings.HasSuffix(r.URL.Path, "/ssh/config/ca"):
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"public_key": string(ssh.MarshalAuthorizedKey(ca))}})
		case strings.Contains(r.URL.Path, "/transit/encrypt/"):
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
				"ciphertext": "vault:v1:" + key + ":" + body["context"] + ":" + body["plaintext"]}})
		case strings.Contains(r.URL.Path, "/transit/decrypt/"):
			plain, ok := strings.CutPrefix(body["ciphertext"], "vault:v1:"+key+":"+body["context"]+":")
			if !ok {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]any{"errors": []string{"cipher: message authentication failed"}})
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"plaintext": plain}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(v.Close)
	return v
}

// replace gives Vault a new transit key; the old one is gone.
func (v *transitVault) replace() { v.key.Add(1) }

// syncBuffer is a log destination the test reads while the broker writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A sealed secret that no longer opens (Vault's transit key replaced)
// reaches the operator: an mfa.unopenable audit event, told to the
// metrics, and an error in the log, each with the command that mends it.
// The technician's attempts are not counted as wrong codes, and once the
// technician is enrolled again their code works.
func TestUnopenableSecretReachesTheOperator(t *testing.T) {
	ctx := t.Context()
	vault := newTransitVault(t)
	dir := t.TempDir()
	for _, f := range []string{"role-id", "secret-id"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	issuer, err := broker.NewIssuer(broker.VaultConfig{Address: vault.URL, RoleIDFile: filepath.Join(dir, "role-id"),
		SecretIDFile: filepath.Join(dir, "secret-id"), Role: "sekisho"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	policy, err := broker.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var mu sync.Mutex
	var told []broker.AuditEvent
	b := broker.New(broker.Config{
		Technicians: []*broker.Technician{{Name: "li", Affiliate: broker.Affiliate{Name: "ops-cn", Country: "CN"}}},
		Policy:      policy, Issuer: issuer, Store: store, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		OnAudit: func(e broker.AuditEvent) {
			mu.Lock()
			told = append(told, e)
			mu.Unlock()
		},
	})
	uri, err := b.EnrollTOTP(ctx, "li")
	if err != nil {
		t.Fatal(err)
	}
	if code, err := b.TOTPCode(ctx, "li", time.Now()); err != nil || len(code) != 6 {
		t.Fatalf("TOTPCode under the key that sealed it: %q, %v", code, err)
	}

	vault.replace()
	for i := range 8 {
		code, _ := totp.GenerateCode(secretOf(t, uri), time.Now())
		if err := b.VerifyTOTP(ctx, "li", "192.0.2.1:4000", code); !errors.Is(err, broker.ErrUnopenable) {
			t.Fatalf("attempt %d after the transit key was replaced: %v, want ErrUnopenable", i, err)
		}
	}
	if _, err := b.TOTPCode(ctx, "li", time.Now()); !errors.Is(err, broker.ErrUnopenable) {
		t.Errorf("TOTPCode after the transit key was replaced: %v, want ErrUnopenable", err)
	}

	const enroll = "sekisho technician enroll-totp li"
	events, err := store.AuditEvents(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	for _, e := range events {
		if e.Kind == broker.EventMFAUnopenable && e.Technician == "li" {
			stored++
			if !strings.Contains(e.Detail, enroll) {
				t.Errorf("mfa.unopenable detail does not say what to do: %q", e.Detail)
			}
		}
	}
	if stored != 9 {
		t.Errorf("%d mfa.unopenable events stored, want 9 (8 logins, 1 demo code)", stored)
	}
	if !audited(t, store, broker.EventMFAFailed, "li") {
		t.Error("the refused logins were not audited as mfa.failed")
	}
	mu.Lock()
	var metered int
	for _, e := range told {
		if e.Kind == broker.EventMFAUnopenable {
			metered++
		}
	}
	mu.Unlock()
	if metered != stored {
		t.Errorf("%d mfa.unopenable events told to the metrics, %d stored", metered, stored)
	}
	var logged bool
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["level"] != "ERROR" {
			continue
		}
		if rec["technician"] == "li" && rec["command"] == enroll && strings.Contains(rec["msg"].(string), "enroll the technician again") {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no error in the log naming li and %q:\n%s", enroll, logs.String())
	}

	// Not the technician's guesses: after the operator enrolls them again,
	// the first right code works.
	uri, err = b.EnrollTOTP(ctx, "li")
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(secretOf(t, uri), time.Now())
	if err := b.VerifyTOTP(ctx, "li", "192.0.2.1:4000", code); err != nil {
		t.Errorf("the right code once enrolled again: %v", err)
	}
}
