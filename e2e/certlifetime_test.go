package e2e

import (
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// issuedCert is a cert.issued audit row's detail.
type issuedCert struct {
	Serial      uint64 `json:"serial"`
	KeyID       string `json:"key_id"`
	ValidBefore string `json:"valid_before"`
}

// certsIssued returns the certificates issued for tech, the one expiring
// first first.
func certsIssued(t *testing.T, v *variant, tech string) []issuedCert {
	t.Helper()
	var certs []issuedCert
	for _, e := range v.audit(t) {
		if e["kind"] != "cert.issued" || e["technician"] != tech {
			continue
		}
		var c issuedCert
		if err := json.Unmarshal([]byte(e["detail"]), &c); err != nil {
			t.Fatalf("cert.issued detail %q: %v", e["detail"], err)
		}
		certs = append(certs, c)
	}
	slices.SortStableFunc(certs, func(a, b issuedCert) int { return strings.Compare(a.ValidBefore, b.ValidBefore) })
	return certs
}

// A certificate shorter than the session: with vault.cert_ttl 1m, a
// session outlives its certificate. OpenSSH's sshd checks the certificate
// only when the connection authenticates, so the running command goes on
// relaying both ways, and a new channel on the same connection works
// (channels do not authenticate again). A new connection gets a new
// certificate. What bounds a session is the rule's max_duration and the
// grant, not the certificate.
func TestSessionOutlivesItsCertificate(t *testing.T) {
	hardening.Long(t)
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		if !strings.Contains(cfg, "  cert_ttl: 5m\n") {
			t.Fatal("the demo config has no cert_ttl: 5m")
		}
		return strings.Replace(cfg, "  cert_ttl: 5m\n", "  cert_ttl: 1m\n", 1)
	})
	dial := func() *ssh.Client {
		c, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, &ssh.ClientConfig{User: "aiko+web-sg-01",
			Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))}, HostKeyCallback: ssh.FixedHostKey(variantHostKey(t, v))})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client := dial()
	defer client.Close()
	started := time.Now()

	// A command that answers each line it reads, for as long as it runs.
	s, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stdin, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	s.Stdout, s.Stderr = out, out
	if err := s.Start(`echo started; while read line; do echo "got-$line"; done`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the command to start", func() bool { return strings.Contains(out.String(), "started") })
	certs := certsIssued(t, v, "aiko")
	if len(certs) != 1 {
		t.Fatalf("%d certificates issued for one connection: %+v", len(certs), certs)
	}
	first := certs[0]
	expires, err := time.Parse(time.RFC3339, first.ValidBefore)
	if err != nil {
		t.Fatal(err)
	}
	if life := expires.Sub(started); life > 70*time.Second {
		t.Fatalf("the certificate lives %s, longer than the 1m asked for", life)
	}
	io.WriteString(stdin, "before-expiry\n")
	waitUntil(t, 30*time.Second, "the answer before expiry", func() bool { return strings.Contains(out.String(), "got-before-expiry") })

	// Wait (a condition on the clock, with a deadline) until the
	// certificate has expired, and 10 s more.
	after := expires.Add(10 * time.Second)
	waitUntil(t, 90*time.Second, "the session's certificate to expire", func() bool { return time.Now().After(after) })

	// (a) The running command still relays both ways.
	io.WriteString(stdin, "after-expiry\n")
	waitUntil(t, 30*time.Second, "the running command's answer after expiry", func() bool { return strings.Contains(out.String(), "got-after-expiry") })
	// (b) A new channel on the same connection still works: it does not
	// authenticate again.
	if got, err := runOn(client, "echo second-channel"); err != nil || got != "second-channel\n" {
		t.Fatalf("a new channel %s after the certificate expired: %q, %v", time.Since(expires).Round(time.Second), got, err)
	}
	lived := time.Since(started)
	if n := len(certsIssued(t, v, "aiko")); n != 1 {
		t.Fatalf("the running connection got %d certificates; it should keep its first", n)
	}

	// (c) A new connection gets a new certificate, with a new serial.
	second := dial()
	defer second.Close()
	if got, err := runOn(second, "echo new-connection"); err != nil || got != "new-connection\n" {
		t.Fatalf("a new connection: %q, %v", got, err)
	}
	certs = certsIssued(t, v, "aiko")
	if len(certs) != 2 || certs[1].Serial == first.Serial || certs[1].KeyID == first.KeyID || certs[1].ValidBefore <= first.ValidBefore {
		t.Fatalf("a new connection should get a new certificate: %+v", certs)
	}
	stdin.Close()
	if err := s.Wait(); err != nil {
		t.Fatalf("the long command: %v", err)
	}
	hardening.Report(t, "cert-lifetime", "vault.cert_ttl 1m: a session ran %s, %s past its certificate's expiry (serial %d): the running command still relayed both ways and a new channel on the same connection ran; a new connection got a new certificate (serial %d); sessions are bounded by rule max_duration and grants, not by the certificate",
		lived.Round(time.Second), time.Since(expires).Round(time.Second), first.Serial, certs[1].Serial)
}
