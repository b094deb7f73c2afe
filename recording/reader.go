package recording

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxLine bounds one recorded line when reading; the writer never produces
// longer lines for a relay buffer of normal size.
const maxLine = 16 << 20

// ReadMeta reads the metadata of session id under root.
func ReadMeta(root, id string) (Meta, error) {
	dir, err := SessionDir(root, id)
	if err != nil {
		return Meta{}, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if err != nil {
		return Meta{}, fmt.Errorf("recording of session %s: %w", id, err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("recording of session %s: session.json: %w", id, err)
	}
	return m, nil
}

// Header is the header line of a channel recording.
type Header = header

// Event is one recorded event.
type Event struct {
	Time float64
	Code string
	// Data is the event's data as recorded: for the exact bytes of a
	// channel with a data file (format 2), a reference "OFFSET+LENGTH".
	Data string
	// ref is set for a reference to the channel's data file: Bytes reads
	// what it refers to, so that a reader that skips the event does not.
	ref *dataRef
}

// dataRef is a reference to bytes of a channel's data file.
type dataRef struct {
	data   io.ReaderAt
	off, n int64
}

// Bytes returns the event's payload: the exact bytes for the codes that
// carry them (read from the channel's data file, or decoded from base64),
// the text itself otherwise.
func (e Event) Bytes() ([]byte, error) {
	if e.ref != nil {
		return e.ref.read()
	}
	switch e.Code {
	case "x-stdout", "x-stderr", "x-stdin", "x-o-bytes", "x-i-bytes":
		return base64.StdEncoding.DecodeString(e.Data)
	}
	return []byte(e.Data), nil
}

// ErrTruncated is returned by CastReader.Next when the recording ends in
// the middle of an event: the write of that event failed (full disk,
// crash) and, since bytes are recorded before they are forwarded, its
// data never reached the other side. Everything before it is intact.
var ErrTruncated = errors.New("the recording ends with a truncated event")

// CastReader reads a channel recording event by event, so that recordings
// of any size are read in bounded memory.
type CastReader struct {
	src      io.Reader
	data     io.ReaderAt // the channel's data file (format 2); nil when it has none
	dataSize int64       // its size when opened
	closer   []io.Closer
	br       *bufio.Reader
	header   header
	line     int   // lines read, counted from base
	base     int64 // the byte offset reading started at after a seek; 0 otherwise
	off      int64 // the byte offset of the next line
	name     string
}

// where names the line being read in errors: by its number, or after a
// seek by its number counted from the offset sought.
func (cr *CastReader) where(line int) string {
	if cr.base > 0 {
		return fmt.Sprintf("%s: line %d after byte %d", cr.name, line, cr.base)
	}
	return fmt.Sprintf("%s:%d", cr.name, line)
}

// seek makes the reader go on at byte off of its source, which must be an
// io.Seeker; off must be the start of a line (see seekOffset).
func (cr *CastReader) seek(off int64) error {
	s, ok := cr.src.(io.Seeker)
	if !ok {
		return fmt.Errorf("%s: cannot seek", cr.name)
	}
	if _, err := s.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", cr.name, err)
	}
	cr.br.Reset(cr.src)
	cr.base, cr.off, cr.line = off, off, 0
	return nil
}

// readLine returns the next line without its newline, and whether the
// newline was there.
func (cr *CastReader) readLine() ([]byte, bool, error) {
	var line []byte
	for {
		chunk, err := cr.br.ReadSlice('\n')
		line = append(line, chunk...)
		cr.off += int64(len(chunk))
		if len(line) > maxLine {
			return nil, false, fmt.Errorf("%s: line longer than %d bytes", cr.where(cr.line+1), maxLine)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, false, nil
		default:
			return nil, false, err
		}
	}
}

// NewCastReader reads the header from r.
func NewCastReader(r io.Reader, name string) (*CastReader, error) {
	cr := &CastReader{src: r, br: bufio.NewReaderSize(r, 64<<10), name: name}
	line, _, err := cr.readLine()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty recording", name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cr.line = 1
	if err := json.Unmarshal(line, &cr.header); err != nil {
		return nil, fmt.Errorf("%s:1: bad header: %w", name, err)
	}
	if cr.header.Version != 2 {
		return nil, fmt.Errorf("%s:1: asciicast version %d, want 2", name, cr.header.Version)
	}
	if d := cr.header.Data; d != "" && d != dataFileName(filepath.Base(name)) {
		return nil, fmt.Errorf("%s:1: the header names data file %q, not %q", name, d, dataFileName(filepath.Base(name)))
	}
	return cr, nil
}

// OpenChannel opens a channel recording for reading, with its data file
// when it has one (format 2). Close it when done.
func OpenChannel(ch ChannelFile) (*CastReader, error) {
	f, err := os.Open(ch.Path)
	if err != nil {
		return nil, err
	}
	cr, err := NewCastReader(f, ch.Name)
	if err != nil {
		f.Close()
		return nil, err
	}
	cr.closer = append(cr.closer, f)
	if d := cr.header.Data; d != "" {
		df, size, err := openDataFile(filepath.Join(filepath.Dir(ch.Path), d))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: its data file: %w", ch.Name, err)
		}
		cr.data, cr.dataSize = df, size
		if df != nil {
			cr.closer = append(cr.closer, df)
		}
	}
	return cr, nil
}

