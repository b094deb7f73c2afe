package session

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

const (
	// maxSCPLine is the longest header line; OpenSSH's scp reads them
	// into 2048 bytes.
	maxSCPLine = 2048
	// maxSCPDir bounds the directory path an scp observer keeps.
	maxSCPDir = 16 << 10
)

type scpState int

const (
	scpHeader  scpState = iota // at or in a header line
	scpContent                 // in a file's content
	scpTrailer                 // at the byte after a file's content
	scpMessage                 // in a message line (an error the sender reports)
)

// errSCPProtocol is a stream that is not the scp protocol.
var errSCPProtocol = errors.New("not the scp protocol")

// scpObserver follows the legacy scp protocol (rcp's) in the direction that
// carries it: from the technician for scp -t, from the target for scp -f.
// Each file is a header line "C<mode> <size> <name>\n", exactly size bytes
// and a zero byte; "D<mode> 0 <name>\n" and "E\n" enter and leave a
// directory; "T…\n" carries times. It records one x-file event per file.
// The other direction carries only acknowledgements and is not looked at.
// Both are fed by one goroutine each, and only one parses, so the
// observer needs no lock.
type scpObserver struct {
	emit    func(code, data string) error
	upload  bool
	base    string   // scp -t: where files go
	baseDir bool     // scp -t: base is known to be a directory
	sources []string // scp -f: what is sent, in order
	next    int      // scp -f: the first source not yet matched

	state   scpState
	stopped bool
	line    []byte // the header line so far
	dir     string // the directory entries go to; "" at the top
	depth   []int  // len(dir) before each D
	file    fileEvent
	left    uint64 // content bytes still to come
	content contentHash
}

// newSCPObserver returns the observer of the scp command whose arguments
// (after "scp") are args; channelKind accepted them.
func newSCPObserver(args []string, emit func(code, data string) error) *scpObserver {
	o := &scpObserver{emit: emit}
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		if args[i] == "--" {
			i++
			break
		}
		for _, f := range args[i][1:] {
			switch f {
			case 't':
				o.upload = true
			case 'd':
				o.baseDir = true
			}
		}
	}
	paths := args[i:]
	if o.upload {
		if len(paths) > 0 {
			o.base = paths[0]
		}
		b := o.base
		o.baseDir = o.baseDir || strings.HasSuffix(b, "/") || b == "." || b == ".." ||
			strings.HasSuffix(b, "/.") || strings.HasSuffix(b, "/..")
	} else {
		o.sources = paths
	}
	return o
}

func (o *scpObserver) technician(p []byte) error {
	if !o.upload {
		return nil
	}
	return o.observe(p)
}

func (o *scpObserver) target(p []byte) error {
	if o.upload {
		return nil
	}
	return o.observe(p)
}

func (o *scpObserver) observe(p []byte) error {
	err := o.feed(p)
	if errors.Is(err, errSCPProtocol) {
		return o.fail(err)
	}
	return err
}

// fail stops the observer for good with one x-file-parse-error event.
func (o *scpObserver) fail(err error) error {
	if o.stopped {
		return nil
	}
	o.stopped, o.line, o.depth = true, nil, nil
	return emitJSON(o.emit, "x-file-parse-error", parseErrorEvent{Protocol: "scp", Error: err.Error()})
}

// end records a file cut off by the end of the stream as incomplete, and a
// cut-off header as a parse error.
func (o *scpObserver) end() error {
	if o.stopped {
		return nil
	}
	switch {
	case o.state == scpContent || o.state == scpTrailer:
		return o.finished(noteIncomplete)
	case o.state == scpHeader && len(o.line) > 0:
		return o.fail(fmt.Errorf("%w: the stream ends inside a header", errSCPProtocol))
	}
	return nil
}

// feed follows p. It returns the first error recording an event, or
// errSCPProtocol.
func (o *scpObserver) feed(p []byte) error {
	for len(p) > 0 && !o.stopped {
		switch o.state {
		case scpHeader:
			if len(o.line) == 0 && (p[0] == 1 || p[0] == 2) {
				o.state = scpMessage
				continue
			}
			// The first byte and the length are judged the same way
			// however the stream is cut: the first byte as soon as it
			// comes, the length before the line is parsed.
			if len(o.line) == 0 && !bytes.ContainsRune([]byte("CDET\n"), rune(p[0])) {
				return fmt.Errorf("%w: a header starting with %q", errSCPProtocol, p[0])
			}
			i := bytes.IndexByte(p, '\n')
			if i > maxSCPLine-len(o.line) {
				return fmt.Errorf("%w: a header longer than %d bytes", errSCPProtocol, maxSCPLine)
			}
			if i < 0 {
				if len(o.line)+len(p) > maxSCPLine {
					return fmt.Errorf("%w: a header longer than %d bytes", errSCPProtocol, maxSCPLine)
				}
				o.line = append(o.line, p...)
				return nil
			}
			line := p[:i]
			if len(o.line) > 0 {
				if len(o.line)+i > maxSCPLine {
					return fmt.Errorf("%w: a header longer than %d bytes", errSCPProtocol, maxSCPLine)
				}
				o.line = append(o.line, line...)
				line = o.line
			}
			p = p[i+1:]
			err := o.header(line)
			o.line = o.line[:0]
			if err != nil {
				return err
			}
		case scpContent:
			k := uint64(len(p))
			if k > o.left {
				k = o.left
			}
			o.content.add(o.content.size, p[:k])
			o.left -= k
			p = p[k:]
			if o.left == 0 {
				o.state = scpTrailer
			}
		case scpTrailer:
			switch p[0] {
			case 0:
				o.state = scpHeader
				p = p[1:]
				if err := o.finished(""); err != nil {
					return err
				}
			case 1, 2:
				o.state = scpMessage // the sender's error message follows
				if err := o.finished(noteSourceError); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: no end marker after a file's content", errSCPProtocol)
			}
		case scpMessage:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return nil
			}
			p = p[i+1:]
			o.state = scpHeader
		}
	}
	return nil
}

