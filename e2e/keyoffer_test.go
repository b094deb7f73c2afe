package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestOfferedKeyIsNoProof: li knows aiko's public key. Her client offers
// it for aiko's login (sekisho answers that the key would do, as SSH
// servers must), cannot sign with it, and then signs with her own key.
// The login fails: who logs in comes only from a key whose possession was
// proven, and it must be a key of the technician named in the login. The
// audit names the key that was refused, li's.
func TestOfferedKeyIsNoProof(t *testing.T) {
	v := startVariant(t, nil)
	dir := t.TempDir()
	pub, err := os.ReadFile(env.state.Keys["aiko"] + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	offered := filepath.Join(dir, "aiko-public-only.pub") // no private key with it
	if err := os.WriteFile(offered, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	liPub, err := os.ReadFile(env.state.Keys["li"] + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	liKey, _, _, _, err := ssh.ParseAuthorizedKey(liPub)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := v.ssh(ctx, "li", "aiko+db-jp-01", "echo", "in-as-aiko")
	// aiko's public key first, then li's own (from sshOpts).
	cmd.Args = append([]string{cmd.Args[0], "-v", "-i", offered}, cmd.Args[1:]...)
	r := run(t, cmd, nil)
	if !strings.Contains(r.stderr, "Server accepts key: "+offered) {
		t.Fatalf("the test did not make the client offer aiko's key and hear it accepted; stderr:\n%s", r.stderr)
	}
	if r.code != 255 || strings.Contains(r.stdout, "in-as-aiko") || !strings.Contains(r.stderr, "Permission denied (publickey)") {
		t.Fatalf("offering aiko's key then signing with li's: exit %d, stdout %q; want the login refused\n%s", r.code, r.stdout, r.stderr)
	}

	// li's own key, signed, under li's own login works: the refusal above
	// is about the key not matching the login, not about li.
	own := run(t, v.ssh(ctx, "li", "li", "help"), nil)
	if own.code != 0 {
		t.Fatalf("li's own command login: exit %d, stderr %q", own.code, own.stderr)
	}

	out, err := exec.Command(env.sekisho, "audit", "--config", v.config, "--limit", "1000").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := ssh.FingerprintSHA256(liKey)
	var found bool
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `"kind":"auth.failed"`) && strings.Contains(line, `\"login\":\"aiko+db-jp-01\"`) {
			found = strings.Contains(line, want)
			if !found {
				t.Fatalf("auth.failed for aiko+db-jp-01 does not name li's key %s: %s", want, line)
			}
		}
	}
	if !found {
		t.Fatalf("no auth.failed event for aiko+db-jp-01 in:\n%s", out)
	}
	hardening.Report(t, "1", "li's client offers aiko's public key for aiko+db-jp-01, hears it accepted, then signs with her own: refused (ssh exit %d, Permission denied), the auth.failed audit event names li's key by its fingerprint; li's own login works", r.code)
}
