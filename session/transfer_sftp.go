package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// More SFTP packet types (draft-ietf-secsh-filexfer-02), for the observer.
const (
	fxpInit   = 1
	fxpClose  = 4
	fxpRead   = 5
	fxpWrite  = 6
	fxpHandle = 102
	fxpData   = 103

	// maxSFTPHandle is the longest handle the protocol allows.
	maxSFTPHandle = 256
)

// sftpObserver follows the files an sftp channel opens, reads and writes,
// and records one x-file event per direction when a file is closed, and an
// x-file-op event for each remove, rename, mkdir, rmdir and setstat
// request. The technician's pump feeds it requests and the target's pump
// replies, at once; a reply is always seen after its request, because
// the request is observed before it is forwarded.
type sftpObserver struct {
	emit     func(code, data string) error
	requests sftpFramer // the technician's pump's alone
	replies  sftpFramer // the target's pump's alone
	stopped  atomic.Bool

	mu    sync.Mutex // guards what follows and serialises the events
	seq   uint64
	opens map[uint32]sftpOpen  // OPEN requests awaiting their handle, by request ID
	reads map[uint32]sftpRead  // READ requests awaiting their data, by request ID
	files map[string]*sftpFile // open files, by handle
}

type sftpOpen struct {
	path  string
	cut   bool // path truncated
	flags uint32
	seq   uint64
}

type sftpRead struct {
	file *sftpFile
	off  uint64
	seq  uint64
}

type sftpFile struct {
	path          string
	cut           bool
	flags         uint32
	seq           uint64
	up, down      contentHash // written by the technician; read by the technician
	writes, reads int
}

func newSFTPObserver(emit func(code, data string) error) *sftpObserver {
	return &sftpObserver{emit: emit, opens: map[uint32]sftpOpen{}, reads: map[uint32]sftpRead{},
		files: map[string]*sftpFile{}}
}

func (o *sftpObserver) technician(p []byte) error { return o.observe(&o.requests, p, o.request) }
func (o *sftpObserver) target(p []byte) error     { return o.observe(&o.replies, p, o.reply) }

func (o *sftpObserver) observe(f *sftpFramer, p []byte, handle func([]byte) error) error {
	if o.stopped.Load() {
		return nil
	}
	err := f.feed(p, handle)
	if errors.Is(err, errSFTPProtocol) {
		return o.fail(err)
	}
	return err
}

// fail stops the observer for good with one x-file-parse-error event.
func (o *sftpObserver) fail(err error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped.Swap(true) {
		return nil
	}
	o.opens, o.reads = nil, nil
	return emitJSON(o.emit, "x-file-parse-error", parseErrorEvent{Protocol: "sftp", Error: err.Error()})
}

// end records the files still open as incomplete transfers.
func (o *sftpObserver) end() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	open := make([]*sftpFile, 0, len(o.files))
	for _, f := range o.files {
		open = append(open, f)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].seq < open[j].seq })
	o.files = map[string]*sftpFile{}
	for _, f := range open {
		if err := o.closed(f, noteIncomplete); err != nil {
			return err
		}
	}
	return nil
}

func malformed(what string) error { return fmt.Errorf("%w: short %s", errSFTPProtocol, what) }

