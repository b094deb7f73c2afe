package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestBannerOnlyFloodDoesNotLockOutTechnicians: a source that opens
// hundreds of connections and never finishes a handshake (slowloris)
// holds ssh.max_unauthenticated_per_source of them at most: each newer
// one takes the place of its oldest, which sekisho closes. The closing is
// audited per burst (not once per connection), and a technician from
// another address logs in and works meanwhile.
func TestBannerOnlyFloodDoesNotLockOutTechnicians(t *testing.T) {
	const limit, flood = 20, 300
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  max_unauthenticated_per_source: 20\n  auth_timeout: 2m\n"
	})
	addr := net.JoinHostPort("127.0.0.1", v.port)
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}

	// Each flood connection sends a banner and nothing more, and reads
	// until sekisho closes it.
	conns := make([]net.Conn, flood)
	var banners, closed atomic.Int64
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
			r := bufio.NewReader(c)
			if line, _ := r.ReadString('\n'); strings.HasPrefix(line, "SSH-2.0-") {
				banners.Add(1)
			}
			io.Copy(io.Discard, r)
			closed.Add(1)
		}()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	waitUntil(t, 60*time.Second, "sekisho to close all but the newest of the stalled connections", func() bool {
		return closed.Load() >= flood-limit
	})

	// A technician from another address logs in and works meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	loginStart := time.Now()
	r := run(t, v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "still-served"), nil)
	loginTook := time.Since(loginStart)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "still-served" {
		t.Fatalf("technician during the flood: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Nothing more was closed: the source holds its places, and the
	// technician from elsewhere took none of them.
	if n := closed.Load(); n != flood-limit {
		t.Fatalf("%d of %d stalled connections from one source closed by sekisho; want %d (all but ssh.max_unauthenticated_per_source)", n, flood, flood-limit)
	}

	// The closing is audited for the burst, not once per connection.
	var refusals []string
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && strings.HasPrefix(e["source"], "127.0.0.2") {
			refusals = append(refusals, e["detail"])
		}
	}
	if len(refusals) == 0 || len(refusals) > 2 || !strings.Contains(strings.Join(refusals, "\n"), "ssh.max_unauthenticated_per_source (20) reached for 127.0.0.2") {
		t.Fatalf("audited refusals: %q; want one for the burst (and one counting the rest if its window ended) naming 127.0.0.2 and the limit", refusals)
	}
	hardening.Report(t, "21", "%d connections from one source sending a banner and nothing more: %d got sekisho's banner, %d held (max_unauthenticated_per_source), %d closed to make room for newer ones from that source, audited for the burst in %d row(s); a technician from another address logged in and ran a command in %.1f s meanwhile", flood, banners.Load(), flood-closed.Load(), closed.Load(), len(refusals), loginTook.Seconds())
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
