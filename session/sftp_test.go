package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
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
		{broker.FilesUpload, sftpPacket(fxpRealpath, 7, str(".")), ""},
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

// uploadGuard is a guard for files: upload_only into /tmp and /srv/in;
// with home, it has seen the target answer REALPATH "." with it.
func uploadGuard(t testing.TB, home string) *sftpGuard {
	t.Helper()
	g := newSFTPGuard(broker.Limits{Files: broker.FilesUpload, UploadTo: []string{"/tmp", "/srv/in"}})
	exchange(t, g, sftpPacket(fxpInit, 3), sftpPacket(fxpVersion, 3))
	if home != "" {
		exchange(t, g, sftpPacket(fxpRealpath, 1, str(".")), nameReply(1, home))
		if g.home != home {
			t.Fatalf("home %q after the target said %q", g.home, home)
		}
	}
	return g
}

// exchange has g pass request and then see reply; both must go through.
func exchange(t testing.TB, g *sftpGuard, request, reply []byte) {
	t.Helper()
	if _, why := g.request(request); why != "" {
		t.Fatalf("request %x refused: %s", request, why)
	}
	if err := g.reply(reply); err != nil {
		t.Fatalf("reply %x: %v", reply, err)
	}
}

func nameReply(id uint32, name string) []byte {
	return sftpPacket(fxpName, id, u32(1), str(name), str(""), u32(0))
}

func ext(name string, fields ...[]byte) []byte {
	return sftpPacket(fxpExtended, 7, append([][]byte{str(name)}, fields...)...)
}