// request follows one packet from the technician.
func (o *sftpObserver) request(body []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped.Load() || body[0] == fxpInit {
		return nil
	}
	c := sftpCursor{b: body[1:], ok: true}
	id := c.u32()
	switch body[0] {
	case fxpOpen:
		name, flags := c.str(), c.u32()
		if !c.ok {
			return malformed("open request")
		}
		path, cut := trackedPath(name)
		o.seq++
		o.opens[id] = sftpOpen{path: path, cut: cut, flags: flags, seq: o.seq}
		if len(o.opens) > maxTracked {
			delete(o.opens, oldest(o.opens, func(v sftpOpen) uint64 { return v.seq }))
		}
	case fxpClose:
		handle := c.str()
		if !c.ok {
			return malformed("close request")
		}
		if f := o.files[string(handle)]; f != nil {
			delete(o.files, string(handle))
			return o.closed(f, "")
		}
	case fxpRead:
		handle, off, _ := c.str(), c.u64(), c.u32()
		if !c.ok {
			return malformed("read request")
		}
		if f := o.files[string(handle)]; f != nil {
			f.reads++
			o.seq++
			o.reads[id] = sftpRead{file: f, off: off, seq: o.seq}
			if len(o.reads) > maxTracked {
				delete(o.reads, oldest(o.reads, func(v sftpRead) uint64 { return v.seq }))
			}
		}
	case fxpWrite:
		handle, off, data := c.str(), c.u64(), c.str()
		if !c.ok {
			return malformed("write request")
		}
		if f := o.files[string(handle)]; f != nil {
			f.writes++
			f.up.add(off, data)
		}
	case fxpSetstat:
		return o.op(&c, "setstat", false)
	case fxpFsetstat:
		handle := c.str()
		if !c.ok {
			return malformed("fsetstat request")
		}
		if f := o.files[string(handle)]; f != nil {
			return emitJSON(o.emit, "x-file-op", fileOpEvent{Protocol: "sftp", Op: "setstat", Path: f.path, PathTruncated: f.cut})
		}
	case fxpRemove:
		return o.op(&c, "remove", false)
	case fxpMkdir:
		return o.op(&c, "mkdir", false)
	case fxpRmdir:
		return o.op(&c, "rmdir", false)
	case fxpRename:
		return o.op(&c, "rename", true)
	case fxpExtended:
		switch string(c.str()) {
		case "posix-rename@openssh.com":
			return o.op(&c, "rename", true)
		case "hardlink@openssh.com":
			return o.op(&c, "hardlink", true)
		case "lsetstat@openssh.com":
			return o.op(&c, "setstat", false)
		}
	}
	if !c.ok {
		return malformed(fmt.Sprintf("request of type %d", body[0]))
	}
	return nil
}

// op records a request on a path, or two paths (from, to).
func (o *sftpObserver) op(c *sftpCursor, name string, two bool) error {
	var to []byte
	from := c.str()
	if two {
		to = c.str()
	}
	if !c.ok {
		return malformed(name + " request")
	}
	e := fileOpEvent{Protocol: "sftp", Op: name}
	var cutFrom, cutTo bool
	e.Path, cutFrom = trackedPath(from)
	e.To, cutTo = trackedPath(to)
	e.PathTruncated = cutFrom || cutTo
	return emitJSON(o.emit, "x-file-op", e)
}

// reply follows one packet from the target.
func (o *sftpObserver) reply(body []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped.Load() {
		return nil
	}
	c := sftpCursor{b: body[1:], ok: true}
	if body[0] == fxpVersion {
		// The requests above are version 3's (OpenSSH's).
		if v := c.u32(); !c.ok || v != 3 {
			return fmt.Errorf("%w: not version 3", errSFTPProtocol)
		}
		return nil
	}
	id := c.u32()
	if !c.ok {
		return malformed(fmt.Sprintf("reply of type %d", body[0]))
	}
	switch body[0] {
	case fxpHandle:
		handle := c.str()
		if !c.ok {
			return malformed("handle reply")
		}
		open, ok := o.opens[id]
		if !ok {
			return nil
		}
		delete(o.opens, id)
		if len(handle) > maxSFTPHandle {
			return fmt.Errorf("%w: handle of %d bytes", errSFTPProtocol, len(handle))
		}
		o.seq++
		f := &sftpFile{path: open.path, cut: open.cut, flags: open.flags, seq: o.seq, up: newContentHash(), down: newContentHash()}
		if old := o.files[string(handle)]; old != nil {
			if err := o.closed(old, noteIncomplete); err != nil {
				return err
			}
		}
		o.files[string(handle)] = f
		if len(o.files) > maxTracked {
			h := oldest(o.files, func(f *sftpFile) uint64 { return f.seq })
			old := o.files[h]
			delete(o.files, h)
			return o.closed(old, noteEvicted)
		}
	case fxpData:
		data := c.str()
		if !c.ok {
			return malformed("data reply")
		}
		if rd, ok := o.reads[id]; ok {
			delete(o.reads, id)
			rd.file.down.add(rd.off, data)
		}
	default:
		delete(o.opens, id)
		delete(o.reads, id)
	}
	return nil
}

