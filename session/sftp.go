package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sekisho/sekisho/broker"
)

// SFTP packet types this file looks at (draft-ietf-secsh-filexfer-02, the
// version OpenSSH speaks).
const (
	fxpVersion  = 2
	fxpOpen     = 3
	fxpSetstat  = 9
	fxpFsetstat = 10
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRename   = 18
	fxpSymlink  = 20
	fxpStatus   = 101
	fxpExtended = 200

	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10

	fxPermissionDenied = 3

	// maxSFTPPacket bounds one packet; OpenSSH's sftp-server allows 256 KiB.
	maxSFTPPacket = 256 << 10
)

// errSFTPProtocol is a stream that is not SFTP packets.
var errSFTPProtocol = errors.New("malformed sftp packet")

// readOnlyExtensions are the SFTP extensions that change nothing on the
// target; every other extension counts as a write.
var readOnlyExtensions = map[string]bool{
	"statvfs@openssh.com": true, "fstatvfs@openssh.com": true, "limits@openssh.com": true,
	"expand-path@openssh.com": true, "home-directory": true, "users-groups-by-id@openssh.com": true,
}

// sftpVerdict says whether a client request may pass under a files limit.
// It returns the request ID and, when refused, why.
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
		flags := binary.BigEndian.Uint32(rest)
		// sftp-server opens read-only whenever WRITE is not set, whatever
		// else is: such a handle answers READ requests.
		reads = flags&fxfRead != 0 || flags&fxfWrite == 0
		writes = flags&(fxfWrite|fxfAppend|fxfCreat|fxfTrunc) != 0
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
type sftpGuard struct {
	files string
	mu    sync.Mutex // serialises whole packets written to the technician
}

// writeDown writes one whole packet to the technician.
func (g *sftpGuard) writeDown(w io.Writer, pkt []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, err := w.Write(pkt)
	return err
}
