package broker

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestIssueBoundedByOneTimeout: a login that takes most of the timeout
// followed by a signature that never comes is refused once the timeout
// has passed, not after a timeout per call. (The end-to-end tests run a
// real Vault slowed by a proxy; this one pins the arithmetic.)
func TestIssueBoundedByOneTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 600 * time.Millisecond
	ca, _ := newEd25519(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so that the server sees the client leave
		switch {
		case strings.HasSuffix(r.URL.Path, "/auth/approle/login"):
			select {
			case <-time.After(timeout * 2 / 3):
			case <-r.Context().Done():
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{"client_token": "t", "lease_duration": 3600}})
		case strings.HasSuffix(r.URL.Path, "/ssh/config/ca"):
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"public_key": string(ssh.MarshalAuthorizedKey(ca))}})
		default: // the signature never comes
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	for _, f := range []string{"role-id", "secret-id"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	is, err := NewIssuer(VaultConfig{Address: srv.URL, RoleIDFile: filepath.Join(dir, "role-id"),
		SecretIDFile: filepath.Join(dir, "secret-id"), Role: "sekisho", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = is.Issue(t.Context(), CertRequest{Principal: "root", KeyID: "k", SourceAddress: "127.0.0.1/32"})
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "vault did not answer within 600ms") {
		t.Fatalf("Issue = %v, want a timeout naming the bound", err)
	}
	// One timeout, with room for a loaded machine; per call it would be
	// at least the login's 400 ms plus the signature's 600 ms.
	if took > timeout+300*time.Millisecond {
		t.Errorf("Issue returned after %s, want about %s", took.Round(time.Millisecond), timeout)
	}
}

func TestIssuerDefaultTimeout(t *testing.T) {
	is, err := NewIssuer(VaultConfig{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if is.cfg.Timeout != DefaultVaultTimeout || DefaultVaultTimeout > 4*time.Second {
		t.Errorf("default Vault timeout %s: a new session must be refused within 5 s", is.cfg.Timeout)
	}
}
