package recording

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// Seeking. A replay that starts at a time (ReplayOptions.From) finds its
// place in a channel file through a sidecar index, <n>.cast.idx, instead
// of reading everything before it.
//
// Format: one line per entry, "<time> <offset>\n": the time of an event as
// written in its line (seconds) and the byte offset of the start of that
// line in the channel file. There is an entry for each event line that
// holds a multiple of indexStep bytes of the file, in file order. The
// writer appends the entry when it has written such a line; a replay that
// finds no index (a recording made before the index existed) or one that
// stops short of the time sought scans the file, then caches the index.
// Verify and Recover look only at .cast files: the index is outside the
// chain and the seal, and may be deleted at any time.
//
// Trust. The index is no part of the chain and is never trusted for
// content: an entry is used only after checking that its offset is the
// start of a line of the channel file (the byte before it is a newline,
// which a JSON line cannot hold) whose event has the entry's time, and
// that the line holds a multiple of indexStep, as the writer's entries
// do (the Bound below rests on that). Since event times never decrease
// along the file, no event before a checked entry is later than the
// entry, so starting there skips nothing that comes at or after any later
// time. The entries around the time sought are checked so; if one fails,
// or they lie further apart than a sound index allows (maxSpan), the
// replay rebuilds the index by a scan: a missing, cut, garbled, stale or
// unwritable index costs time, never correctness. The index file is
// opened without following a symbolic link, and only if it is a regular
// file.
//
// Bound. To start at time T, a replay reads from the entry before the last
// entry earlier than T and writes the terminal output from there up to T
// at once (fast-forward), so that the screen is drawn, then plays. It so
// reads at most two steps (512 KiB) and two event lines before it plays,
// whatever the size of the file, and the fast-forward holds at least the
// last step (256 KiB) of the recording before T, or everything before T
// near the start. That redraws a shell's screen and programs that redraw
// theirs; a full-screen program that drew its screen earlier and has only
// changed parts of it since may show partly drawn until it redraws.
const (
	indexStep = 256 << 10
	// maxIndexFile bounds the index file read: 64 MiB of entries index
	// about 600 GiB of recording. A bigger file is ignored (rebuilt).
	maxIndexFile = 64 << 20
)

// indexEntry says that the event line at byte Off has time Time.
type indexEntry struct {
	Time float64
	Off  int64
}

// indexPath returns the index file of the channel file castPath.
func indexPath(castPath string) string { return castPath + ".idx" }

// crossesStep reports whether the line of n bytes at off holds a multiple
// of indexStep, which makes it an index entry.
func crossesStep(off int64, n int) bool {
	return off > 0 && n > 0 && (off-1)/indexStep != (off+int64(n)-1)/indexStep
}

// indexLocked appends an index entry for the event line b that the writer
// has just written at offset off, when the line is one. The index is a
// cache: failing to write it does not fail the recording, and replay does
// without it.
func (c *Channel) indexLocked(off int64, b []byte) {
	if !crossesStep(off, len(b)) {
		return
	}
	t, ok := lineTime(b)
	if !ok {
		return
	}
	f, err := openIndex(indexPath(filepath.Join(c.sess.dir, c.ev.name)), os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return
	}
	f.Write(appendIndexLine(nil, t, off))
	f.Close()
}

// openIndex opens the index file at path with flag, and only a regular
// file: a symbolic link planted in its place (the spool is shared with
// whoever can write there) is not followed, so the server does not
// append to, or a reviewer read, a file elsewhere; a FIFO or a device
// is refused without waiting for it (O_NONBLOCK, which does not change
// the reads and writes of a regular file).
func openIndex(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lineTime returns the time text of an event line, which the writer makes
// `[<time>,…`, and whether it is a non-negative number.
func lineTime(line []byte) ([]byte, bool) {
	if len(line) < 3 || line[0] != '[' {
		return nil, false
	}
	i := bytes.IndexByte(line[:min(len(line), 40)], ',')
	if i < 2 {
		return nil, false
	}
	v, err := strconv.ParseFloat(string(line[1:i]), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) {
		return nil, false
	}
	return line[1:i], true
}

func appendIndexLine(b, time []byte, off int64) []byte {
	b = append(b, time...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, off, 10)
	return append(b, '\n')
}

// loadIndex reads the index file at path. What cannot be used (a missing
// or oversized file, a cut last line, garbled lines, entries out of
// order) is left out; the entries kept still have to be checked.
func loadIndex(path string) []indexEntry {
	f, err := openIndex(path, os.O_RDONLY)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIndexFile+1))
	if err != nil || len(b) > maxIndexFile {
		return nil
	}
	var out []indexEntry
	for len(b) > 0 {
		line, rest, complete := bytes.Cut(b, []byte{'\n'})
		b = rest
		if !complete {
			break // cut short while it was written
		}
		ts, offs, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		t, err1 := strconv.ParseFloat(string(ts), 64)
		off, err2 := strconv.ParseInt(string(offs), 10, 64)
		if err1 != nil || err2 != nil || t < 0 || math.IsInf(t, 0) || math.IsNaN(t) || off <= 0 {
			continue
		}
		out = append(out, indexEntry{Time: t, Off: off})
	}
	return ordered(out)
}

