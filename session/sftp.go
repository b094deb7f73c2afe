package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sekisho/sekisho/broker"
)

// SFTP packet types this file looks at (draft-ietf-secsh-filexfer-02, the
// version OpenSSH speaks).
const (
	fxpVersion  = 2
	fxpOpen     = 3
	fxpLstat    = 7
	fxpFstat    = 8
	fxpSetstat  = 9
	fxpFsetstat = 10
	fxpOpendir  = 11
	fxpReaddir  = 12
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRealpath = 16
	fxpStat     = 17
	fxpRename   = 18
	fxpReadlink = 19
	fxpSymlink  = 20
	fxpStatus   = 101
	fxpName     = 104
	fxpExtended = 200

	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10

	fxPermissionDenied = 3

	// maxSFTPPacket bounds one packet; OpenSSH's sftp-server allows 256 KiB.
	maxSFTPPacket = 256 << 10

	// maxSFTPFollowed bounds the handles an upload-only guard follows
	// together with the replies it awaits; OpenSSH's clients hold one or
	// two at a time.
	maxSFTPFollowed = 64

	// maxShownPath bounds a path quoted in a refusal.
	maxShownPath = 200
)

// errSFTPProtocol is a stream that is not SFTP packets.
var errSFTPProtocol = errors.New("malformed sftp packet")

// readOnlyExtensions are the SFTP extensions that change nothing on the
// target; every other extension counts as a write.
var readOnlyExtensions = map[string]bool{
	"statvfs@openssh.com": true, "fstatvfs@openssh.com": true, "limits@openssh.com": true,
	"expand-path@openssh.com": true, "home-directory": true, "users-groups-by-id@openssh.com": true,
}

// sftpVerdict says whether a client request may pass under a files limit,
// by its direction alone. It returns the request ID and, when refused, why.
// Under upload_only, sftpGuard.request adds where.
func sftpVerdict(files string, pkt []byte) (id uint32, why string) {
	if len(pkt) < 9 {
		return 0, ""
	}
	typ := pkt[4]
	id = binary.BigEndian.Uint32(pkt[5:9])
	body := pkt[9:]
	var reads, writes bool
	switch typ {
	case fxpOpen:
		_, rest, ok := sshString(body)
		if !ok || len(rest) < 4 {
			return id, "malformed open request"
		}
		reads, writes = openDirection(binary.BigEndian.Uint32(rest))
	case fxpSetstat, fxpFsetstat, fxpRemove, fxpMkdir, fxpRmdir, fxpRename, fxpSymlink:
		writes = true
	case fxpExtended:
		name, _, ok := sshString(body)
		writes = !ok || !readOnlyExtensions[string(name)]
	}
	switch {
	case files == broker.FilesDownload && writes:
		return id, "only downloads are allowed: this request would change files on the target"
	case files == broker.FilesUpload && reads:
		return id, "only uploads are allowed: this request would read a file from the target"
	case files == broker.FilesNone && (reads || writes):
		return id, "file transfers are not allowed"
	}
	return id, ""
}

// openDirection says what an OPEN with flags does. sftp-server opens
// read-only whenever WRITE is not set, whatever else is: such a handle
// answers READ requests.
func openDirection(flags uint32) (reads, writes bool) {
	return flags&fxfRead != 0 || flags&fxfWrite == 0, flags&(fxfWrite|fxfAppend|fxfCreat|fxfTrunc) != 0
}

func sshString(b []byte) ([]byte, []byte, bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

// statusPacket is an SSH_FXP_STATUS reply refusing request id.
func statusPacket(id uint32, msg string) []byte {
	body := binary.BigEndian.AppendUint32(nil, id)
	body = binary.BigEndian.AppendUint32(body, fxPermissionDenied)
	body = binary.BigEndian.AppendUint32(body, uint32(len(msg)))
	body = append(body, msg...)
	body = binary.BigEndian.AppendUint32(body, 0) // language tag
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	pkt = append(pkt, fxpStatus)
	return append(pkt, body...)
}

// packetReader splits an SFTP stream into whole packets.
type packetReader struct {
	r   io.Reader
	buf []byte
}

// next returns the next packet (length prefix included), io.EOF at a clean
// end, or errSFTPProtocol.
func (p *packetReader) next() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errSFTPProtocol
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxSFTPPacket {
		return nil, fmt.Errorf("%w: length %d", errSFTPProtocol, n)
	}
	if cap(p.buf) < int(n)+4 {
		p.buf = make([]byte, 0, int(n)+4)
	}
	pkt := append(p.buf[:0], hdr[:]...)
	pkt = pkt[:4+n]
	if _, err := io.ReadFull(p.r, pkt[4:]); err != nil {
		return nil, errSFTPProtocol
	}
	return pkt, nil
}

