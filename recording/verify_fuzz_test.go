package recording

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
)

// smallSignedSession records a small sealed session: two channels, text,
// exact bytes, input and events, in a few chunks.
func smallSignedSession(t testing.TB) (dir string, pub ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := CreateSigned(t.TempDir(), Meta{ID: uuid.NewString(), Technician: "li", Target: "db", Start: time.Now()}, priv)
	if err != nil {
		t.Fatal(err)
	}
	for i, kind := range []string{"shell", "exec"} {
		c, err := s.Channel(ChannelInfo{Kind: kind, Command: "cat x"})
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if err := c.Stdout([]byte{byte('a' + i), byte('0' + j), 0xff, '\n'}); err != nil {
				t.Fatal(err)
			}
			if err := c.Event("x-stdin", "typed"); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock() // a chunk per round, as the once-a-second flush makes
			err := c.flushLocked()
			if err == nil {
				err = c.waitSyncsLocked()
			}
			c.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.End(time.Now(), "client closed", 3, 24); err != nil {
		t.Fatal(err)
	}
	return s.Dir(), pub
}

// recordedContent is what a reviewer is shown of a recording: every
// channel's events and the session's metadata.
func recordedContent(dir string) []string {
	var out []string
	names, _ := filepath.Glob(filepath.Join(dir, "*.cast"))
	sort.Strings(names)
	for _, name := range names {
		b, _ := os.ReadFile(name)
		cr, err := NewCastReader(bytes.NewReader(b), filepath.Base(name))
		if err != nil {
			out = append(out, "unreadable "+filepath.Base(name))
			continue
		}
		for {
			e, err := cr.Next()
			if err != nil {
				break
			}
			out = append(out, filepath.Base(name)+" "+e.Code+" "+e.Data)
		}
	}
	meta, _ := os.ReadFile(filepath.Join(dir, "session.json"))
	return append(out, string(meta))
}

// FuzzVerify tampers with one file of a sealed recording (overwrites,
// truncates or inserts bytes) and checks that Verify never panics and
// never calls OK a recording whose content differs from what was
// recorded.
func FuzzVerify(f *testing.F) {
	orig, pub := smallSignedSession(f)
	files, _ := os.ReadDir(orig)
	var names []string
	for _, e := range files {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	want := recordedContent(orig)
	if v, err := Verify(orig, pub); err != nil || !v.OK {
		f.Fatalf("the untouched recording does not verify: %v %v", err, v.Problems)
	}
	for i := range names {
		f.Add(uint8(i), uint16(0), uint8(0), []byte("x"))
		f.Add(uint8(i), uint16(10), uint8(1), []byte{})
		f.Add(uint8(i), uint16(20), uint8(2), []byte(" "))
		f.Add(uint8(i), uint16(5), uint8(2), []byte("\n{}\n"))
	}
	f.Fuzz(func(t *testing.T, file uint8, off uint16, mode uint8, data []byte) {
		dir := filepath.Join(t.TempDir(), filepath.Base(orig))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		target := names[int(file)%len(names)]
		for _, name := range names {
			b, _ := os.ReadFile(filepath.Join(orig, name))
			if name == target {
				at := min(int(off), len(b))
				switch mode % 3 {
				case 0: // overwrite
					b = append(slices.Clone(b[:at]), append(data, b[min(at+len(data), len(b)):]...)...)
				case 1: // truncate
					b = b[:at]
				case 2: // insert
					b = append(slices.Clone(b[:at]), append(data, b[at:]...)...)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		v, err := Verify(dir, pub)
		if err != nil || !v.OK {
			return // refused: what a tampered recording should get
		}
		if got := recordedContent(dir); !slices.Equal(got, want) {
			t.Fatalf("%s changed (mode %d at %d, %q), yet it verifies:\n%q\nwas\n%q", target, mode%3, off, data, got, want)
		}
	})
}

func TestVerifyFuzzSeeds(t *testing.T) {
	dir, pub := smallSignedSession(t)
	v, err := Verify(dir, pub)
	if err != nil || !v.OK {
		t.Fatalf("%v %v", err, v.Problems)
	}
	files, _ := os.ReadDir(dir)
	hardening.Report(t, "25", "FuzzVerify: a sealed recording of %d files, %d chunks, tampered one file at a time (overwrite, truncate, insert): verify never passes a recording whose shown content changed", len(files), v.Chunks)
}
