package recording

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func newSessionTB(tb testing.TB) (root, id string, s *Session) {
	tb.Helper()
	root = tb.TempDir()
	id = uuid.NewString()
	s, err := Create(root, Meta{ID: id, Technician: "alice", Target: "web1", Start: time.Now()})
	if err != nil {
		tb.Fatalf("Create: %v", err)
	}
	return root, id, s
}

// benchBytes is the size of the recording BenchmarkReplayStart makes:
// 256 MiB, or SEKISHO_BENCH_BYTES (1073741824 for the 1 GiB target).
func benchBytes(b *testing.B) int64 {
	v := os.Getenv("SEKISHO_BENCH_BYTES")
	if v == "" {
		return 256 << 20
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1<<20 {
		b.Fatalf("SEKISHO_BENCH_BYTES=%q: want a number of bytes, at least 1048576", v)
	}
	return n
}

// firstOutput notes when the first recorded output is written to it: the
// write after the channel's banner.
type firstOutput struct {
	start  time.Time
	writes int
	at     time.Duration
}

func (w *firstOutput) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == 2 {
		w.at = time.Since(w.start)
	}
	return len(p), nil
}

// BenchmarkReplayStart measures how soon a replay from near the end of a
// large terminal recording, made by the real writer, shows its first
// recorded output: the seek index at work. The target is well under a
// second for 1 GiB (SEKISHO_BENCH_BYTES=1073741824). The sub-benchmark
// "no-index" shows the one-time cost of a recording without an index
// (made before the index existed): a scan of the whole file.
func BenchmarkReplayStart(b *testing.B) {
	size := benchBytes(b)
	root, id, s := newSessionTB(b)
	c, err := s.Channel(ChannelInfo{PTY: true, Kind: "shell", Cols: 200, Rows: 50})
	if err != nil {
		b.Fatal(err)
	}
	// Output as a busy terminal sends it: 16 KiB reads of coloured lines.
	var chunk bytes.Buffer
	for chunk.Len() < 16<<10 {
		fmt.Fprintf(&chunk, "\x1b[32mrow\x1b[0m %s\r\n", strings.Repeat("-", 70))
	}
	for written := int64(0); written < size; written += int64(chunk.Len()) {
		if err := c.Stdout(chunk.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(c.start)
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	if err := s.End(time.Now(), "done", 0, 0); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(s.Dir(), "1.cast")
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	from := elapsed * 99 / 100
	b.Logf("recording of %d MiB, %v long; replay from %v", fi.Size()>>20, elapsed.Round(time.Millisecond), from.Round(time.Millisecond))

	run := func(b *testing.B, before func()) {
		var total time.Duration
		for range b.N {
			b.StopTimer()
			before()
			w := &firstOutput{}
			b.StartTimer()
			w.start = time.Now()
			if err := Replay(context.Background(), w, root, id, ReplayOptions{Instant: true, From: from}); err != nil {
				b.Fatal(err)
			}
			if w.at == 0 {
				b.Fatal("the replay showed no recorded output")
			}
			total += w.at
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-to-first-byte")
	}
	b.Run("index", func(b *testing.B) { run(b, func() {}) })
	b.Run("no-index", func(b *testing.B) {
		run(b, func() {
			if err := os.Remove(indexPath(path)); err != nil {
				b.Fatal(err)
			}
		})
	})
}