// sftpGuard relays an sftp channel packet by packet so that requests the
// rule's files limit refuses are answered by sekisho with a permission
// denied status and never reach the target. Both directions are recorded
// before they are forwarded, refused requests and sekisho's answers too.
//
// Under upload_only it also holds every path to the rule's upload
// directories: what writes or changes must name paths strictly inside
// one, what looks (stat, listing, realpath) paths inside one or one
// itself, and requests by handle must use a handle the target gave for
// such a path. Paths are resolved as the target resolves them, relative
// ones against the login's home, which the guard learns from the
// target's answer to REALPATH "." (OpenSSH's sftp asks it first). To know
// which request a reply answers, the guard counts: sftp-server answers
// every request it gets once and in order, and under upload_only only
// requests it answers are forwarded.
type sftpGuard struct {
	files    string
	uploadTo []string // upload_only: clean absolute directories
	dirs     string   // uploadTo for messages: "/a", "/a or /b"
	itThem   string   // "it" or "them", for uploadTo

	mu sync.Mutex // serialises whole packets written to the technician

	// state guards what follows, shared by the two pumps. A reply
	// updates it before it is forwarded, so a request that depends on
	// the reply (a handle, the home) finds it.
	state          sync.Mutex
	home           string // the login's home; "" until the target said
	sent, answered uint64 // requests forwarded, replies seen
	awaiting       []sftpAwait
	handles        map[string]sftpHandle // handles for paths inside upload directories
}

// sftpAwait is a forwarded request whose reply the guard reads.
type sftpAwait struct {
	seq  uint64 // how many requests were forwarded before it
	id   uint32
	kind byte   // fxpOpen, fxpOpendir or fxpRealpath (of the home)
	path string // resolved, for fxpOpen and fxpOpendir
}

// sftpHandle is what a handle the target gave stands for.
type sftpHandle struct {
	path string
	dir  bool
}

func newSFTPGuard(l broker.Limits) *sftpGuard {
	g := &sftpGuard{files: l.Files, uploadTo: l.UploadTo, handles: map[string]sftpHandle{}}
	switch n := len(l.UploadTo); n {
	case 0:
		g.dirs, g.itThem = "no directory", "them"
	case 1:
		g.dirs, g.itThem = l.UploadTo[0], "it"
	default:
		g.dirs, g.itThem = strings.Join(l.UploadTo[:n-1], ", ")+" or "+l.UploadTo[n-1], "them"
	}
	return g
}

// writeDown writes one whole packet to the technician.
func (g *sftpGuard) writeDown(w io.Writer, pkt []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, err := w.Write(pkt)
	return err
}

// request says whether the technician's request pkt (length prefix
// included) may pass, as sftpVerdict does, and follows it when it does:
// the caller forwards every request that passes, in order.
func (g *sftpGuard) request(pkt []byte) (id uint32, why string) {
	if g.files != broker.FilesUpload {
		return sftpVerdict(g.files, pkt)
	}
	g.state.Lock()
	defer g.state.Unlock()
	id, why, follow := g.uploadVerdict(pkt)
	if why != "" {
		return id, why
	}
	if follow.kind != 0 {
		follow.seq, follow.id = g.sent, id
		g.awaiting = append(g.awaiting, follow)
	}
	g.sent++
	return id, ""
}

// reply follows the target's reply pkt (length prefix included) before
// it is forwarded. An error means the target does not answer in order.
func (g *sftpGuard) reply(pkt []byte) error {
	if g.files != broker.FilesUpload {
		return nil
	}
	g.state.Lock()
	defer g.state.Unlock()
	n := g.answered
	g.answered++
	if len(g.awaiting) == 0 || g.awaiting[0].seq != n {
		return nil
	}
	a := g.awaiting[0]
	g.awaiting = g.awaiting[:copy(g.awaiting, g.awaiting[1:])]
	c := sftpCursor{b: pkt[5:], ok: true}
	if id := c.u32(); !c.ok || id != a.id {
		return fmt.Errorf("%w: reply %d of type %d answers request %d", errSFTPProtocol, n, pkt[4], a.id)
	}
	switch {
	case a.kind == fxpRealpath && pkt[4] == fxpName:
		count, name := c.u32(), c.str()
		if c.ok && count == 1 && len(name) > 0 && name[0] == '/' && !hasNUL(name) {
			g.home = path.Clean(string(name))
		}
	case a.kind != fxpRealpath && pkt[4] == fxpHandle:
		h := c.str()
		if c.ok && len(h) <= maxSFTPHandle {
			g.handles[string(h)] = sftpHandle{path: a.path, dir: a.kind == fxpOpendir}
		}
	}
	return nil
}

