package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/sekisho/sekisho/broker"
)

func sftpPacket(typ byte, id uint32, body ...[]byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint32(b, id)
	for _, x := range body {
		b = append(b, x...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func str(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func TestSFTPVerdict(t *testing.T) {
	open := func(flags uint32) []byte { return sftpPacket(fxpOpen, 7, str("/etc/passwd"), u32(flags), u32(0)) }
	tests := []struct {
		files string
		pkt   []byte
		want  string // "" passes
	}{
		{broker.FilesUpload, open(fxfWrite | fxfCreat | fxfTrunc), ""},
		{broker.FilesUpload, open(fxfRead), "only uploads"},
		{broker.FilesUpload, open(fxfRead | fxfWrite), "only uploads"},
		{broker.FilesUpload, open(0), "only uploads"}, // read-only open
		{broker.FilesUpload, open(fxfAppend), "only uploads"},
		{broker.FilesUpload, open(fxfCreat | fxfTrunc), "only uploads"},
		{broker.FilesDownload, open(fxfRead), ""},
		{broker.FilesDownload, open(fxfWrite), "only downloads"},
		{broker.FilesDownload, open(fxfAppend), "only downloads"},
		{broker.FilesDownload, sftpPacket(fxpRemove, 7, str("/x")), "only downloads"},
		{broker.FilesDownload, sftpPacket(fxpRename, 7, str("/x"), str("/y")), "only downloads"},
		{broker.FilesDownload, sftpPacket(fxpSetstat, 7, str("/x"), u32(0)), "only downloads"},
		{broker.FilesDownload, sftpPacket(fxpExtended, 7, str("posix-rename@openssh.com"), str("/x"), str("/y")), "only downloads"},
		{broker.FilesDownload, sftpPacket(fxpExtended, 7, str("statvfs@openssh.com"), str("/")), ""},
		{broker.FilesUpload, sftpPacket(fxpMkdir, 7, str("/x"), u32(0)), ""},
		{broker.FilesUpload, sftpPacket(16 /* realpath */, 7, str(".")), ""},
		{broker.FilesDownload, sftpPacket(fxpOpen, 7, str("/x")), "malformed"},
		{broker.FilesDownload, sftpPacket(fxpExtended, 7, []byte{0, 0, 9}), "only downloads"},
	}
	for i, tt := range tests {
		id, why := sftpVerdict(tt.files, tt.pkt)
		if id != 7 || (tt.want == "") != (why == "") || !bytes.Contains([]byte(why), []byte(tt.want)) {
			t.Errorf("%d: %s: id %d, why %q; want %q", i, tt.files, id, why, tt.want)
		}
	}
}

func TestPacketReader(t *testing.T) {
	a, b := sftpPacket(fxpOpen, 1, str("a")), sftpPacket(fxpRemove, 2, str("b"))
	pr := &packetReader{r: bytes.NewReader(append(append([]byte{}, a...), b...))}
	for _, want := range [][]byte{a, b} {
		got, err := pr.next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %x, %v; want %x", got, err, want)
		}
	}
	if _, err := pr.next(); err != io.EOF {
		t.Errorf("at the end: %v, want EOF", err)
	}
	for _, bad := range [][]byte{{0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 9, 1}, {0, 0}} {
		if _, err := (&packetReader{r: bytes.NewReader(bad)}).next(); !errors.Is(err, errSFTPProtocol) {
			t.Errorf("%x: %v, want a protocol error", bad, err)
		}
	}
}

func TestStatusPacket(t *testing.T) {
	p := statusPacket(42, "no")
	if got := binary.BigEndian.Uint32(p); int(got) != len(p)-4 || p[4] != fxpStatus ||
		binary.BigEndian.Uint32(p[5:]) != 42 || binary.BigEndian.Uint32(p[9:]) != fxPermissionDenied {
		t.Errorf("status packet %x", p)
	}
}

func FuzzSFTPVerdict(f *testing.F) {
	f.Add([]byte(sftpPacket(fxpOpen, 1, str("/x"), u32(1), u32(0))))
	f.Add([]byte(sftpPacket(fxpExtended, 1, str("statvfs@openssh.com"))))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		for _, files := range []string{broker.FilesUpload, broker.FilesDownload, broker.FilesNone} {
			sftpVerdict(files, pkt)
		}
		(&packetReader{r: bytes.NewReader(pkt)}).next()
	})
}