// ordered sorts entries by offset and drops those whose time goes back.
func ordered(es []indexEntry) []indexEntry {
	slices.SortStableFunc(es, func(a, b indexEntry) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && (e.Off == out[n-1].Off || e.Time < out[n-1].Time) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// scanIndex reads the channel file f from byte start, the start of a
// line, to its end and returns the index entries of the lines it read. A
// last line without its newline (being written, or cut) gets none.
func scanIndex(f *os.File, start int64) ([]indexEntry, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(f, start, math.MaxInt64-start), 256<<10)
	var (
		out  []indexEntry
		head []byte // the first bytes of the line, enough for its time
		off  = start
	)
	for {
		head = head[:0]
		n := 0
		for {
			chunk, err := br.ReadSlice('\n')
			if len(head) < 48 {
				head = append(head, chunk[:min(len(chunk), 48-len(head))]...)
			}
			n += len(chunk)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return out, err
			}
			break
		}
		if crossesStep(off, n) {
			if ts, ok := lineTime(head); ok {
				t, _ := strconv.ParseFloat(string(ts), 64)
				out = append(out, indexEntry{Time: t, Off: off})
			}
		}
		off += int64(n)
	}
}

// saveIndex writes the index file at path whole, in place of what is
// there. The index is a cache: the caller may ignore the error (a
// recording directory the reviewer cannot write, for example).
func saveIndex(path string, es []indexEntry) error {
	var b []byte
	for _, e := range es {
		b = appendIndexLine(b, strconv.AppendFloat(nil, e.Time, 'f', -1, 64), e.Off)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// checkEntry reports whether e points at the start of an event line of f
// (size bytes long) whose time is e's, and that the writer indexes (it
// crosses a step). The step rule is what bounds the fast-forward from
// below: entries at other lines, all sound, could bring the start of
// reading up to just before the time sought.
func checkEntry(f *os.File, size int64, e indexEntry) bool {
	if e.Off <= 0 || e.Off >= size {
		return false
	}
	var before [1]byte
	if _, err := f.ReadAt(before[:], e.Off-1); err != nil || before[0] != '\n' {
		return false
	}
	cr := &CastReader{br: bufio.NewReaderSize(io.NewSectionReader(f, e.Off, size-e.Off), 64<<10)}
	line, complete, err := cr.readLine()
	if err != nil || !complete || !crossesStep(e.Off, len(line)+1) {
		return false
	}
	ev, ok := parseEvent(line)
	return ok && ev.Time == e.Time
}

// after returns the index of the first entry at or after time from;
// entries before it are earlier than from.
func after(es []indexEntry, from float64) int {
	k, _ := slices.BinarySearchFunc(es, from, func(e indexEntry, t float64) int {
		if e.Time < t {
			return -1
		}
		return 1
	})
	return k
}

// maxSpan bounds the bytes between the entry a replay starts at and the
// first entry at or after the time sought: two steps and two lines in a
// sound index. An index that claims more is missing entries.
const maxSpan = 4 * indexStep

// seekOffset returns the byte offset of the channel file f (at castPath,
// its first event line at dataStart) to start reading at to replay from
// time from, in seconds of the channel's recording. It reads the index,
// completes or rebuilds it by a scan of the file when it falls short or
// fails its check, and caches what it built.
func seekOffset(f *os.File, castPath string, dataStart int64, from float64) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	es := loadIndex(indexPath(castPath))
	// Entries past the end cannot be sound (a file cut, an index of
	// another file).
	for len(es) > 0 && es[len(es)-1].Off >= size {
		es = es[:len(es)-1]
	}
	built := false
	// An index that ends before from, more than two steps before the end
	// of the file, is short of entries (or missing): complete it from its
	// last entry, or rebuild it if that entry is not sound.
	last := indexEntry{Off: dataStart}
	if len(es) > 0 {
		last = es[len(es)-1]
	}
	if (len(es) == 0 || from > last.Time) && size-last.Off > 2*indexStep {
		if len(es) > 0 && !checkEntry(f, size, last) {
			last, es = indexEntry{Off: dataStart}, nil
		}
		more, err := scanIndex(f, last.Off)
		if err != nil {
			return 0, err
		}
		for _, e := range more {
			if e.Off > last.Off {
				es = append(es, e)
			}
		}
		built = true
	}
	// The entries around from are checked: the one reading starts at
	// (see Bound), for correctness, and those after it, and the span
	// between them, for the bound.
	check := func() (sound, bounded bool) {
		k := after(es, from)
		for i := max(k-2, 0); i <= k && i < len(es); i++ {
			if !checkEntry(f, size, es[i]) {
				return false, false
			}
		}
		start, end := dataStart, size
		if k >= 2 {
			start = es[k-2].Off
		}
		if k < len(es) {
			end = es[k].Off
		}
		return true, end-start <= maxSpan
	}
	if sound, bounded := check(); !sound || !bounded {
		// A wrong entry, or entries missing: nothing in the index is
		// believed.
		if es, err = scanIndex(f, dataStart); err != nil {
			return 0, err
		}
		built = true
		if sound, _ := check(); !sound {
			es = nil // the file changes under us: read it all
		}
	}
	if built {
		saveIndex(indexPath(castPath), es) // a cache: see saveIndex
	}
	if k := after(es, from); k >= 2 {
		return es[k-2].Off, nil
	}
	return dataStart, nil
}