// uploadVerdict is the verdict under upload_only, and the reply to read
// if the request passes. The caller holds g.state.
//
// A positive list: request types and extensions not named here are
// refused, for sekisho cannot tell where they write (and sftp-server
// does not answer unknown types, which would break the count).
func (g *sftpGuard) uploadVerdict(pkt []byte) (id uint32, why string, follow sftpAwait) {
	if len(pkt) < 9 {
		return 0, "malformed request", follow
	}
	typ := pkt[4]
	id = binary.BigEndian.Uint32(pkt[5:9])
	if typ == fxpInit {
		return id, "", follow
	}
	c := sftpCursor{b: pkt[9:], ok: true}
	switch typ {
	case fxpOpen:
		name, flags := c.str(), c.u32()
		if !c.ok {
			return id, "malformed open request", follow
		}
		if reads, _ := openDirection(flags); reads {
			return id, "only uploads are allowed: opening " + g.shown(name) + " for reading is refused", follow
		}
		p, why := g.changes(name)
		if why == "" {
			why = g.room()
		}
		return id, why, sftpAwait{kind: fxpOpen, path: p}
	case fxpOpendir:
		name := c.str()
		if !c.ok {
			return id, "malformed opendir request", follow
		}
		p, why := g.looks(name)
		if why == "" {
			why = g.room()
		}
		return id, why, sftpAwait{kind: fxpOpendir, path: p}
	case fxpRealpath:
		name := c.str()
		if !c.ok {
			return id, "malformed realpath request", follow
		}
		if len(name) == 0 || string(name) == "." {
			// What OpenSSH's sftp asks first: where the login starts.
			if g.room() != "" {
				return id, "", follow
			}
			return id, "", sftpAwait{kind: fxpRealpath}
		}
		_, why = g.looks(name)
		return id, why, follow
	case fxpLstat, fxpStat, fxpReadlink:
		name := c.str()
		if !c.ok {
			return id, "malformed request", follow
		}
		_, why = g.looks(name)
		return id, why, follow
	case fxpClose:
		h := c.str()
		if !c.ok {
			return id, "malformed close request", follow
		}
		delete(g.handles, string(h))
		return id, "", follow
	case fxpRead, fxpWrite:
		// On handles the target gave for opens that passed: for writing,
		// inside an upload directory, or for listing.
		return id, "", follow
	case fxpReaddir, fxpFstat:
		return id, g.byHandle(&c, false), follow
	case fxpFsetstat:
		return id, g.byHandle(&c, true), follow
	case fxpSetstat, fxpRemove, fxpMkdir, fxpRmdir:
		name := c.str()
		if !c.ok {
			return id, "malformed request", follow
		}
		_, why = g.changes(name)
		return id, why, follow
	case fxpRename:
		return id, g.changesBoth(&c), follow
	case fxpSymlink:
		_, link := c.str(), c.str() // OpenSSH's order: where it points, then the link
		if !c.ok {
			return id, "malformed symlink request", follow
		}
		return id, "uploads may not make symbolic links (" + g.shown(link) + ")", follow
	case fxpExtended:
		name := c.str()
		if !c.ok {
			return id, "malformed extended request", follow
		}
		return id, g.extendedVerdict(string(name), &c), follow
	}
	return id, "only uploads are allowed: sekisho lets no sftp request of type " + strconv.Itoa(int(typ)) + " through", follow
}

// extendedVerdict is uploadVerdict for an extended request named name,
// c at its fields.
func (g *sftpGuard) extendedVerdict(name string, c *sftpCursor) string {
	switch name {
	case "limits@openssh.com":
		return ""
	case "users-groups-by-id@openssh.com":
		// It names any user and group id asked for: a listing of the
		// target's accounts. sftp's ls -l then shows numbers.
		return "only uploads are allowed: the target's user and group names are not listed"
	case "posix-rename@openssh.com", "hardlink@openssh.com":
		return g.changesBoth(c)
	case "lsetstat@openssh.com":
		p := c.str()
		if !c.ok {
			return "malformed lsetstat request"
		}
		_, why := g.changes(p)
		return why
	case "statvfs@openssh.com":
		p := c.str()
		if !c.ok {
			return "malformed statvfs request"
		}
		_, why := g.looks(p)
		return why
	case "expand-path@openssh.com":
		p := c.str()
		if !c.ok {
			return "malformed expand-path request"
		}
		// sftp-server expands "~" and "~/" to where the login starts,
		// "~user" to that user's home.
		switch {
		case string(p) == "~":
			p = nil
		case len(p) >= 2 && p[0] == '~' && p[1] == '/':
			p = p[2:]
		case len(p) > 0 && p[0] == '~':
			return "uploads may only go into " + g.dirs + ", and files may be looked at only there; " + shownPath(string(p)) + " is another user's home"
		}
		_, why := g.looks(p)
		return why
	case "fstatvfs@openssh.com":
		return g.byHandle(c, false)
	case "fsync@openssh.com":
		return g.byHandle(c, true)
	}
	return "only uploads are allowed: sekisho lets no " + shownPath(name) + " request through"
}

