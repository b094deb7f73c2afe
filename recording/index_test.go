package recording

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestCrossesStep(t *testing.T) {
	for _, tc := range []struct {
		off  int64
		n    int
		want bool
	}{
		{0, 100, false}, // the header
		{1, 10, false},
		{indexStep - 10, 10, false},
		{indexStep - 10, 11, true},
		{indexStep, 1, true},
		{indexStep + 1, indexStep - 1, false},
		{indexStep + 1, indexStep, true},
		{10, 3 * indexStep, true},
		{5 * indexStep, 0, false},
	} {
		if got := crossesStep(tc.off, tc.n); got != tc.want {
			t.Errorf("crossesStep(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
}

func TestLoadIndex(t *testing.T) {
	for _, tc := range []struct {
		name, idx string
		want      []indexEntry
	}{
		{"empty", "", nil},
		{"sound", "1.500000 100\n2.000000 300\n", []indexEntry{{1.5, 100}, {2, 300}}},
		{"cut last line", "1.5 100\n2 30", []indexEntry{{1.5, 100}}},
		{"garbled lines", "1.5 100\nx y\n\n1.7\n-1 200\nNaN 250\n+Inf 260\n2 -5\n2 0\n2 300\n", []indexEntry{{1.5, 100}, {2, 300}}},
		{"unordered", "2 300\n1.5 100\n", []indexEntry{{1.5, 100}, {2, 300}}},
		{"time going back", "1.5 100\n1 200\n2 300\n", []indexEntry{{1.5, 100}, {2, 300}}},
		{"same offset twice", "1.5 100\n1.6 100\n", []indexEntry{{1.5, 100}}},
		{"binary", "\x00\xff\xfe 1\n", nil},
	} {
		p := filepath.Join(t.TempDir(), "1.cast.idx")
		must(t, os.WriteFile(p, []byte(tc.idx), 0o600))
		if got := loadIndex(p); !reflect.DeepEqual(got, tc.want) && len(got)+len(tc.want) > 0 {
			t.Errorf("%s: loadIndex = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := loadIndex(filepath.Join(t.TempDir(), "missing.idx")); got != nil {
		t.Errorf("loadIndex of a missing file = %v", got)
	}
}

func TestAfter(t *testing.T) {
	es := []indexEntry{{1, 10}, {2, 20}, {2, 30}, {5, 40}}
	for _, tc := range []struct {
		from float64
		want int
	}{{0, 0}, {1, 0}, {1.5, 1}, {2, 1}, {2.5, 3}, {5, 3}, {9, 4}} {
		if got := after(es, tc.from); got != tc.want {
			t.Errorf("after(%v) = %d, want %d", tc.from, got, tc.want)
		}
	}
}

// The index the writer makes is the one a scan of the file makes, entry
// for entry, and every entry points at its event.
func TestIndexWriterMatchesScan(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	// Lines of many sizes, some longer than a step.
	for i := range 300 {
		advance(c, 10*time.Millisecond)
		n := (i * 7919) % (20 << 10)
		if i%50 == 0 {
			n = indexStep + 17
		}
		must(t, c.Stdout([]byte(strings.Repeat("é", n/2)+"\r\n")))
		must(t, c.Stdin([]byte("x")))
	}
	must(t, c.Close())
	path := filepath.Join(s.Dir(), "1.cast")
	written := loadIndex(indexPath(path))
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	cr, err := NewCastReader(f, "1.cast")
	must(t, err)
	scanned, err := scanIndex(f, cr.off)
	must(t, err)
	if len(written) < 10 || !reflect.DeepEqual(written, scanned) {
		t.Fatalf("the writer's index (%d entries) differs from a scan's (%d)", len(written), len(scanned))
	}
	fi, err := f.Stat()
	must(t, err)
	for _, e := range written {
		if !checkEntry(f, fi.Size(), e) {
			t.Errorf("entry %v does not check", e)
		}
	}
	// Each step of the file has its entry.
	if want := int(fi.Size() / indexStep); len(written) < want-6 { // a long line holds several steps
		t.Errorf("%d entries for %d steps", len(written), want)
	}
}

// The index is no part of the recording's integrity: a recording with
// one verifies, and a damaged one changes nothing.
func TestIndexIsNotInTheChain(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	root, id := t.TempDir(), uuid.NewString()
	s, err := CreateSigned(root, Meta{ID: id, Technician: "li", Target: "db", Start: time.Now()}, priv)
	must(t, err)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	for range 40 {
		must(t, c.Stdout([]byte(strings.Repeat("a", 32<<10))))
	}
	must(t, c.Close())
	must(t, s.End(time.Now(), "client closed", 0, 0))
	idx := indexPath(filepath.Join(s.Dir(), "1.cast"))
	for _, content := range []string{"", "garbage"} {
		if content != "" {
			must(t, os.WriteFile(idx, []byte(content), 0o600))
		} else if _, err := os.Stat(idx); err != nil {
			t.Fatalf("no index: %v", err)
		}
		v, err := Verify(s.Dir(), pub)
		must(t, err)
		if !v.OK || !v.Complete || !v.Signed {
			t.Errorf("verify with the index %q: %s", content, problems(v))
		}
	}
}

// The index survives a reader that cannot write it: replay goes on.
func TestSaveIndexFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	if err := saveIndex(filepath.Join(dir, "1.cast.idx"), []indexEntry{{1, 2}}); err == nil {
		t.Fatal("saveIndex into a missing directory succeeded")
	}
}

// Whatever the index holds, seekOffset returns the first event or the
// start of an event line earlier than the time sought: nothing at or
// after that time is skipped.
func FuzzSeekIndex(f *testing.F) {
	root, id, s := newSessionTB(f)
	c, err := s.Channel(ChannelInfo{PTY: true, Kind: "shell"})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 120 {
		advance(c, time.Second)
		if err := c.Stdout(fmt.Appendf(nil, "row %d %s\r\n", i, strings.Repeat("z", 8<<10))); err != nil {
			f.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(root, id, "1.cast")
	good, err := os.ReadFile(indexPath(path))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, 60.0)
	f.Add(good[:len(good)/2], 100.0)
	f.Add([]byte("1e308 300000\n0 1\n"), 30.0)
	f.Add([]byte("50 262100\n"), 119.0)
	f.Add([]byte{}, 5.0)
	f.Fuzz(func(t *testing.T, idx []byte, from float64) {
		if from < 0 || from != from || from > 1e9 {
			return
		}
		if err := os.WriteFile(indexPath(path), idx, 0o600); err != nil {
			t.Fatal(err)
		}
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		cr, err := NewCastReader(file, "1.cast")
		if err != nil {
			t.Fatal(err)
		}
		dataStart := cr.off
		off, err := seekOffset(file, path, dataStart, from)
		if err != nil {
			t.Fatal(err)
		}
		if off == dataStart {
			return
		}
		fi, _ := file.Stat()
		sr := &CastReader{br: bufio.NewReader(io.NewSectionReader(file, off, fi.Size()-off))}
		line, _, err := sr.readLine()
		e, ok := parseEvent(line)
		var before [1]byte
		file.ReadAt(before[:], off-1)
		if err != nil || !ok || before[0] != '\n' || e.Time >= from {
			t.Fatalf("seekOffset(%v) = %d: not the start of an event line earlier than it (%q)", from, off, line[:min(len(line), 40)])
		}
		if fi.Size() > 4*indexStep && off < fi.Size()-maxSpan-(10<<10) && from > 119 {
			t.Errorf("seekOffset(%v) = %d of %d: the index was not rebuilt", from, off, fi.Size())
		}
	})
}
