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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
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

// checkEntry holds an entry to the writer's rule: a sound event line
// that does not cross a step is no entry.
func TestCheckEntryStepRule(t *testing.T) {
	_, _, path := rowsSession(t, 100, 8<<10)
	rows := rowLines(t, path)
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	fi, err := f.Stat()
	must(t, err)
	var entries, others int
	for i, r := range rows[:len(rows)-1] {
		want := crossesStep(r.off, int(rows[i+1].off-r.off))
		if got := checkEntry(f, fi.Size(), indexEntry{Time: r.time, Off: r.off}); got != want {
			t.Errorf("checkEntry(row %d at %d) = %v, want %v", i, r.off, got, want)
		}
		if want {
			entries++
		} else {
			others++
		}
	}
	if entries < 2 || others < 10 {
		t.Fatalf("%d rows crossing a step, %d not: the test proves nothing", entries, others)
	}
}

// An index with an entry for every event line, each pointing at its
// line with its time, would bring the fast-forward down to a line or two
// before the time sought; it is rebuilt, and the replay starts where the
// writer's index makes it start, a step or more before.
func TestSeekIndexEntriesOffStep(t *testing.T) {
	_, _, path := rowsSession(t, 200, 8<<10)
	rows := rowLines(t, path)
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	cr, err := NewCastReader(f, "1.cast")
	must(t, err)
	const from = 150.0
	want, err := seekOffset(f, path, cr.off, from)
	must(t, err)
	var dense []byte
	for _, r := range rows {
		dense = appendIndexLine(dense, strconv.AppendFloat(nil, r.time, 'f', -1, 64), r.off)
	}
	must(t, os.WriteFile(indexPath(path), dense, 0o600))
	got, err := seekOffset(f, path, cr.off, from)
	must(t, err)
	if got != want {
		t.Errorf("seekOffset with an entry per line = %d, want %d as with the writer's index", got, want)
	}
	first := rows[after(toEntries(rows), from)]
	if first.off-got < indexStep {
		t.Errorf("seekOffset = %d: %d bytes before the time sought, less than a step", got, first.off-got)
	}
}

func toEntries(rows []rowLine) []indexEntry {
	es := make([]indexEntry, len(rows))
	for i, r := range rows {
		es[i] = indexEntry{Time: r.time, Off: r.off}
	}
	return es
}

// A symbolic link or a FIFO planted where the index goes is neither
// written through nor read: the writer leaves it, the reader ignores it
// and the index it caches replaces the link.
func TestIndexNotARegularFile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	const content = "not to be changed\n"
	must(t, os.WriteFile(outside, []byte(content), 0o600))
	checkOutside := func(t *testing.T) {
		t.Helper()
		b, err := os.ReadFile(outside)
		must(t, err)
		if string(b) != content {
			t.Fatalf("the file the link points at was written: %q", b[:min(len(b), 80)])
		}
	}
	record := func(t *testing.T, plant func(idx string)) (path string) {
		_, _, s := newSession(t)
		c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
		path = filepath.Join(s.Dir(), "1.cast")
		plant(indexPath(path))
		for i := range 100 {
			advance(c, time.Second)
			must(t, c.Stdout(fmt.Appendf(nil, "row %d %s\r\n", i, strings.Repeat("z", 8<<10))))
		}
		must(t, c.Close())
		return path
	}

	t.Run("symlink", func(t *testing.T) {
		path := record(t, func(idx string) { must(t, os.Symlink(outside, idx)) })
		checkOutside(t)

		// The reader: a link to a sound index is not read.
		good := filepath.Join(t.TempDir(), "good.idx")
		f, err := os.Open(path)
		must(t, err)
		defer f.Close()
		cr, err := NewCastReader(f, "1.cast")
		must(t, err)
		es, err := scanIndex(f, cr.off)
		must(t, err)
		must(t, saveIndex(good, es))
		if len(loadIndex(good)) == 0 {
			t.Fatal("no entries in the index")
		}
		must(t, os.Remove(indexPath(path)))
		must(t, os.Symlink(good, indexPath(path)))
		if got := loadIndex(indexPath(path)); got != nil {
			t.Errorf("loadIndex read through a symbolic link: %d entries", len(got))
		}

		// seekOffset scans, and caches in place of the link.
		must(t, os.Remove(indexPath(path)))
		must(t, os.Symlink(outside, indexPath(path)))
		_, err = seekOffset(f, path, cr.off, 90)
		must(t, err)
		checkOutside(t)
		if fi, err := os.Lstat(indexPath(path)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("the index cached is not a regular file: %v, %v", fi, err)
		}
	})

	t.Run("fifo", func(t *testing.T) {
		path := record(t, func(idx string) { must(t, syscall.Mkfifo(idx, 0o600)) })
		if got := loadIndex(indexPath(path)); got != nil {
			t.Errorf("loadIndex read a FIFO: %d entries", len(got))
		}
	})
	hardening.Report(t, "26", "a symbolic link to a file outside and a FIFO planted where a recording's index goes, 100 rows of 8 KiB recorded: the outside file unchanged, neither read, the link replaced by a regular index")
}