// resolve returns p as the target resolves it: absolute and clean,
// relative paths against the login's home. It fails on a relative path
// while the home is unknown, and on a NUL (which sftp-server refuses).
//
// ".." is resolved textually, as the kernel does when no component is a
// symbolic link. Symbolic links already on the target are out of reach
// of any path check: a link inside an upload directory that points
// elsewhere takes writes elsewhere. That is what the target must prevent
// (a chrooted SFTP login, say); sekisho only refuses to make new links.
func (g *sftpGuard) resolve(p []byte) (string, string) {
	switch {
	case hasNUL(p):
		return "", "malformed path"
	case len(p) > 0 && p[0] == '/':
		return path.Clean(string(p)), ""
	case g.home == "":
		return "", "uploads may only go into " + g.dirs + "; " + shownPath(string(p)) +
			" is relative, and sekisho does not know the login's home yet: give an absolute path"
	}
	return path.Clean(g.home + "/" + string(p)), ""
}

// shown is raw for a message: resolved when it can be.
func (g *sftpGuard) shown(raw []byte) string {
	if p, why := g.resolve(raw); why == "" {
		return shownPath(p)
	}
	return shownPath(string(raw))
}

// changes checks a path that a request writes or changes: it must be
// strictly inside an upload directory.
func (g *sftpGuard) changes(raw []byte) (string, string) {
	p, why := g.resolve(raw)
	if why != "" {
		return p, why
	}
	for _, d := range g.uploadTo {
		if within(p, d, true) {
			return p, ""
		}
	}
	for _, d := range g.uploadTo {
		if p == d {
			return p, "uploads may only go into " + g.dirs + "; " + shownPath(p) + " itself may not be changed"
		}
	}
	return p, "uploads may only go into " + g.dirs + "; " + shownPath(p) + " is outside " + g.itThem
}

// changesBoth checks the two paths of a rename or link, c at them.
func (g *sftpGuard) changesBoth(c *sftpCursor) string {
	from, to := c.str(), c.str()
	if !c.ok {
		return "malformed request"
	}
	if _, why := g.changes(from); why != "" {
		return why
	}
	_, why := g.changes(to)
	return why
}

// looks checks a path that a request looks at (stat, listing, realpath):
// it must be an upload directory or inside one.
func (g *sftpGuard) looks(raw []byte) (string, string) {
	p, why := g.resolve(raw)
	if why != "" {
		return p, why
	}
	for _, d := range g.uploadTo {
		if within(p, d, false) {
			return p, ""
		}
	}
	return p, "uploads may only go into " + g.dirs + ", and files may be looked at only there; " + shownPath(p) + " is outside " + g.itThem
}

// byHandle checks a request on a handle, c at it: the handle must be one
// the target gave for a path the guard let through; to change, a file
// strictly inside an upload directory.
func (g *sftpGuard) byHandle(c *sftpCursor, change bool) string {
	h := c.str()
	if !c.ok {
		return "malformed request"
	}
	f, ok := g.handles[string(h)]
	switch {
	case !ok:
		return "uploads may only go into " + g.dirs + "; this handle is not one sekisho saw opened there"
	case change && f.dir:
		return "uploads may only go into " + g.dirs + "; the directory " + shownPath(f.path) + " may not be changed by handle"
	}
	return ""
}

// room refuses a request that would make the guard follow more than
// maxSFTPFollowed handles and replies.
func (g *sftpGuard) room() string {
	if len(g.handles)+len(g.awaiting) >= maxSFTPFollowed {
		return "uploads may only go into " + g.dirs + ", and sekisho follows at most " +
			strconv.Itoa(maxSFTPFollowed) + " open files and directories at once: close some"
	}
	return ""
}

// within reports whether the clean absolute path p is inside dir (a clean
// absolute directory), or dir itself unless strict.
func within(p, dir string, strict bool) bool {
	switch {
	case p == dir:
		return !strict
	case dir == "/":
		return strings.HasPrefix(p, "/")
	}
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

func hasNUL(p []byte) bool {
	for _, b := range p {
		if b == 0 {
			return true
		}
	}
	return false
}

// shownPath is p for a message: at most maxShownPath bytes, and quoted
// when it holds anything but printable characters.
func shownPath(p string) string {
	cut := len(p) > maxShownPath
	if cut {
		p = p[:maxShownPath]
	}
	if !utf8.ValidString(p) || strings.IndexFunc(p, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0 {
		p = strconv.Quote(p)
	}
	if cut {
		p += "..."
	}
	return p
}
