package e2e

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestBannerOnlyFloodDoesNotLockOutTechnicians: a source that opens
// hundreds of connections and never finishes a handshake (slowloris)
// gets ssh.max_unauthenticated_per_source of them; the rest are closed
// before sekisho's banner, the refusal is audited once per window (not
// once per connection), and a technician from another address logs in
// and works meanwhile. Once the flood ends, the source is served again.
func TestBannerOnlyFloodDoesNotLockOutTechnicians(t *testing.T) {
	const limit, flood = 20, 300
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  max_unauthenticated_per_source: 20\n  auth_timeout: 2m\n"
	})
	addr := net.JoinHostPort("127.0.0.1", v.port)
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}

	// banner reports whether the server sent its SSH banner (true) or
	// closed the connection first (false).
	banner := func(c net.Conn) (bool, error) {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if strings.HasPrefix(line, "SSH-2.0-") {
			return true, nil
		}
		if err != nil && !isTimeout(err) {
			return false, nil // closed
		}
		return false, err
	}

	conns := make([]net.Conn, flood)
	got := make([]bool, flood)
	errs := make(chan error, flood)
	var wg sync.WaitGroup
	for i := range flood {
		c, err := attacker.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		conns[i] = c
		c.Write([]byte("SSH-2.0-slowloris\r\n")) // and then nothing
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := banner(c)
			got[i] = ok
			if err != nil {
				errs <- err
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a flood connection neither got a banner nor was closed: %v", err)
	}
	served := 0
	for _, ok := range got {
		if ok {
			served++
		}
	}
	if served != limit {
		t.Fatalf("%d of %d stalled connections from one source were served; want exactly %d (ssh.max_unauthenticated_per_source)", served, flood, limit)
	}

	// A technician from another address logs in and works meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	loginStart := time.Now()
	r := run(t, v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "still-served"), nil)
	loginTook := time.Since(loginStart)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "still-served" {
		t.Fatalf("technician during the flood: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The refusals are audited, once for this window, with their count.
	var refusals []string
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && strings.Contains(e["detail"], "before the handshake") {
			refusals = append(refusals, e["detail"])
		}
	}
	if len(refusals) != 1 || !strings.Contains(refusals[0], "127.0.0.2") || !strings.Contains(refusals[0], "max_unauthenticated_per_source") {
		t.Fatalf("audited pre-handshake refusals: %q; want one naming 127.0.0.2 and the limit", refusals)
	}

	// The flood ends: the source is served again.
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := attacker.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ok, _ := banner(c)
		c.Close()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the source was still refused 30 s after its connections closed")
		}
	}
	hardening.Report(t, "21", "%d connections from one source sending a banner and nothing more: %d served (max_unauthenticated_per_source), %d closed before the banner, audited once with the count; a technician from another address logged in and ran a command in %.1f s meanwhile; the source served again after the flood", flood, served, flood-served, loginTook.Seconds())
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
