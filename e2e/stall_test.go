package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// freezeProxy forwards TCP connections to a server. Once frozen, it drops
// what the client sends while still reading what the server sends, like a
// client that went silent behind an open TCP window: nothing the client
// answers arrives, and nothing sekisho writes is held up by TCP.
type freezeProxy struct {
	addr       string
	frozen     atomic.Bool
	fromServer atomic.Int64
}

func startFreezeProxy(t *testing.T, server string) *freezeProxy {
	t.Helper()
	p := &freezeProxy{}
	p.addr = startTCPProxy(t, server, func(dir int, b []byte) []byte {
		if dir == toDialer {
			p.fromServer.Add(int64(len(b)))
		}
		if p.frozen.Load() {
			return nil
		}
		return b
	})
	return p
}

// lastSessionEnded waits until the variant has n sessions, all ended,
// and returns the latest.
func lastSessionEnded(t *testing.T, v *variant, n int, within time.Duration) session {
	t.Helper()
	var ss []session
	waitUntil(t, within, "the session to be registered as ended", func() bool {
		list, _ := exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
		ss = nil
		if json.Unmarshal(list, &ss) != nil || len(ss) != n {
			return false
		}
		for _, s := range ss {
			if s.EndedAt == "" {
				return false
			}
		}
		return true
	})
	latest := ss[0]
	for _, s := range ss {
		if s.StartedAt > latest.StartedAt {
			latest = s
		}
	}
	return latest
}

// TestSilentTechnicianEndsTheSession: a technician's client stops
// answering mid-session while its TCP connection stays open. sekisho's
// keepalives go unanswered and it ends the session after
// ssh.keepalive_count_max of them, with the reason in the register and
// the recording, which verifies.
func TestSilentTechnicianEndsTheSession(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  keepalive_interval: 1s\n  keepalive_count_max: 2\n"
	})
	proxy := startFreezeProxy(t, "127.0.0.1:"+v.port)
	cfg := &ssh.ClientConfig{User: "aiko+web-sg-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))},
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }}
	client, err := ssh.Dial("tcp", proxy.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdout, _ := sess.StdoutPipe()
	if err := sess.Start("echo started; sleep 600"); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "started\n" {
		t.Fatalf("session did not start: %q %v", line, err)
	}

	frozen := time.Now()
	proxy.frozen.Store(true)
	s := lastSessionEnded(t, v, 1, 30*time.Second)
	took := time.Since(frozen)
	if !strings.HasPrefix(s.EndReason, "technician unresponsive: 2 keepalives in a row unanswered") {
		t.Fatalf("end reason %q; want the technician unresponsive after 2 keepalives", s.EndReason)
	}
	if out, err := exec.Command(env.sekisho, "verify", "--config", v.config, s.ID).CombinedOutput(); err != nil {
		t.Fatalf("verify after the session ended: %v\n%s", err, out)
	}
	hardening.Report(t, "partition", "a technician's client silent behind an open TCP connection: session ended %.1f s later (keepalive 1 s × 2), reason in the register, recording verifies", took.Seconds())
}

// TestStalledKeyExchangeDuringDownload: a technician downloads through
// sekisho, rekeying every 256 KiB, and goes silent mid-download, so that
// sekisho is left waiting either for a window adjustment or in the
// middle of a key exchange, during which x/crypto holds back every packet
// but a bounded few (the CVE-2025-22869 class). Either way sekisho writes
// no more than the window and that bound, its memory stays flat, and the
// unanswered keepalives end the session.
func TestStalledKeyExchangeDuringDownload(t *testing.T) {
	hardening.Long(t)
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  keepalive_interval: 2s\n  keepalive_count_max: 3\n"
	})
	var silent []string
	for round := range 5 {
		proxy := startFreezeProxy(t, "127.0.0.1:"+v.port)
		cfg := &ssh.ClientConfig{User: "aiko+web-sg-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))},
			HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }}
		cfg.RekeyThreshold = 256 << 10 // a key exchange every 256 KiB each way
		client, err := ssh.Dial("tcp", proxy.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stdout, _ := sess.StdoutPipe()
		if err := sess.Start("yes sekisho-stalled-key-exchange | head -c 3000000000"); err != nil {
			t.Fatal(err)
		}
		// Go silent at a different point each round.
		silentAfter := int64(64+round*37) << 20
		var got int64
		buf := make([]byte, 256<<10)
		for got < silentAfter {
			n, err := stdout.Read(buf)
			got += int64(n)
			if err != nil {
				t.Fatalf("download ended after %d bytes: %v", got, err)
			}
		}
		before := rss(t, v)
		frozen := time.Now()
		proxy.frozen.Store(true)
		sentAtFreeze := proxy.fromServer.Load()
		s := lastSessionEnded(t, v, round+1, time.Minute)
		took := time.Since(frozen)
		client.Close()
		after := proxy.fromServer.Load() - sentAtFreeze
		if after > 8<<20 {
			t.Fatalf("round %d: sekisho wrote %d MiB to a silent technician; want at most the window and the packets held during a key exchange", round, after>>20)
		}
		if !strings.HasPrefix(s.EndReason, "technician unresponsive: 3 keepalives in a row unanswered") {
			t.Fatalf("round %d: end reason %q; want the technician unresponsive", round, s.EndReason)
		}
		if now := rss(t, v); now-before > 32<<20 {
			t.Fatalf("round %d: sekisho's memory grew by %d MiB while the technician was silent", round, (now-before)>>20)
		}
		if out, err := exec.Command(env.sekisho, "verify", "--config", v.config, s.ID).CombinedOutput(); err != nil {
			t.Fatalf("round %d: verify: %v\n%s", round, err, out)
		}
		silent = append(silent, fmt.Sprintf("silent after %d MiB: %d KiB more written, ended after %.1f s", got>>20, after>>10, took.Seconds()))
	}
	hardening.Report(t, "20", "5 downloads through sekisho rekeying every 256 KiB, the technician going silent at a different point each time (%s); sekisho's peak RSS %d MiB; every recording verifies",
		strings.Join(silent, "; "), peakRSS(t, v)>>20)
}

// rss is the variant server's resident set size in bytes.
func rss(t testing.TB, v *variant) int64 {
	t.Helper()
	return procStatus(t, v, "VmRSS:")
}