// openDataFile opens a channel's data file, not through a symbolic link,
// and returns its size. A data file that is not there is empty: a
// channel that relayed nothing has no chunk of it, so a copy rebuilt
// from its chunks (an object store's) has none either.
func openDataFile(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// SetData gives a reader made by NewCastReader the channel's data file
// (size bytes long), for a channel whose header names one.
func (cr *CastReader) SetData(r io.ReaderAt, size int64) { cr.data, cr.dataSize = r, size }

// Close closes the files OpenChannel opened.
func (cr *CastReader) Close() error {
	var err error
	for _, c := range cr.closer {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	cr.closer = nil
	return err
}

// Header returns the channel's header.
func (cr *CastReader) Header() Header { return cr.header }

// Next returns the next event, io.EOF at the end, or an error wrapping
// ErrTruncated when the last event was cut short.
func (cr *CastReader) Next() (Event, error) {
	for {
		line, complete, err := cr.readLine()
		if err != nil {
			return Event{}, err
		}
		cr.line++
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, ok := parseEvent(line)
		if !ok {
			if !complete {
				return Event{}, fmt.Errorf("%s: %w", cr.where(cr.line), ErrTruncated)
			}
			return Event{}, fmt.Errorf("%s: not an event [time, code, data]", cr.where(cr.line))
		}
		if cr.header.Data != "" && isDataCode(e.Code) {
			off, n, ok := parseRef(e.Data)
			if !ok {
				return Event{}, fmt.Errorf("%s: %s: bad reference %q to %s", cr.where(cr.line), e.Code, e.Data, cr.header.Data)
			}
			if off+n > cr.dataSize {
				// The bytes are written before the event that refers
				// to them: an event beyond the data file is one whose
				// bytes were lost with the rest (a copy rebuilt from
				// the chunks that reached an object store, a file cut
				// short). What comes before it is intact.
				return Event{}, fmt.Errorf("%s: %s refers to bytes %d-%d of %s, which holds %d: %w", cr.where(cr.line), e.Code, off, off+n, cr.header.Data, cr.dataSize, ErrTruncated)
			}
			e.ref = &dataRef{data: cr.data, off: off, n: n}
		}
		return e, nil
	}
}

// isDataCode reports whether events of code carry a channel's exact
// bytes: in format 2 their data refers to the channel's data file.
func isDataCode(code string) bool {
	return code == "x-stdout" || code == "x-stderr" || code == "x-stdin"
}

// parseRef parses a reference to a data file, "OFFSET+LENGTH".
func parseRef(s string) (off, n int64, ok bool) {
	a, b, found := strings.Cut(s, "+")
	if !found {
		return 0, 0, false
	}
	off, err1 := strconv.ParseInt(a, 10, 64)
	n, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || off < 0 || n < 0 || n > maxLine {
		return 0, 0, false
	}
	return off, n, true
}

// read returns the bytes r refers to.
func (r *dataRef) read() ([]byte, error) {
	b := make([]byte, r.n)
	k, err := r.data.ReadAt(b, r.off)
	if k == len(b) {
		return b, nil
	}
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("the data file ends before bytes %d-%d that an event refers to", r.off, r.off+r.n)
	}
	return nil, err
}

func parseEvent(line []byte) (Event, bool) {
	var raw []json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
		return Event{}, false
	}
	var e Event
	if json.Unmarshal(raw[0], &e.Time) != nil || json.Unmarshal(raw[1], &e.Code) != nil || json.Unmarshal(raw[2], &e.Data) != nil {
		return Event{}, false
	}
	return e, true
}

// ChannelFile is a channel recording of a session on disk.
type ChannelFile struct {
	Name string
	Path string
}

// Channels lists the channel recordings of session id, in order.
func Channels(root, id string) ([]ChannelFile, error) {
	m, err := ReadMeta(root, id)
	if err != nil {
		return nil, err
	}
	dir, _ := SessionDir(root, id)
	var out []ChannelFile
	for _, name := range m.Channels {
		if filepath.Base(name) != name || !strings.HasSuffix(name, ".cast") {
			return nil, fmt.Errorf("recording of session %s: bad channel name %q", id, name)
		}
		out = append(out, ChannelFile{Name: name, Path: filepath.Join(dir, name)})
	}
	return out, nil
}

// ErrNoChannels is returned when a session recorded no channel.
var ErrNoChannels = errors.New("the session opened no channel")