func TestSFTPUploadDirs(t *testing.T) {
	const write = fxfWrite | fxfCreat | fxfTrunc
	open := func(p string, flags uint32) []byte { return sftpPacket(fxpOpen, 7, str(p), u32(flags), u32(0)) }
	one := func(typ byte, p string) []byte { return sftpPacket(typ, 7, str(p), u32(0)) }
	two := func(typ byte, a, b string) []byte { return sftpPacket(typ, 7, str(a), str(b)) }
	const outside = " is outside them"
	const looked = "files may be looked at only there; "
	tests := []struct {
		home string // "" while the target has not said
		pkt  []byte
		want string // "" passes
	}{
		// Writes and changes: strictly inside an upload directory.
		{"/home/li", open("/tmp/x", write), ""},
		{"/home/li", open("/srv/in/sub/x", fxfWrite|fxfAppend), ""},
		{"/home/li", open("/tmp/a/../b", write), ""},
		{"/home/li", open("/tmp", write), "/tmp itself may not be changed"},
		{"/home/li", open("/etc/x", write), "uploads may only go into /tmp or /srv/in; /etc/x" + outside},
		{"/home/li", open("/tmp/../etc/passwd", write), "; /etc/passwd" + outside},
		{"/home/li", open("/tmp/./../etc", write), "; /etc" + outside},
		{"/home/li", open("//tmp/../etc/x", write), "; /etc/x" + outside},
		{"/home/li", open("/tmp/x/../../etc/x", write), "; /etc/x" + outside},
		{"/home/li", open("/tmpx/y", write), "; /tmpx/y" + outside},
		{"/home/li", open("/srv/inbox/y", write), "; /srv/inbox/y" + outside},
		{"/home/li", open("../../etc/x", write), "; /etc/x" + outside},
		{"/home/li", open(".bashrc", write), "; /home/li/.bashrc" + outside},
		{"/home/li", open("../../tmp/x", write), ""},
		{"/tmp/li", open(".bashrc", write), ""},
		{"", open(".bashrc", write), ".bashrc is relative, and sekisho does not know the login's home yet"},
		{"", open("", write), "is relative"},
		{"", open("/tmp/x", write), ""},
		{"/home/li", open("/tmp/x\x00/../../etc/x", write), "malformed path"},
		{"/home/li", open("/tmp/\x1b[2Jx", write), ""},
		{"/home/li", open("/etc/\x1b[2Jx", write), `"/etc/\x1b[2Jx"` + outside},
		{"/home/li", open("/etc/"+strings.Repeat("a", 300), write), "aaa..." + outside},
		{"/home/li", open("/tmp/x", fxfRead), "only uploads are allowed: opening /tmp/x for reading"},
		{"/home/li", open("passwd", 0), "opening /home/li/passwd for reading"},
		{"/home/li", open("/tmp/x", fxfRead|fxfWrite), "for reading"},
		{"/home/li", sftpPacket(fxpOpen, 7, str("/tmp/x")), "malformed"},
		{"/home/li", one(fxpSetstat, "/tmp/x"), ""},
		{"/home/li", one(fxpSetstat, "/tmp"), "itself"},
		{"/home/li", one(fxpSetstat, "/etc/shadow"), "/etc/shadow" + outside},
		{"/home/li", one(fxpRemove, "/tmp/x"), ""},
		{"/home/li", one(fxpRemove, "/tmp/../etc/x"), "/etc/x" + outside},
		{"/home/li", one(fxpMkdir, "/srv/in/d"), ""},
		{"/home/li", one(fxpMkdir, "/srv/d"), "/srv/d" + outside},
		{"/home/li", one(fxpRmdir, "/srv/in"), "/srv/in itself"},
		{"/home/li", one(fxpRmdir, "/srv/in/d"), ""},
		{"/home/li", two(fxpRename, "/tmp/a", "/srv/in/a"), ""},
		{"/home/li", two(fxpRename, "/tmp/a", "/etc/a"), "/etc/a" + outside},
		{"/home/li", two(fxpRename, "/etc/a", "/tmp/a"), "/etc/a" + outside},
		{"/home/li", two(fxpRename, "/tmp/a", "../.ssh/authorized_keys"), "/home/.ssh/authorized_keys" + outside},
		{"/home/li", ext("posix-rename@openssh.com", str("/tmp/a"), str("/tmp/b")), ""},
		{"/home/li", ext("posix-rename@openssh.com", str("/tmp/a"), str("/tmp/../etc/a")), "/etc/a" + outside},
		{"/home/li", ext("hardlink@openssh.com", str("/etc/shadow"), str("/tmp/s")), "/etc/shadow" + outside},
		{"/home/li", ext("hardlink@openssh.com", str("/tmp/a"), str("/etc/cron.d/a")), "/etc/cron.d/a" + outside},
		{"/home/li", ext("hardlink@openssh.com", str("/tmp/a"), str("/tmp/b")), ""},
		{"/home/li", ext("hardlink@openssh.com", str("/tmp/a")), "malformed"},
		{"/home/li", ext("lsetstat@openssh.com", str("/tmp/x"), u32(0)), ""},
		{"/home/li", ext("lsetstat@openssh.com", str("/etc/x"), u32(0)), "/etc/x" + outside},
		{"/home/li", two(fxpSymlink, "/etc/passwd", "/tmp/l"), "uploads may not make symbolic links (/tmp/l)"},
		{"/home/li", two(fxpSymlink, "/tmp/a", "/tmp/b"), "symbolic links"},
		{"/home/li", ext("copy-data", str("h"), u32(0), u32(0), u32(0), str("g"), u32(0), u32(0)), "sekisho lets no copy-data request through"},
		{"/home/li", ext("home-directory", str("root")), "lets no home-directory request"},
		{"/home/li", ext("foo@example.com"), "lets no foo@example.com request"},
		{"/home/li", sftpPacket(99, 7), "lets no sftp request of type 99 through"},
		{"/home/li", sftpPacket(fxpStatus, 7, u32(0)), "type 101"},
		{"/home/li", []byte{0, 0, 0, 1, fxpOpen}, "malformed"},
		// Looking: an upload directory or inside one.
		{"/home/li", one(fxpStat, "/tmp"), ""},
		{"/home/li", one(fxpStat, "/tmp/"), ""},
		{"/home/li", one(fxpStat, "//srv/in/x"), ""},
		{"/home/li", one(fxpStat, "/"), looked + "/" + outside},
		{"/home/li", one(fxpStat, "/etc"), "uploads may only go into /tmp or /srv/in, and " + looked + "/etc" + outside},
		{"/home/li", one(fxpLstat, "/tmp/../etc"), looked + "/etc" + outside},
		{"/home/li", one(fxpStat, "."), looked + "/home/li" + outside},
		{"", one(fxpStat, "."), "relative"},
		{"/home/li", one(fxpReadlink, "/etc/alternatives/x"), looked + "/etc/alternatives/x" + outside},
		{"/home/li", one(fxpReadlink, "/tmp/l"), ""},
		{"/home/li", one(fxpOpendir, "/"), looked + "/" + outside},
		{"/home/li", one(fxpOpendir, "/etc/"), looked + "/etc" + outside},
		{"/home/li", one(fxpOpendir, "/tmp"), ""},
		{"/home/li", one(fxpOpendir, "/tmp/.."), looked + "/" + outside},
		{"/home/li", one(fxpRealpath, "."), ""},
		{"/home/li", one(fxpRealpath, ""), ""},
		{"", one(fxpRealpath, "."), ""},
		{"/home/li", one(fxpRealpath, "/"), looked + "/" + outside},
		{"/home/li", one(fxpRealpath, ".."), looked + "/home" + outside},
		{"/home/li", one(fxpRealpath, "/tmp/x/.."), ""},
		{"/home/li", ext("statvfs@openssh.com", str("/")), looked + "/" + outside},
		{"/home/li", ext("statvfs@openssh.com", str("/tmp")), ""},
		{"/home/li", ext("expand-path@openssh.com", str("~root")), "~root is another user's home"},
		{"/home/li", ext("expand-path@openssh.com", str("~")), looked + "/home/li" + outside},
		{"/home/li", ext("expand-path@openssh.com", str("~/../../tmp/x")), ""},
		{"/home/li", ext("expand-path@openssh.com", str("/tmp")), ""},
		{"/home/li", ext("limits@openssh.com"), ""},
		{"/home/li", ext("users-groups-by-id@openssh.com", u32(0), u32(0)), "user and group names are not listed"},
		// By handle: only handles the target gave for what passed.
		{"/home/li", sftpPacket(fxpReaddir, 7, str("\x00\x00\x00\x05")), "this handle is not one sekisho saw opened there"},
		{"/home/li", sftpPacket(fxpFstat, 7, str("\x00\x00\x00\x05")), "this handle"},
		{"/home/li", sftpPacket(fxpFsetstat, 7, str("\x00\x00\x00\x05"), u32(0)), "this handle"},
		{"/home/li", ext("fsync@openssh.com", str("\x00\x00\x00\x05")), "this handle"},
		{"/home/li", ext("fstatvfs@openssh.com", str("\x00\x00\x00\x05")), "this handle"},
		{"/home/li", sftpPacket(fxpWrite, 7, str("\x00\x00\x00\x05"), u32(0), u32(0), str("x")), ""},
		{"/home/li", sftpPacket(fxpClose, 7, str("\x00\x00\x00\x05")), ""},
	}
	for i, tt := range tests {
		g := uploadGuard(t, tt.home)
		id, why := g.request(tt.pkt)
		if (id != 7 && len(tt.pkt) >= 9) || (tt.want == "") != (why == "") || !strings.Contains(why, tt.want) {
			t.Errorf("%d: %x (home %q): id %d, why %q; want %q", i, tt.pkt, tt.home, id, why, tt.want)
		}
	}
	if g := newSFTPGuard(broker.Limits{Files: broker.FilesUpload, UploadTo: []string{"/"}}); !within("/etc/x", "/", true) || within("/", "/", true) {
		t.Error("/ as the upload directory")
	} else if _, why := g.request(sftpPacket(fxpOpen, 7, str("/etc/x"), u32(fxfWrite), u32(0))); why != "" {
		t.Errorf("upload_to [/]: %s", why)
	}
}

