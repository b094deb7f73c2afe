package recording

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestReleaseAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v769", true},
		{"5.8.0", true},
		{"5.10.0-28-amd64", true},
		{"5.4.0-150-generic", false},
		{"4.19.0", false},
		{"5", false},
		{"x.y", false},
	} {
		if got := releaseAtLeast(tc.release, 5, 8); got != tc.want {
			t.Errorf("releaseAtLeast(%q, 5, 8) = %v, want %v", tc.release, got, tc.want)
		}
	}
}

// A syncfs that reports a writeback error may report it through a file
// other than the one that failed: from then on the pass fsyncs every file
// of that recording directory itself, which tells which one failed.
func TestSyncfsErrorMeansFileByFile(t *testing.T) {
	if !syncfsReportsErrors {
		t.Skip("syncfs does not report writeback errors on this kernel")
	}
	calls := 0
	syncFS = func(*os.File) error { calls++; return syscall.EIO }
	t.Cleanup(func() { syncFS = syncfs })
	var p syncPass
	root := t.TempDir()
	chunksOf := func() []*passChunk {
		var cks []*passChunk
		for range 3 {
			s, err := Create(root, Meta{ID: uuid.NewString(), Start: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.Channel(ChannelInfo{PTY: true, Kind: "shell"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.mu.Lock()
			c.ev.f.Write([]byte("x"))
			c.mu.Unlock()
			cks = append(cks, &passChunk{c: c, fl: &c.ev, f: c.ev.f})
		}
		return cks
	}
	cks := chunksOf()
	p.syncAll(cks, func(pc *passChunk) *os.File { return pc.f })
	for _, pc := range cks {
		if pc.err != nil {
			t.Errorf("a file that fsyncs was failed by the syncfs error: %v", pc.err)
		}
	}
	if calls != 1 || !p.perFile[root] {
		t.Fatalf("syncfs called %d times, file by file %v; want once, then file by file", calls, p.perFile[root])
	}
	p.syncAll(chunksOf(), func(pc *passChunk) *os.File { return pc.f })
	if calls != 1 {
		t.Errorf("syncfs called again (%d) after it reported an error", calls)
	}
}
