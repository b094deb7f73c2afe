package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestVaultFaultsTellTechniciansNoInternals: whatever Vault does wrong
// (slow, sealed, sekisho's credentials revoked, stopped), a technician
// is told in a few words that no certificate could be had, or that the
// verification code could not be checked, and what to do; never Vault's
// address, a URL or Vault's own error. Those go to sekisho's log and the
// audit log, where the operator finds them.
func TestVaultFaultsTellTechniciansNoInternals(t *testing.T) {
	t.Parallel()
	dv := startDevVault(t)
	proxy := startSlowProxy(t, strings.TrimPrefix(dv.addr, "http://"), 8*time.Second)
	v := startVariant(t, func(cfg string) string {
		cfg = strings.Replace(dv.edit(cfg), "address: "+dv.addr, "address: "+proxy.addr(), 1)
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
	})
	secret := enrollSecret(t, v, "aiko")
	// What Vault's errors carry: its address (and the proxy's, which
	// sekisho knows it by), URLs and paths of its API.
	internals := []string{"http", "vault", "127.0.0.1:" + dv.port, strings.TrimPrefix(proxy.addr(), "http://"), "/v1/", "api request"}

	// told checks what a technician was shown under fault: the expected
	// words and nothing internal; it returns the log written since from.
	told := func(fault, what, stderr, want string, from int) string {
		t.Helper()
		if !strings.Contains(stderr, want) {
			t.Errorf("%s, %s: stderr %q, want %q", fault, what, stderr, want)
		}
		for _, w := range internals {
			if strings.Contains(strings.ToLower(stderr), w) {
				t.Errorf("%s, %s: the technician was shown %q, which gives away %q", fault, what, stderr, w)
			}
		}
		return v.out.String()[from:]
	}
	// logged is sekisho's log since from once it has wants, or after 10
	// s: the technician can be told before the log line is written.
	logged := func(from int, wants ...string) string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			l := v.out.String()[from:]
			all := true
			for _, w := range wants {
				all = all && strings.Contains(l, w)
			}
			if all || time.Now().After(deadline) {
				return l
			}
			time.Sleep(20 * time.Millisecond) // polling the log, with a deadline
		}
	}
	faults := []struct {
		name   string
		start  func()
		detail string // in the audit rows and the log: Vault's own words
	}{
		{"slow", func() { proxy.setSlow(true) }, "vault did not answer within"},
		{"sealed", func() { proxy.setSlow(false); dv.seal(t) }, "Vault is sealed"},
		{"revoked", func() {
			dv.unseal(t)
			secret, err := os.ReadFile(filepath.Join(dv.dir, "secret-id"))
			if err != nil {
				t.Fatal(err)
			}
			dv.must(t, "POST", "auth/approle/role/sekisho/secret-id/destroy", map[string]any{"secret_id": strings.TrimSpace(string(secret))})
			dv.must(t, "PUT", "sys/leases/revoke-prefix/auth/approle/login", nil)
		}, "approle login"},
		// sekisho's token went with the revocation: it logs in again and
		// finds no Vault.
		{"stopped", dv.stop, "approle login"},
	}
	for _, f := range faults {
		f.start()
		from := len(v.out.String())

		// A session: no certificate.
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "true"), nil)
		if r.code != 255 {
			t.Fatalf("%s: a session ran: exit %d, stderr %q", f.name, r.code, r.stderr)
		}
		told(f.name, "a session", r.stderr, "sekisho: could not obtain a certificate for db-jp-01; tell the sekisho operator (session ", from)
		id := refusedSession(t, r.stderr)
		wants := []string{f.detail, id}
		if f.name != "slow" {
			wants = append(wants, proxy.addr())
		}
		log := logged(from, wants...)
		failed := auditOf(t, v, id, "cert.failed")
		if len(failed) != 1 || failed[0]["detail"] == "" || !strings.Contains(failed[0]["detail"], f.detail) {
			t.Errorf("%s: cert.failed audit rows of session %s: %v; want one with %q", f.name, id, failed, f.detail)
		}
		// A Vault that did not answer in time gave no error of its own
		// to log: the deadline is the detail.
		if !strings.Contains(log, f.detail) || !strings.Contains(log, id) || f.name != "slow" && !strings.Contains(log, proxy.addr()) {
			t.Errorf("%s: sekisho's log lacks the detail %q, the session or Vault's address:\n%s", f.name, f.detail, tail(log, 10))
		}

		// A second factor: the sealed secret cannot be opened.
		from = len(v.out.String())
		began := time.Now()
		code, _ := totp.GenerateCode(secret, time.Now())
		r = withCode(t, v, "aiko+web-sg-01", code, "true")
		if r.code != 255 {
			t.Fatalf("%s: a second factor was accepted: exit %d, stderr %q", f.name, r.code, r.stderr)
		}
		told(f.name, "a verification code", r.stderr, "sekisho: your verification code could not be checked now; try again in a minute", from)
		wants = []string{f.detail}
		if f.name != "slow" {
			wants = append(wants, proxy.addr())
		}
		log = logged(from, wants...)
		var mfa []map[string]string
		for _, e := range v.audit(t) {
			at, _ := time.Parse(time.RFC3339Nano, e["at"])
			if e["kind"] == "mfa.failed" && e["technician"] == "aiko" && !at.Before(began.Add(-time.Second)) && strings.Contains(e["detail"], f.detail) {
				mfa = append(mfa, e)
			}
		}
		if len(mfa) == 0 {
			t.Errorf("%s: no mfa.failed audit row with %q", f.name, f.detail)
		}
		if !strings.Contains(log, f.detail) || f.name != "slow" && !strings.Contains(log, proxy.addr()) {
			t.Errorf("%s: sekisho's log lacks the detail %q of the second factor's failure or Vault's address:\n%s", f.name, f.detail, tail(log, 10))
		}
	}
	hardening.Report(t, "vault", "slow, sealed, credentials revoked, stopped: a session told %q and a verification code %q, never Vault's address, a URL or its error; sekisho's log and the audit log (cert.failed, mfa.failed) have them",
		"could not obtain a certificate for TARGET; tell the sekisho operator (session ID)", "your verification code could not be checked now; try again in a minute, or ask the operator")
}