// The guard reads the replies of what it let through: the home, handles.
func TestSFTPGuardFollowsReplies(t *testing.T) {
	g := uploadGuard(t, "")
	refused := func(pkt []byte, want string) {
		t.Helper()
		if _, why := g.request(pkt); !strings.Contains(why, want) || why == "" {
			t.Errorf("%x: %q, want %q", pkt, why, want)
		}
	}
	// passes has the target answer what passed with a status, for each
	// request gets one reply; awaits leaves it waiting.
	awaits := func(pkt []byte) {
		t.Helper()
		if _, why := g.request(pkt); why != "" {
			t.Errorf("%x refused: %s", pkt, why)
		}
	}
	passes := func(pkt []byte) {
		t.Helper()
		awaits(pkt)
		if err := g.reply(sftpPacket(fxpStatus, binary.BigEndian.Uint32(pkt[5:]), u32(0), str(""), str(""))); err != nil {
			t.Error(err)
		}
	}
	bashrc := sftpPacket(fxpOpen, 20, str(".bashrc"), u32(fxfWrite|fxfCreat), u32(0))

	// A refused request reaches no target and gets no reply there: the
	// count of replies stays right.
	refused(sftpPacket(99, 2), "type 99")
	// Two requests with one ID: the first reply answers the first. The
	// home is what the target says for ".", not what it said for /tmp/sub.
	awaits(sftpPacket(fxpRealpath, 2, str("/tmp/sub")))
	awaits(sftpPacket(fxpRealpath, 2, str(".")))
	for _, reply := range [][]byte{nameReply(2, "/tmp/sub"), nameReply(2, "/home/li")} {
		if err := g.reply(reply); err != nil {
			t.Fatal(err)
		}
	}
	if g.home != "/home/li" {
		t.Fatalf("home %q", g.home)
	}
	refused(bashrc, "/home/li/.bashrc is outside")
	// A home that is not an absolute path is not taken.
	exchange(t, g, sftpPacket(fxpRealpath, 3, str("")), nameReply(3, "relative"))
	exchange(t, g, sftpPacket(fxpRealpath, 3, str("")), sftpPacket(fxpStatus, 3, u32(2), str(""), str("")))
	if g.home != "/home/li" {
		t.Fatalf("home %q", g.home)
	}

	dir, file := "\x00\x00\x00\x01", "\x00\x00\x00\x02"
	exchange(t, g, sftpPacket(fxpOpendir, 4, str("/tmp")), sftpPacket(fxpHandle, 4, str(dir)))
	exchange(t, g, sftpPacket(fxpOpen, 5, str("/tmp/x"), u32(fxfWrite), u32(0)), sftpPacket(fxpHandle, 5, str(file)))
	passes(sftpPacket(fxpReaddir, 6, str(dir)))
	passes(sftpPacket(fxpFstat, 6, str(dir)))
	refused(sftpPacket(fxpFsetstat, 6, str(dir), u32(0)), "the directory /tmp may not be changed by handle")
	passes(sftpPacket(fxpFsetstat, 6, str(file), u32(0)))
	passes(ext("fsync@openssh.com", str(file)))
	// A handle the target gave for another listing (one sekisho did not
	// see: the count of replies holds only for what passed) is refused.
	refused(sftpPacket(fxpOpendir, 7, str("/etc")), "/etc is outside")
	refused(sftpPacket(fxpReaddir, 8, str("\x00\x00\x00\x03")), "this handle")
	// A failed open gives none either.
	exchange(t, g, sftpPacket(fxpOpendir, 9, str("/tmp/gone")), sftpPacket(fxpStatus, 9, u32(2), str(""), str("")))
	if len(g.handles) != 2 || len(g.awaiting) != 0 {
		t.Errorf("handles %v, awaiting %v", g.handles, g.awaiting)
	}
	// A closed handle is gone (the target reuses the number).
	passes(sftpPacket(fxpClose, 10, str(dir)))
	refused(sftpPacket(fxpReaddir, 11, str(dir)), "this handle")

	// At most maxSFTPFollowed handles and awaited replies.
	for i := range maxSFTPFollowed - len(g.handles) {
		awaits(sftpPacket(fxpOpendir, uint32(100+i), str("/tmp")))
	}
	refused(sftpPacket(fxpOpendir, 99, str("/tmp")), "at most 64 open files")
	awaits(sftpPacket(fxpRealpath, 99, str("."))) // passes, not followed
	if len(g.awaiting)+len(g.handles) > maxSFTPFollowed {
		t.Errorf("%d awaited, %d handles", len(g.awaiting), len(g.handles))
	}

	// A target that answers out of order breaks the channel.
	g = uploadGuard(t, "/home/li")
	awaits(sftpPacket(fxpOpen, 5, str("/tmp/x"), u32(fxfWrite), u32(0)))
	if err := g.reply(sftpPacket(fxpHandle, 6, str(file))); !errors.Is(err, errSFTPProtocol) {
		t.Errorf("a reply to another request: %v", err)
	}

	// Other limits follow nothing.
	d := newSFTPGuard(broker.Limits{Files: broker.FilesDownload})
	for _, pkt := range [][]byte{sftpPacket(fxpInit, 3), sftpPacket(fxpOpen, 1, str("/etc/passwd"), u32(fxfRead), u32(0))} {
		if _, why := d.request(pkt); why != "" {
			t.Errorf("download_only: %x refused: %s", pkt, why)
		}
	}
	if err := d.reply(sftpPacket(fxpHandle, 9, str(file))); err != nil || len(d.handles) != 0 {
		t.Errorf("download_only followed a reply: %v, %v", err, d.handles)
	}
	if _, why := d.request(sftpPacket(fxpRemove, 1, str("/tmp/x"))); !strings.Contains(why, "only downloads") {
		t.Errorf("download_only remove: %q", why)
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

// FuzzSFTPVerdict takes the input as one request for every files limit,
// and as a stream of packets through an upload-only guard twice (types
// from 101 on, and VERSION, are the target's):
//   - as they are, replies included: whatever the guard lets through must
//     name only paths that an independent resolution, against the home
//     the guard holds, puts where the rule allows;
//   - with the target played by an in-order sftp-server whose login
//     starts in /home/li, which answers each request it gets (realpath
//     as it resolves, open with a handle, the rest with a status) when a
//     reply comes in the input: then the paths must be where the rule
//     allows against the real home.
func FuzzSFTPVerdict(f *testing.F) {
	f.Add([]byte(sftpPacket(fxpOpen, 1, str("/x"), u32(1), u32(0))))
	f.Add([]byte(sftpPacket(fxpExtended, 1, str("statvfs@openssh.com"))))
	seed := func(pkts ...[]byte) { f.Add(bytes.Join(pkts, nil)) }
	reply := sftpPacket(fxpStatus, 0)
	seed(sftpPacket(fxpInit, 3), sftpPacket(fxpVersion, 3), sftpPacket(fxpRealpath, 1, str(".")), nameReply(1, "/home/li"),
		sftpPacket(fxpOpen, 2, str("../../tmp/x"), u32(fxfWrite), u32(0)), sftpPacket(fxpHandle, 2, str("\x00\x00\x00\x00")),
		sftpPacket(fxpFsetstat, 3, str("\x00\x00\x00\x00"), u32(0)))
	seed(sftpPacket(fxpRealpath, 1, str("/tmp/sub")), sftpPacket(fxpRealpath, 1, str(".")), nameReply(1, "/tmp/sub"), nameReply(1, "/home/li"),
		sftpPacket(fxpOpen, 2, str(".bashrc"), u32(fxfWrite), u32(0)))
	seed(sftpPacket(fxpOpendir, 1, str("/tmp")), sftpPacket(fxpHandle, 1, str("d")), sftpPacket(fxpReaddir, 2, str("d")),
		sftpPacket(fxpClose, 3, str("d")), sftpPacket(fxpReaddir, 4, str("d")))
	seed(sftpPacket(fxpRename, 1, str("/tmp/a"), str("/tmp/../etc/a")), ext("hardlink@openssh.com", str("/etc/shadow"), str("/tmp/s")),
		sftpPacket(fxpSymlink, 1, str("/etc"), str("/tmp/l")), ext("expand-path@openssh.com", str("~/x")))
	seed(sftpPacket(fxpInit, 3), reply, sftpPacket(fxpRealpath, 1, str("/tmp/sub")), sftpPacket(fxpRealpath, 1, str(".")), reply, reply,
		sftpPacket(fxpOpen, 2, str("x"), u32(fxfWrite), u32(0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, files := range []string{broker.FilesUpload, broker.FilesDownload, broker.FilesNone} {
			sftpVerdict(files, data)
			newSFTPGuard(broker.Limits{Files: files, UploadTo: []string{"/tmp"}}).request(data)
		}
		(&packetReader{r: bytes.NewReader(data)}).next()

		for _, played := range []bool{false, true} {
			g := newSFTPGuard(broker.Limits{Files: broker.FilesUpload, UploadTo: []string{"/tmp", "/srv/in"}})
			var answers [][]byte // the played target's, in order
			handles := uint32(0)
			pr := &packetReader{r: bytes.NewReader(data)}
			for {
				pkt, err := pr.next()
				if err != nil {
					break
				}
				if typ := pkt[4]; typ == fxpVersion || typ >= fxpStatus {
					switch {
					case !played:
						g.reply(pkt)
					case len(answers) > 0:
						if err := g.reply(answers[0]); err != nil {
							t.Fatalf("an in-order target's reply: %v", err)
						}
						answers = answers[1:]
					}
					continue
				}
				home := g.home
				if played {
					home = "/home/li"
				}
				if _, why := g.request(pkt); why == "" {
					checkForwarded(t, pkt, home, g)
					if played && len(pkt) >= 9 {
						answers = append(answers, sftpServerReply(pkt, home, &handles))
					}
				}
				if played && g.home != "" && g.home != home {
					t.Fatalf("the guard takes %q for the home", g.home)
				}
				if n := len(g.awaiting) + len(g.handles); n > maxSFTPFollowed {
					t.Fatalf("the guard follows %d handles and replies", n)
				}
			}
		}
	})
}

// sftpServerReply is what an in-order sftp-server whose login starts in
// home answers to request pkt.
func sftpServerReply(pkt []byte, home string, handles *uint32) []byte {
	id := binary.BigEndian.Uint32(pkt[5:9])
	c := sftpCursor{b: pkt[9:], ok: true}
	switch pkt[4] {
	case fxpInit:
		return sftpPacket(fxpVersion, 3)
	case fxpRealpath:
		if segs := segments(home, c.str()); c.ok && segs != nil {
			return nameReply(id, "/"+strings.Join(segs, "/"))
		}
	case fxpOpen, fxpOpendir:
		*handles++
		return sftpPacket(fxpHandle, id, str(string(u32(*handles))))
	}
	return sftpPacket(fxpStatus, id, u32(0), str(""), str(""))
}

// checkForwarded fails t unless pkt, which an upload-only guard let
// through with home, names only allowed paths.
func checkForwarded(t *testing.T, pkt []byte, home string, g *sftpGuard) {
	t.Helper()
	c := sftpCursor{b: pkt[9:], ok: true}
	inside := func(p []byte, strict bool) {
		t.Helper()
		segs := segments(home, p)
		if segs == nil {
			t.Fatalf("%x passed with path %q (home %q)", pkt, p, home)
		}
		for _, d := range g.uploadTo {
			ds := segments("", []byte(d))
			if len(segs) >= len(ds) && slices.Equal(segs[:len(ds)], ds) && (!strict || len(segs) > len(ds)) {
				return
			}
		}
		t.Fatalf("%x passed with path %q (home %q): resolves to /%s", pkt, p, home, strings.Join(segs, "/"))
	}
	switch pkt[4] {
	case fxpInit, fxpClose, fxpRead, fxpWrite, fxpReaddir, fxpFstat, fxpFsetstat:
	case fxpOpen:
		name, flags := c.str(), c.u32()
		if reads, _ := openDirection(flags); reads {
			t.Fatalf("%x passed: it opens for reading", pkt)
		}
		inside(name, true)
	case fxpSetstat, fxpRemove, fxpMkdir, fxpRmdir:
		inside(c.str(), true)
	case fxpRename:
		inside(c.str(), true)
		inside(c.str(), true)
	case fxpOpendir, fxpStat, fxpLstat, fxpReadlink:
		inside(c.str(), false)
	case fxpRealpath:
		if p := c.str(); len(p) != 0 && string(p) != "." {
			inside(p, false)
		}
	case fxpExtended:
		switch name := string(c.str()); name {
		case "posix-rename@openssh.com", "hardlink@openssh.com":
			inside(c.str(), true)
			inside(c.str(), true)
		case "lsetstat@openssh.com":
			inside(c.str(), true)
		case "statvfs@openssh.com":
			inside(c.str(), false)
		case "expand-path@openssh.com":
			p := c.str()
			if len(p) > 0 && p[0] == '~' {
				if string(p) != "~" && !bytes.HasPrefix(p, []byte("~/")) {
					t.Fatalf("%x passed: ~user", pkt)
				}
				p = bytes.TrimPrefix(bytes.TrimPrefix(p, []byte("~")), []byte("/"))
			}
			inside(p, false)
		case "limits@openssh.com", "fsync@openssh.com", "fstatvfs@openssh.com":
		default:
			t.Fatalf("%x passed: extension %q", pkt, name)
		}
	default:
		t.Fatalf("%x passed: type %d", pkt, pkt[4])
	}
}

// segments resolves p component by component as the kernel does without
// symbolic links, relative to home; nil when it cannot.
func segments(home string, p []byte) []string {
	if bytes.IndexByte(p, 0) >= 0 || (len(p) == 0 || p[0] != '/') && home == "" {
		return nil
	}
	full := string(p)
	if len(p) == 0 || p[0] != '/' {
		full = home + "/" + full
	}
	segs := []string{}
	for _, s := range strings.Split(full, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, s)
		}
	}
	return segs
}
