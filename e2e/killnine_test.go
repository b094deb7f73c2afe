package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestKillNineAtRandomPoints: sekisho is killed with SIGKILL at a random
// moment, again and again, while sessions start, stream output, upload,
// and end (so that kills land while a chunk is written, while a session
// is registered, while a recording is sealed). After every restart no
// session is left live in the register, every recording is found and
// verifies (complete, or sealed incomplete up to its last sync), and the
// next technician is served. Recordings lost: none.
func TestKillNineAtRandomPoints(t *testing.T) {
	hardening.Long(t)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SEKISHO_KILL_SEED"), 10, 64); err == nil {
		seed = s // to replay a failure
	}
	t.Logf("random kill points from seed %d (SEKISHO_KILL_SEED replays them)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	v := startVariant(t, nil)
	upload := bytes.Repeat([]byte("upload-line-to-be-recorded\n"), 400_000) // about 11 MB

	const rounds = 30
	var delays []string
	for round := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		marker := fmt.Sprintf("round-%d-%s", round, randHex(t))
		cmds := []*exec.Cmd{
			v.ssh(ctx, "aiko", "aiko+web-sg-01", "echo "+marker+"; seq 1 2000000"),
			v.ssh(ctx, "aiko", "aiko+web-sg-01", "cat > /dev/null; echo uploaded"),
			v.ssh(ctx, "aiko", "aiko+web-sg-01", "echo short-"+marker),
			v.ssh(ctx, "aiko", "aiko+web-sg-01", "echo "+marker+"; sleep 60"),
		}
		cmds[1].Stdin = bytes.NewReader(upload)
		for _, c := range cmds {
			c.Stdout, c.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		}
		// The fault is injected at a random moment: not a wait for a
		// condition, but the point of the test.
		delay := time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		<-time.After(delay)
		delays = append(delays, fmt.Sprintf("%d", delay.Milliseconds()))
		v.kill(t, syscall.SIGKILL)
		for i, c := range cmds {
			if err := c.Wait(); ctx.Err() != nil {
				t.Fatalf("round %d: client %d still running 2 minutes after the kill: %v", round, i, err)
			}
		}
		cancel()
		v.start(t)
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "served-"+marker), nil)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "served-"+marker {
			t.Fatalf("round %d: after the restart: exit %d, stdout %q, stderr %q", round, r.code, r.stdout, r.stderr)
		}
	}

	// Every session the register knows is ended, and every recording
	// verifies.
	var ss []session
	var live []string
	deadline := time.Now().Add(time.Minute)
	for {
		out, _ := exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
		ss, live = nil, nil
		if err := json.Unmarshal(out, &ss); err != nil {
			t.Fatalf("sessions --json: %v\n%s", err, out)
		}
		for _, s := range ss {
			if s.EndedAt == "" {
				live = append(live, fmt.Sprintf("%+v", s))
			}
		}
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions never ended in the register after the kills:\n%s", strings.Join(live, "\n"))
		}
		<-time.After(100 * time.Millisecond)
	}
	complete, incomplete, refused := 0, 0, 0
	for _, s := range ss {
		if strings.HasPrefix(s.EndReason, "refused") {
			refused++ // never connected: no recording was kept
			continue
		}
		out, err := exec.Command(env.sekisho, "verify", "--config", v.config, s.ID).CombinedOutput()
		switch {
		case err != nil:
			t.Errorf("session %s (%s): verify failed: %v\n%s", s.ID, s.EndReason, err, out)
		case strings.Contains(string(out), "OK, INCOMPLETE"):
			incomplete++
		case strings.Contains(string(out), "OK"):
			complete++
		default:
			t.Errorf("session %s: verify said %s", s.ID, out)
		}
	}
	if t.Failed() {
		return
	}
	if incomplete == 0 {
		t.Fatalf("no recording was cut off by the %d kills: the kills did not land mid-session", rounds)
	}
	hardening.Report(t, "kill", "SIGKILL at %d random moments (%s ms after 4 sessions started: output, an 11 MB upload, a short one, an idle one): %d sessions in the register, all ended; %d recordings complete and %d sealed incomplete, every one verifies; %d refused while the node went down; recordings lost 0; a technician served after every restart",
		rounds, strings.Join(delays, ", "), len(ss), complete, incomplete, refused)
	hardening.Report(t, "25", "%d kill -9 at random points while sessions streamed, uploaded, started and ended: %d recordings, none lost, %d sealed incomplete and verifiable up to their last sync", rounds, complete+incomplete, incomplete)
}
