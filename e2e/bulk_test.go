package e2e

import (
	"bytes"
	"crypto/sha256"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// Huge binary output, an idle gap and a terminal: the technician gets
// every byte, the recording holds the same bytes in many chunks and
// verifies, and replay shows what came after the gap.
func TestHugeBinaryOutputAndIdleGapRecorded(t *testing.T) {
	t.Parallel()
	marker := "bulk-" + randHex(t)
	// 8 MiB of random bytes, an idle gap, then a marker.
	cmd := sshCmd(ctxT(t), "aiko", "aiko+web-sg-01", "head -c 8388608 /dev/urandom; sleep 2; echo; echo "+marker)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ssh: %v", err)
	}
	if out.Len() < 8388608 || !bytes.HasSuffix(out.Bytes(), []byte(marker+"\n")) {
		t.Fatalf("received %d bytes", out.Len())
	}
	s, events := endedSession(t, "aiko", "web-sg-01", marker)
	recorded := streams(t, events, "x-stdout")
	if sha256.Sum256([]byte(recorded)) != sha256.Sum256(out.Bytes()) {
		t.Fatalf("the recording holds %d bytes that differ from the %d received", len(recorded), out.Len())
	}
	v := sekishoCLI(t, "verify", "--json", s.ID)
	i := strings.Index(v, `"chunks": `)
	n, _ := strconv.Atoi(strings.TrimRight(strings.Fields(v[i+len(`"chunks": `):])[0], ","))
	if !strings.Contains(v, `"ok": true`) || n < 8 {
		t.Errorf("verify: %d chunks\n%s", n, v)
	}
	// The gap is in the event times, and replay with capped idle shows
	// the marker.
	if !gapAtLeast(events, 1.5) {
		t.Errorf("no idle gap of 1.5s in the event times")
	}
	rp, err := exec.CommandContext(ctxT(t), env.sekisho, "replay", "--config", env.state.Config, "--max-idle", "10ms", "--speed", "1000", s.ID).Output()
	if err != nil || !bytes.Contains(rp, []byte(marker)) {
		t.Errorf("replay: %v, marker shown %v", err, bytes.Contains(rp, []byte(marker)))
	}
	hardening.Report(t, "14", "8 MiB of random output, a 2 s idle gap and a marker: %d of %d received bytes recorded, identical by SHA-256, in %d verified chunks; the gap in the event times, replay shows the marker", len(recorded), out.Len(), n)
}

// gapAtLeast reports whether two consecutive events of a listing are at
// least d seconds apart.
func gapAtLeast(events string, d float64) bool {
	prev := -1.0
	for _, line := range strings.Split(events, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		t, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		if prev >= 0 && t-prev >= d {
			return true
		}
		prev = t
	}
	return false
}