// header follows one header line (without its newline).
func (o *scpObserver) header(line []byte) error {
	if len(line) == 0 {
		return fmt.Errorf("%w: an empty header", errSCPProtocol)
	}
	switch line[0] {
	case 'T':
		return nil
	case 'E':
		if len(line) != 1 || len(o.depth) == 0 {
			return fmt.Errorf("%w: a directory end without a start", errSCPProtocol)
		}
		o.dir = o.dir[:o.depth[len(o.depth)-1]]
		o.depth = o.depth[:len(o.depth)-1]
		return nil
	case 'C', 'D':
	default:
		return fmt.Errorf("%w: a header starting with %q", errSCPProtocol, line[0])
	}
	size, name, err := parseSCPHeader(line)
	if err != nil {
		return err
	}
	path, sent := o.path(name)
	if line[0] == 'D' {
		if len(path) > maxSCPDir {
			return fmt.Errorf("%w: directories nested deeper than %d bytes", errSCPProtocol, maxSCPDir)
		}
		o.depth = append(o.depth, len(o.dir))
		o.dir = path
		return nil
	}
	p, cut := trackedPath([]byte(path))
	o.file = fileEvent{Protocol: "scp", Direction: direction(o.upload), Path: p, Name: sent, PathTruncated: cut}
	o.content, o.left, o.state = newContentHash(), size, scpContent
	if size == 0 {
		o.state = scpTrailer
	}
	return nil
}

// parseSCPHeader parses "C0644 123 name" or "D0755 0 name" as OpenSSH's
// scp does, refusing what it refuses.
func parseSCPHeader(line []byte) (size uint64, name string, err error) {
	s := string(line[1:])
	if len(s) < 5 || strings.Trim(s[:4], "01234567") != "" || s[4] != ' ' {
		return 0, "", fmt.Errorf("%w: a bad mode", errSCPProtocol)
	}
	sizeText, name, ok := strings.Cut(s[5:], " ")
	if !ok || sizeText == "" || strings.Trim(sizeText, "0123456789") != "" {
		return 0, "", fmt.Errorf("%w: a bad size", errSCPProtocol)
	}
	size, err = strconv.ParseUint(sizeText, 10, 64)
	if err != nil || size > math.MaxInt64 {
		return 0, "", fmt.Errorf("%w: a bad size", errSCPProtocol)
	}
	if name == "" || name == ".." || strings.Contains(name, "/") {
		return 0, "", fmt.Errorf("%w: a bad file name", errSCPProtocol)
	}
	return size, name, nil
}

// path returns the path on the target of an entry named name, and the
// name itself when the path does not end in it. At the top of an upload
// whose target is not known to be a directory, scp writes to the target
// itself when it is not one, and into it when it is: the path is the
// target and the event names the entry.
func (o *scpObserver) path(name string) (path, sent string) {
	switch {
	case len(o.depth) > 0:
		return joinPath(o.dir, name), ""
	case o.upload && o.baseDir:
		return joinPath(o.base, name), ""
	case o.upload:
		if lastElem(o.base) == name {
			return o.base, ""
		}
		return o.base, name
	}
	// A download sends its sources in order, each named by its last
	// element; one that fails is skipped with an error message.
	for i := o.next; i < len(o.sources); i++ {
		if lastElem(o.sources[i]) == name {
			o.next = i + 1
			return o.sources[i], ""
		}
	}
	return name, ""
}

// finished records the file just sent; note says why it has no hash.
func (o *scpObserver) finished(note string) error {
	e := o.file
	e.Size = o.content.size
	e.SHA256, e.HashNote = o.content.sum()
	if note != "" {
		e.SHA256, e.HashNote = "", note
	}
	return emitJSON(o.emit, "x-file", e)
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// lastElem is the name scp sends for path.
func lastElem(path string) string {
	for len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	return path[strings.LastIndexByte(path, '/')+1:]
}
