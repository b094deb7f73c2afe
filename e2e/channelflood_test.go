package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// goroutines reads go_goroutines from a sekisho metrics endpoint.
func goroutines(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatal("no go_goroutines in the metrics")
	return 0
}

// TestChannelFloodLeavesNothingBehind: an authenticated technician opens
// 20,000 channels sekisho refuses (x11, a made-up type, direct-tcpip to
// a destination no rule names), in a loop on one session. Goroutines stay
// flat, the session still works, and the audit log gets the first 100
// refusals one by one and then one line with the count, not 20,000 rows.
func TestChannelFloodLeavesNothingBehind(t *testing.T) {
	metrics := freePort(t)
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nmetrics:\n  listen: 127.0.0.1:" + metrics + "\n"
	})
	maddr := "127.0.0.1:" + metrics
	signer := techSigner(t, "aiko")
	cfg := &ssh.ClientConfig{User: "aiko+db-jp-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// The variant's host key is new to this test, as with v.ssh.
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }}
	client, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// A first session settles the connection's own goroutines.
	if out, err := runOn(client, "echo before"); err != nil || out != "before\n" {
		t.Fatalf("first session: %q, %v", out, err)
	}
	before := goroutines(t, maddr)

	const flood = 20000
	for i := range flood {
		var err error
		switch i % 3 {
		case 0:
			_, _, err = client.OpenChannel("x11", ssh.Marshal(struct {
				Addr string
				Port uint32
			}{"127.0.0.1", 6000}))
		case 1:
			_, _, err = client.OpenChannel("made-up@example.com", nil)
		default:
			_, err = client.Dial("tcp", "127.0.0.1:9")
		}
		if err == nil {
			t.Fatalf("channel %d was accepted", i)
		}
	}
	after := goroutines(t, maddr)
	if after > before+20 {
		t.Fatalf("goroutines grew from %d to %d after %d refused channels", before, after, flood)
	}
	if out, err := runOn(client, "echo after"); err != nil || out != "after\n" {
		t.Fatalf("session after the flood: %q, %v", out, err)
	}
	client.Close()

	var one, summary int
	waitUntil(t, 30*time.Second, "the session to end and its refusals to be counted", func() bool {
		one, summary = 0, 0
		for _, e := range v.audit(t) {
			if e["kind"] != "refused" {
				continue
			}
			switch {
			case strings.HasPrefix(e["detail"], "channel "):
				one++
			case strings.Contains(e["detail"], fmt.Sprintf("%d more channels refused after the first 100", flood-100)):
				summary++
			}
		}
		return summary > 0
	})
	if one != 100 || summary != 1 {
		t.Fatalf("audit: %d single refusals and %d summaries; want 100 and 1", one, summary)
	}
	hardening.Report(t, "22", "%d refused channels (x11, an unknown type, direct-tcpip to a port the rule does not allow) on one session: goroutines %d before, %d after; the session still runs commands", flood, before, after)
	hardening.Report(t, "24", "%d refused channels on one session: the audit log gets %d single refusals and %d summary counting the rest", flood, one, summary)
}

// runOn runs a command on a new session of client.
func runOn(client *ssh.Client, cmd string) (string, error) {
	s, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.Output(cmd)
	return string(out), err
}

// techSigner is a demo technician's private key, for x/crypto clients.
func techSigner(t *testing.T, name string) ssh.Signer {
	t.Helper()
	pem, err := os.ReadFile(env.state.Keys[name])
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
