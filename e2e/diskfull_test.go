package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// tinyDisk mounts a 1 MiB tmpfs and returns its path; it is unmounted
// when the test ends. The tests run as root in CI (mounting needs it).
func tinyDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the disk-full test (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes to dir until the disk is full, and returns the filler.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return path
		}
	}
}

// A full disk: a session is refused at the start, a live one ends with a
// message when its recording can no longer be written; the server serves
// on once there is room again.
func TestFullDiskFailsClosed(t *testing.T) {
	t.Parallel()
	disk := tinyDisk(t)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrecordings: recordings\n", "\nrecordings: "+disk+"/recordings\n", 1)
	})

	// Live, then the disk fills up under it.
	l := startLiveRunning(t, v, "aiko", "aiko+web-sg-01", "echo started; while true; do echo tick-tick-tick-tick; sleep 0.05; done")
	filler := fill(t, disk)
	filled := time.Now()
	if stderr := l.endsWithin(t, 60*time.Second, "on a full disk"); !strings.Contains(stderr, "can no longer be recorded, so it is ended") {
		t.Errorf("the technician was not told why: %q", stderr)
	}
	endedAfter := time.Since(filled)

	// At the start: refused, and told why.
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo should-not-run"), nil)
	if r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "cannot be recorded, so it is refused") {
		t.Errorf("on a full disk: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// Room again: sessions go through.
	os.Remove(filler)
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo room-again"), nil); r.code != 0 || r.stdout != "room-again\n" {
		t.Errorf("after freeing space: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "disk", "the recording file system filled under a live session: the session ended %.1f s after the disk was full, the technician told why; a new session refused while full; sessions served again once there is room", endedAfter.Seconds())
}
