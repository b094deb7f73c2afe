package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A recording directory is measured whole, as du measures it: every
// file whatever its name (exact bytes may be kept as <n>.raw beside the
// .cast chunks), and files in directories below it.
func TestMeasureDirCountsEveryFile(t *testing.T) {
	du, err := exec.LookPath("du")
	if err != nil {
		t.Skip("no du")
	}
	dir := t.TempDir()
	files := map[string]int{
		"0.cast":         70 << 10,
		"0.raw":          300 << 10,
		"1.raw":          5,
		"chain.jsonl":    400,
		"seal.json":      300,
		"session.json":   900,
		"spool/2.raw.gz": 9000,
	}
	var apparent int64
	for name, n := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, n), 0o644); err != nil {
			t.Fatal(err)
		}
		apparent += int64(n)
	}
	u, err := measureDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Apparent < apparent {
		t.Errorf("apparent %d bytes, the files alone hold %d", u.Apparent, apparent)
	}
	out, err := exec.Command(du, "-s", "-B1", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if u.Disk != want {
		t.Errorf("on disk %d bytes, du says %d", u.Disk, want)
	}
}