// closed records the transfers of a file that is closed, or no longer
// followed (note says why). A file opened for writing is an upload, one
// opened for reading a download; one opened for both is what it was used
// for.
func (o *sftpObserver) closed(f *sftpFile, note string) error {
	writable := f.flags&fxfWrite != 0
	readable := f.flags&fxfRead != 0 || !writable // sftp-server opens read-only without WRITE
	if writable && (f.writes > 0 || f.reads == 0) {
		if err := o.transfer(f, "upload", &f.up, note); err != nil {
			return err
		}
	}
	if readable && (f.reads > 0 || !writable) {
		return o.transfer(f, "download", &f.down, note)
	}
	return nil
}

func (o *sftpObserver) transfer(f *sftpFile, dir string, h *contentHash, note string) error {
	e := fileEvent{Protocol: "sftp", Direction: dir, Path: f.path, PathTruncated: f.cut, Size: h.size}
	e.SHA256, e.HashNote = h.sum()
	if note != "" {
		e.SHA256, e.HashNote = "", note
	}
	return emitJSON(o.emit, "x-file", e)
}

// oldest returns the key of m's entry with the lowest sequence number.
func oldest[K comparable, V any](m map[K]V, seq func(V) uint64) K {
	var key K
	low := ^uint64(0)
	for k, v := range m {
		if s := seq(v); s <= low {
			key, low = k, s
		}
	}
	return key
}

// sftpFramer reassembles one direction's SFTP packets from reads of any
// size. It holds at most one packet (maxSFTPPacket) at a time.
type sftpFramer struct {
	hdr  [4]byte
	nhdr int
	want int    // length of the packet being reassembled; 0 between packets
	pkt  []byte // its bytes so far (without the length)
}

// feed hands each packet completed by p to handle, without its length.
// It returns handle's first error, or errSFTPProtocol for a length that
// is not a packet's.
func (f *sftpFramer) feed(p []byte, handle func(body []byte) error) error {
	for len(p) > 0 {
		if f.want == 0 {
			var n uint32
			if f.nhdr == 0 && len(p) >= 4 {
				n, p = binary.BigEndian.Uint32(p), p[4:]
			} else {
				k := copy(f.hdr[f.nhdr:], p)
				f.nhdr, p = f.nhdr+k, p[k:]
				if f.nhdr < 4 {
					return nil
				}
				n, f.nhdr = binary.BigEndian.Uint32(f.hdr[:]), 0
			}
			if n == 0 || n > maxSFTPPacket {
				return fmt.Errorf("%w: length %d", errSFTPProtocol, n)
			}
			if len(p) >= int(n) { // whole in this read: no copy
				if err := handle(p[:n]); err != nil {
					return err
				}
				p = p[n:]
				continue
			}
			f.want = int(n)
			if cap(f.pkt) < f.want {
				f.pkt = make([]byte, 0, f.want)
			}
			f.pkt = f.pkt[:0]
		}
		k := min(f.want-len(f.pkt), len(p))
		f.pkt, p = append(f.pkt, p[:k]...), p[k:]
		if len(f.pkt) == f.want {
			f.want = 0
			if err := handle(f.pkt); err != nil {
				return err
			}
		}
	}
	return nil
}

// sftpCursor reads the fields of a packet; ok turns false, for good, at
// the first field that is not there.
type sftpCursor struct {
	b  []byte
	ok bool
}

func (c *sftpCursor) u32() uint32 {
	if len(c.b) < 4 {
		c.b, c.ok = nil, false
		return 0
	}
	v := binary.BigEndian.Uint32(c.b)
	c.b = c.b[4:]
	return v
}

func (c *sftpCursor) u64() uint64 {
	if len(c.b) < 8 {
		c.b, c.ok = nil, false
		return 0
	}
	v := binary.BigEndian.Uint64(c.b)
	c.b = c.b[8:]
	return v
}

func (c *sftpCursor) str() []byte {
	s, rest, ok := sshString(c.b)
	if !ok {
		c.b, c.ok = nil, false
		return nil
	}
	c.b = rest
	return s
}
