package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// vmRSS returns a process's resident memory in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// castBytes is the size of every channel recording under dir: event
// streams and exact bytes.
func castBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".cast") || strings.HasSuffix(p, ".raw")) {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestTargetFloodWhileClientStopsReading: the target pours out 4 GiB
// while the technician's client reads nothing. sekisho stops reading the
// target once the windows are full, so neither its memory nor the
// recording grows without bound; others are served meanwhile; and when
// the client finally leaves, the recording verifies.
func TestTargetFloodWhileClientStopsReading(t *testing.T) {
	v := startVariant(t, nil)
	pidB, err := os.ReadFile(filepath.Join(v.dir, "sekisho.db.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidB)))
	before := vmRSS(t, pid)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// ssh writes into a pipe nobody reads: it stalls once the pipe is
	// full, and stops reading its connection.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	flood := v.ssh(ctx, "aiko", "aiko+db-jp-01", "head", "-c", "4294967296", "/dev/zero")
	flood.Stdout = pw
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer flood.Process.Kill()

	// Wait until the recording stops growing: the stall has reached the
	// target. Stable means unchanged for a full second.
	var last int64 = -1
	stableSince := time.Now()
	waitUntil(t, 60*time.Second, "the flood to stall", func() bool {
		n := castBytes(v.dir)
		if n != last || n == 0 {
			last, stableSince = n, time.Now()
			return false
		}
		return time.Since(stableSince) >= time.Second
	})
	const bound = 64 << 20
	if last > bound {
		t.Fatalf("%d bytes recorded while the client read nothing; want the stall within %d", last, bound)
	}
	grew := vmRSS(t, pid) - before
	t.Logf("stalled with %d bytes recorded; sekisho's RSS grew by %d bytes", last, grew)
	if grew > bound {
		t.Fatalf("sekisho's RSS grew by %d bytes while the client read nothing; want under %d", grew, bound)
	}

	r := run(t, v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "served"), nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "served" {
		t.Fatalf("another session during the stall: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The client leaves: the session ends and its recording verifies.
	flood.Process.Kill()
	flood.Wait()
	var seals []string
	waitUntil(t, 30*time.Second, "both recordings to be sealed", func() bool {
		seals, _ = filepath.Glob(filepath.Join(v.dir, "recordings", "*", "seal.json"))
		return len(seals) == 2
	})
	for _, s := range seals {
		id := filepath.Base(filepath.Dir(s))
		out, err := exec.Command(env.sekisho, "verify", "--config", v.config, id).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("verify %s: %v\n%s", id, err, out)
		}
	}
	hardening.Report(t, "23", "a target pouring out 4 GiB to a client that reads nothing: stalled with %.1f MiB recorded, sekisho's RSS %+.1f MiB; another session served meanwhile; both recordings verify after the client leaves", float64(last)/(1<<20), float64(grew)/(1<<20))
}
