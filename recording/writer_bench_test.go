package recording

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The recorder benchmarks drive a real Channel into a real recording
// directory (b.TempDir(), so the disk's fsync is part of the cost), one
// event per call as the relay hands them over: what one relay read costs
// the recorder, in MB/s of payload, and the recording's bytes on disk per
// byte of payload (disk-B/B: the channel file, its seek index and
// chain.jsonl, apparent sizes; disk-B/key for keystrokes). Run them with
//
//	go test -run=NONE -bench=Recorder -benchmem ./recording/

// benchChannel opens the recording of one channel of a new session; the
// benchmark's timer starts after it.
func benchChannel(b *testing.B, info ChannelInfo) (*Session, *Channel) {
	b.Helper()
	_, _, s := newSessionTB(b)
	c, err := s.Channel(info)
	if err != nil {
		b.Fatal(err)
	}
	return s, c
}

// finishChannel closes c and s outside the timer and returns the bytes
// the channel left on disk.
func finishChannel(b *testing.B, s *Session, c *Channel) int64 {
	b.Helper()
	b.StopTimer()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		b.Fatal(err)
	}
	var disk int64
	for _, e := range entries {
		if e.Name() == "session.json" {
			continue // written once per session, whatever its size
		}
		fi, err := os.Stat(filepath.Join(s.Dir(), e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		disk += fi.Size()
	}
	if err := s.End(time.Now(), "done", 0, 0); err != nil {
		b.Fatal(err)
	}
	return disk
}

// benchSizes are relay read sizes: an interactive read, the relay's first
// buffer (32 KiB) and the buffer a bulk transfer grows to (256 KiB).
var benchSizes = []struct {
	name string
	n    int
}{{"4KiB", 4 << 10}, {"32KiB", 32 << 10}, {"256KiB", 256 << 10}}

// BenchmarkRecorderStdout records exact-bytes output (exec stdout, the
// SFTP replies of a download): base64 in "x-stdout" events.
func BenchmarkRecorderStdout(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			p := make([]byte, sz.n)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			s, c := benchChannel(b, ChannelInfo{Kind: "exec", Command: "cat data"})
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := c.Stdout(p); err != nil {
					b.Fatal(err)
				}
			}
			disk := finishChannel(b, s, c)
			b.ReportMetric(float64(disk)/float64(b.N*len(p)), "disk-B/B")
		})
	}
}

// terminalOutput returns n bytes of what a busy terminal shows: coloured
// lines, CR LF, some non-ASCII text; the last character may be cut, as
// a read cuts it.
func terminalOutput(n int) []byte {
	var out bytes.Buffer
	for i := 0; out.Len() < n; i++ {
		fmt.Fprintf(&out, "\x1b[32m%6d\x1b[0m %s — ok\r\n", i, strings.Repeat("-", 64))
	}
	return out.Bytes()[:n]
}

// BenchmarkRecorderPTY records terminal output: JSON text in "o" events.
// "binary" is output that is not UTF-8 (cat of a binary file, ZMODEM) and
// is also kept as exact bytes.
func BenchmarkRecorderPTY(b *testing.B) {
	type input struct {
		name string
		p    []byte
	}
	var inputs []input
	for _, sz := range benchSizes {
		inputs = append(inputs, input{"text-" + sz.name, terminalOutput(sz.n)})
	}
	bin := make([]byte, 32<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range bin {
		bin[i] = byte(rng.Uint32())
	}
	inputs = append(inputs, input{"binary-32KiB", bin})
	for _, in := range inputs {
		b.Run(in.name, func(b *testing.B) {
			s, c := benchChannel(b, ChannelInfo{PTY: true, Term: "xterm-256color", Kind: "shell", Cols: 200, Rows: 50})
			b.SetBytes(int64(len(in.p)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := c.Stdout(in.p); err != nil {
					b.Fatal(err)
				}
			}
			disk := finishChannel(b, s, c)
			b.ReportMetric(float64(disk)/float64(b.N*len(in.p)), "disk-B/B")
		})
	}
}

// BenchmarkRecorderKeystroke records one keystroke of the technician's
// and its echo from the target, the interactive case: per operation, an
// input event of one byte and an output event of one byte, each written
// to the file at once.
func BenchmarkRecorderKeystroke(b *testing.B) {
	for _, pty := range []bool{true, false} {
		name, info := "pty", ChannelInfo{PTY: true, Kind: "shell", Cols: 80, Rows: 24}
		if !pty {
			name, info = "exec", ChannelInfo{Kind: "exec", Command: "bash"}
		}
		b.Run(name, func(b *testing.B) {
			s, c := benchChannel(b, info)
			key := []byte{'k'}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := c.Stdin(key); err != nil {
					b.Fatal(err)
				}
				if err := c.Stdout(key); err != nil {
					b.Fatal(err)
				}
			}
			disk := finishChannel(b, s, c)
			b.ReportMetric(float64(disk)/float64(b.N), "disk-B/key")
		})
	}
}
