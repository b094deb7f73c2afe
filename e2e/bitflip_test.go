package e2e

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// flipProxy is a TCP proxy that forwards bytes unchanged until it is
// armed, then flips one bit in the next chunk going one way: a network
// that corrupts a packet of an established SSH connection.
type flipProxy struct {
	address string

	mu     sync.Mutex
	armed  int      // direction to corrupt (toUpstream or toDialer), or -1
	passed [2]int64 // bytes forwarded each way
	// flippedAfter receives how many bytes had passed that way before
	// the flipped one.
	flippedAfter chan int64
}

func startFlipProxy(t *testing.T, upstream string) *flipProxy {
	t.Helper()
	p := &flipProxy{armed: -1, flippedAfter: make(chan int64, 1)}
	p.address = startTCPProxy(t, upstream, func(dir int, b []byte) []byte {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.armed == dir {
			// The last byte of a write is in the packet's MAC tag
			// (OpenSSH and x/crypto write whole packets): the packet
			// arrives whole and fails authentication.
			b[len(b)-1] ^= 0x10
			p.armed = -1
			p.flippedAfter <- p.passed[dir] + int64(len(b)) - 1
		}
		p.passed[dir] += int64(len(b))
		return b
	})
	return p
}

func (p *flipProxy) addr() string { return p.address }

// arm makes the next chunk going dir carry a flipped bit.
func (p *flipProxy) arm(dir int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = dir
}

// variantSession waits until a session of the variant whose recorded
// output contains marker has ended, and returns its register entry.
func variantSession(t *testing.T, v *variant, marker string) session {
	t.Helper()
	var found session
	waitUntil(t, 30*time.Second, "the session showing "+marker+" to end in the register", func() bool {
		out, err := v.cli(t, "sessions", "--json", "--limit", "1000")
		if err != nil {
			t.Fatalf("sekisho sessions: %v\n%s", err, out)
		}
		var list []session
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("sekisho sessions --json: %v\n%s", err, out)
		}
		for _, s := range list {
			if s.EndedAt == "" {
				continue
			}
			if ev, err := v.cli(t, "replay", "--events", s.ID); err == nil && strings.Contains(ev, marker) {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// recordedEndReason is the end reason written into a recording's signed
// metadata.
func recordedEndReason(t *testing.T, v *variant, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(v.dir, "recordings", id, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		EndReason string `json:"end_reason"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatalf("session.json of %s: %v", id, err)
	}
	return meta.EndReason
}

// TestCorruptedPacketEndsSessionCleanly: a network that flips one bit of
// an established SSH connection, on the technician's leg or on the
// target's, in either direction. Whichever side receives the corrupted
// packet fails its authentication and drops the connection: the
// technician's ssh ends, the session ends in the register and in its
// recording with a reason, the recording verifies, the end is audited,
// and sekisho serves the next technician.
func TestCorruptedPacketEndsSessionCleanly(t *testing.T) {
	t.Parallel()
	target := targetNamed(t, "db-jp-01").Address
	targetLeg := startFlipProxy(t, target)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "address: "+target, "address: "+targetLeg.addr(), 1)
	})
	techLeg := startFlipProxy(t, "127.0.0.1:"+v.port)

	for _, tc := range []struct {
		name  string
		proxy *flipProxy
		dir   int
	}{
		{"technician to sekisho", techLeg, toUpstream},
		{"sekisho to technician", techLeg, toDialer},
		{"sekisho to target", targetLeg, toUpstream},
		{"target to sekisho", targetLeg, toDialer},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			marker := "flip-" + randHex(t)
			cmd := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo "+marker+"; cat")
			for i, a := range cmd.Args {
				if a == "-p" {
					cmd.Args[i+1] = strings.TrimPrefix(techLeg.addr(), "127.0.0.1:")
				}
			}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			waitUntil(t, 30*time.Second, "the session to start", func() bool { return strings.Contains(stdout.String(), marker) })

			tc.proxy.arm(tc.dir)
			flipped := time.Now()
			// A line typed by the technician crosses both legs both ways
			// (cat echoes it).
			io.WriteString(stdin, "poke\n")
			var after int64
			select {
			case after = <-tc.proxy.flippedAfter:
			case <-time.After(30 * time.Second):
				t.Fatal("no packet crossed the armed proxy")
			}
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("the technician's ssh still runs 30 s after the corrupted packet; stderr %q", stderr.String())
			}
			took := time.Since(flipped)
			if cmd.ProcessState.ExitCode() == 0 {
				t.Fatalf("ssh exited 0 after a corrupted packet; stderr %q", stderr.String())
			}

			s := variantSession(t, v, marker)
			if s.EndReason == "" {
				t.Fatalf("session %s ended without a reason", s.ID)
			}
			// Where sekisho itself reads the flipped bit, the reason
			// names the failure; elsewhere the peer hangs up.
			if want := map[string]string{"technician to sekisho": "technician connection failed: ", "target to sekisho": "target connection failed: "}[tc.name]; !strings.HasPrefix(s.EndReason, want) {
				t.Fatalf("session %s ended with %q; want a reason starting %q", s.ID, s.EndReason, want)
			}
			sealed := recordedEndReason(t, v, s.ID)
			if sealed == "" {
				t.Errorf("the recording of %s has no end reason", s.ID)
			}
			if out, err := v.cli(t, "verify", s.ID); err != nil || !strings.Contains(out, s.ID+": OK, complete;") {
				t.Errorf("verify after the corrupted packet (%v):\n%s", err, out)
			}
			audited := false
			for _, e := range v.audit(t) {
				audited = audited || (e["kind"] == "session.end" && e["session"] == s.ID && strings.Contains(e["detail"], s.EndReason))
			}
			if !audited {
				t.Errorf("the end of session %s is not audited", s.ID)
			}

			// The process lives and serves another technician, on both legs.
			r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo", "next"), nil)
			if r.code != 0 || strings.TrimSpace(r.stdout) != "next" {
				t.Fatalf("the next technician after the corrupted packet: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			hardening.Report(t, "19", "bit flip %s after %d bytes: ssh exit %d in %.1f s, recording sealed with reason %q, end audited; next login ok",
				tc.name, after, cmd.ProcessState.ExitCode(), took.Seconds(), sealed)
		})
	}
}
