package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestFailedLoginsThrottleTheSource: a source whose authentication
// attempts keep failing (li's key for aiko's login) is refused before the
// handshake once ssh.max_auth_failures_per_source is reached, the refusal
// is audited, and a technician from another address logs in meanwhile.
func TestFailedLoginsThrottleTheSource(t *testing.T) {
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  max_auth_failures_per_source: 10\n"
	})
	li := techSigner(t, "li")
	attempt := func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
		nc, err := d.Dial("tcp", "127.0.0.1:"+v.port)
		if err != nil {
			return err
		}
		defer nc.Close()
		cfg := &ssh.ClientConfig{User: "aiko+db-jp-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(li)},
			HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }, Timeout: 10 * time.Second}
		c, _, _, err := ssh.NewClientConn(nc, nc.RemoteAddr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	for i := range 10 {
		err := attempt()
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("attempt %d: %v; want an authentication failure", i+1, err)
		}
	}
	// The eleventh is not even answered.
	err := attempt()
	if err == nil || strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("after 10 failures: %v; want the connection closed before the handshake", err)
	}
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo", "served"), nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "served" {
		t.Fatalf("a technician from another address: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var audited bool
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && strings.Contains(e["detail"], "max_auth_failures_per_source") && strings.Contains(e["detail"], "127.0.0.2") {
			audited = true
		}
	}
	if !audited {
		t.Fatal("the throttled source is not in the audit log")
	}
	hardening.Report(t, "24", "10 failed logins from one source (max_auth_failures_per_source 10): the 11th connection closed before the handshake, the throttled source audited; a technician from another address served meanwhile")
}
