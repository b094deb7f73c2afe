package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// events collects what an observer records, one "code data" string each.
type events struct{ list []string }

func (e *events) emit(code, data string) error {
	e.list = append(e.list, code+" "+data)
	return nil
}

func hexSum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func cat(pkts ...[]byte) []byte { return bytes.Join(pkts, nil) }

// round is requests the client sends without waiting, then the replies.
type round struct{ up, down []byte }

// feedRounds feeds an observer round by round, cutting each direction's
// stream where cut says (positions count from the direction's start).
func feedRounds(t testing.TB, o transferObserver, rounds []round, upCut, downCut func(pos int) bool) {
	t.Helper()
	var upPos, downPos int
	for _, r := range rounds {
		if err := feedCut(o.technician, r.up, &upPos, upCut); err != nil {
			t.Fatal(err)
		}
		if err := feedCut(o.target, r.down, &downPos, downCut); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.end(); err != nil {
		t.Fatal(err)
	}
}

func feedCut(fn func([]byte) error, b []byte, pos *int, cut func(int) bool) error {
	start := 0
	for i := 1; i < len(b); i++ {
		if cut(*pos + i) {
			if err := fn(b[start:i]); err != nil {
				return err
			}
			start = i
		}
	}
	*pos += len(b)
	if start < len(b) {
		return fn(b[start:])
	}
	return nil
}

func noCut(int) bool { return false }

// sftpConversation is an sftp session as OpenSSH's client and server
// would have it: an upload, a download, a write out of order, metadata
// operations and a file left open.
func sftpConversation() ([]round, []string) {
	const write = fxfWrite | fxfCreat | fxfTrunc
	attrs := u32(0)
	status := func(id uint32) []byte { return sftpPacket(fxpStatus, id, u32(0), str(""), str("")) }
	eof := func(id uint32) []byte { return sftpPacket(fxpStatus, id, u32(1), str("EOF"), str("")) }
	up1, up2 := "hello\x00\x00\x00\x04", "world\n"
	rounds := []round{
		{sftpPacket(fxpInit, 3), sftpPacket(fxpVersion, 3, str("limits@openssh.com"), str("1"))},
		{cat(sftpPacket(fxpOpen, 1, str("/tmp/up.bin"), u32(write), attrs),
			sftpPacket(fxpOpen, 2, str("/etc/motd"), u32(fxfRead), attrs),
			sftpPacket(fxpOpen, 3, str("/nope"), u32(fxfRead), attrs)),
			cat(sftpPacket(fxpHandle, 1, str("h1")), sftpPacket(fxpHandle, 2, str("h2")), status(3))},
		{cat(sftpPacket(fxpWrite, 4, str("h1"), u64(0), str(up1)),
			sftpPacket(fxpWrite, 5, str("h1"), u64(uint64(len(up1))), str(up2)),
			sftpPacket(fxpRead, 6, str("h2"), u64(0), u32(4)),
			sftpPacket(fxpRead, 7, str("h2"), u64(4), u32(32768)),
			sftpPacket(fxpRead, 8, str("h2"), u64(9), u32(32768)),
			sftpPacket(16 /* realpath */, 9, str("."))),
			cat(status(4), status(5), sftpPacket(fxpData, 6, str("motd")), sftpPacket(fxpData, 7, str("\nbye\n")), eof(8),
				sftpPacket(104 /* name */, 9, u32(1), str("/home/aiko"), str(""), attrs))},
		{cat(sftpPacket(fxpClose, 10, str("h1")), sftpPacket(fxpClose, 11, str("h2")),
			sftpPacket(fxpOpen, 12, str("/tmp/scattered"), u32(write), attrs)),
			cat(status(10), status(11), sftpPacket(fxpHandle, 12, str("h1")))},
		{cat(sftpPacket(fxpWrite, 13, str("h1"), u64(4), str("tail")),
			sftpPacket(fxpWrite, 14, str("h1"), u64(0), str("head")),
			sftpPacket(fxpClose, 15, str("h1")),
			sftpPacket(fxpRemove, 16, str("/tmp/old")),
			sftpPacket(fxpRename, 17, str("/tmp/a"), str("/tmp/b")),
			sftpPacket(fxpExtended, 18, str("posix-rename@openssh.com"), str("/tmp/c"), str("/tmp/d & e")),
			sftpPacket(fxpMkdir, 19, str("/tmp/dir"), attrs),
			sftpPacket(fxpRmdir, 20, str("/tmp/dir")),
			sftpPacket(fxpSetstat, 21, str("/tmp/b"), attrs),
			sftpPacket(fxpOpen, 22, str("/tmp/left-open"), u32(write), attrs)),
			cat(status(13), status(14), status(15), status(16), status(17), status(18), status(19), status(20), status(21),
				sftpPacket(fxpHandle, 22, str("h3")))},
		{sftpPacket(fxpWrite, 23, str("h3"), u64(0), str("x")), status(23)},
	}
	want := []string{
		`x-file {"protocol":"sftp","direction":"upload","path":"/tmp/up.bin","size":15,"sha256":"` + hexSum(up1+up2) + `"}`,
		`x-file {"protocol":"sftp","direction":"download","path":"/etc/motd","size":9,"sha256":"` + hexSum("motd\nbye\n") + `"}`,
		`x-file {"protocol":"sftp","direction":"upload","path":"/tmp/scattered","size":8,"sha256":"","hash_note":"non-sequential"}`,
		`x-file-op {"protocol":"sftp","op":"remove","path":"/tmp/old"}`,
		`x-file-op {"protocol":"sftp","op":"rename","path":"/tmp/a","to":"/tmp/b"}`,
		`x-file-op {"protocol":"sftp","op":"rename","path":"/tmp/c","to":"/tmp/d & e"}`,
		`x-file-op {"protocol":"sftp","op":"mkdir","path":"/tmp/dir"}`,
		`x-file-op {"protocol":"sftp","op":"rmdir","path":"/tmp/dir"}`,
		`x-file-op {"protocol":"sftp","op":"setstat","path":"/tmp/b"}`,
		`x-file {"protocol":"sftp","direction":"upload","path":"/tmp/left-open","size":1,"sha256":"","hash_note":"incomplete"}`,
	}
	return rounds, want
}

func streamLen(rounds []round, up bool) int {
	n := 0
	for _, r := range rounds {
		if up {
			n += len(r.up)
		} else {
			n += len(r.down)
		}
	}
	return n
}

func TestSFTPObserverEventsAtEveryCut(t *testing.T) {
	t.Parallel()
	rounds, want := sftpConversation()
	check := func(name string, upCut, downCut func(int) bool) {
		t.Helper()
		var got events
		feedRounds(t, newSFTPObserver(got.emit), rounds, upCut, downCut)
		if !slices.Equal(got.list, want) {
			t.Fatalf("%s: events\n%s\nwant\n%s", name, strings.Join(got.list, "\n"), strings.Join(want, "\n"))
		}
	}
	check("whole reads", noCut, noCut)
	check("one byte a read", func(int) bool { return true }, func(int) bool { return true })
	for k := range streamLen(rounds, true) {
		check(fmt.Sprintf("requests cut at %d", k), func(p int) bool { return p == k }, noCut)
	}
	for k := range streamLen(rounds, false) {
		check(fmt.Sprintf("replies cut at %d", k), noCut, func(p int) bool { return p == k })
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		up, down := map[int]bool{}, map[int]bool{}
		for range rng.IntN(20) {
			up[rng.IntN(streamLen(rounds, true))] = true
			down[rng.IntN(streamLen(rounds, false))] = true
		}
		check(fmt.Sprintf("random cuts %d", i), func(p int) bool { return up[p] }, func(p int) bool { return down[p] })
	}
}

func TestSFTPObserverStopsOnceOnBadInput(t *testing.T) {
	t.Parallel()
	open := sftpPacket(fxpOpen, 1, str("/x"), u32(fxfWrite), u32(0))
	for _, tt := range []struct {
		name     string
		up, down []byte
		want     string
	}{
		{"zero length", []byte{0, 0, 0, 0}, nil, "length 0"},
		{"too long", u32(maxSFTPPacket + 1), nil, "length 262145"},
		{"short open", sftpPacket(fxpOpen, 1, str("/x")), nil, "short open request"},
		{"short remove", []byte{0, 0, 0, 2, fxpRemove, 0}, nil, "short remove request"},
		{"short realpath", []byte{0, 0, 0, 2, 16, 0}, nil, "short request of type 16"},
		{"version 6", nil, sftpPacket(fxpVersion, 6), "not version 3"},
		{"long handle", open, sftpPacket(fxpHandle, 1, str(strings.Repeat("h", maxSFTPHandle+1))), "handle of 257 bytes"},
	} {
		var got events
		o := newSFTPObserver(got.emit)
		for range 2 { // after the error, nothing more is parsed
			if err := o.technician(tt.up); err != nil {
				t.Fatal(err)
			}
			if err := o.target(tt.down); err != nil {
				t.Fatal(err)
			}
			o.technician(sftpPacket(fxpRemove, 2, str("/y")))
		}
		if len(got.list) != 1 || !strings.HasPrefix(got.list[0], `x-file-parse-error {"protocol":"sftp","error":"malformed sftp packet: `) ||
			!strings.Contains(got.list[0], tt.want) {
			t.Errorf("%s: events %q, want one parse error with %q", tt.name, got.list, tt.want)
		}
	}
}

func TestSFTPObserverBoundsWhatItFollows(t *testing.T) {
	t.Parallel()
	var got events
	o := newSFTPObserver(got.emit)
	for i := range uint32(maxTracked + 2) {
		o.technician(sftpPacket(fxpOpen, i, str(fmt.Sprintf("/f%d", i)), u32(fxfWrite), u32(0)))
		o.target(sftpPacket(fxpHandle, i, str(fmt.Sprintf("h%d", i))))
	}
	// Reads never answered, and opens never answered, are forgotten too.
	for i := range uint32(2 * maxTracked) {
		o.technician(sftpPacket(fxpRead, 1000+i, str("h257"), u64(uint64(i)), u32(1)))
		o.technician(sftpPacket(fxpOpen, 2000+i, str(strings.Repeat("p", 2*maxTrackedPath)), u32(fxfRead), u32(0)))
	}
	if len(o.files) != maxTracked || len(o.opens) != maxTracked || len(o.reads) != maxTracked {
		t.Errorf("following %d files, %d opens, %d reads; at most %d each", len(o.files), len(o.opens), len(o.reads), maxTracked)
	}
	for _, op := range o.opens {
		if len(op.path) != maxTrackedPath || !op.cut {
			t.Fatalf("a path of %d bytes kept, cut %v", len(op.path), op.cut)
		}
	}
	want := []string{
		`x-file {"protocol":"sftp","direction":"upload","path":"/f0","size":0,"sha256":"","hash_note":"not followed to its close: too many open files"}`,
		`x-file {"protocol":"sftp","direction":"upload","path":"/f1","size":0,"sha256":"","hash_note":"not followed to its close: too many open files"}`,
	}
	if !slices.Equal(got.list, want) {
		t.Errorf("events %q, want %q", got.list, want)
	}
}

func TestObserverReturnsRecordingErrors(t *testing.T) {
	t.Parallel()
	errDisk := errors.New("disk full")
	fail := func(string, string) error { return errDisk }
	o := newSFTPObserver(fail)
	o.technician(sftpPacket(fxpOpen, 1, str("/x"), u32(fxfWrite), u32(0)))
	o.target(sftpPacket(fxpHandle, 1, str("h")))
	if err := o.technician(sftpPacket(fxpClose, 2, str("h"))); !errors.Is(err, errDisk) {
		t.Errorf("sftp close: %v, want the recording error", err)
	}
	if err := newSFTPObserver(fail).technician([]byte{0, 0, 0, 0}); !errors.Is(err, errDisk) {
		t.Errorf("sftp parse error: %v, want the recording error", err)
	}
	s, _ := newTransferObserver("exec", "scp -t /tmp/x", fail)
	if err := s.technician([]byte("C0644 0 x\n\x00")); !errors.Is(err, errDisk) {
		t.Errorf("scp: %v, want the recording error", err)
	}
	if _, err := newTransferObserver("exec", "rsync --server -e.Lsfx . /tmp/x", fail); !errors.Is(err, errDisk) {
		t.Errorf("rsync: %v, want the recording error", err)
	}
}

// scpFeed feeds stream to an observer of command, cut where cut says, and
// returns the events.
func scpFeed(t testing.TB, command, stream string, cut func(int) bool) []string {
	t.Helper()
	var got events
	o, err := newTransferObserver("exec", command, got.emit)
	if err != nil || o == nil {
		t.Fatalf("%q: observer %v, %v", command, o, err)
	}
	var acks []byte
	data := o.technician
	if strings.Contains(command, " -f ") {
		data, acks = o.target, []byte{0, 0, 0}
	} else {
		o.target([]byte{0})
	}
	pos := 0
	if err := feedCut(data, []byte(stream), &pos, cut); err != nil {
		t.Fatal(err)
	}
	o.technician(acks)
	if err := o.end(); err != nil {
		t.Fatal(err)
	}
	return got.list
}

func scpFile(name, content string) string {
	return fmt.Sprintf("C0644 %d %s\n%s\x00", len(content), name, content)
}

func TestSCPObserver(t *testing.T) {
	t.Parallel()
	// Content with the protocol's own bytes in it.
	a, b := "line\n\x00C0644 3 x\nE\n", "\x00\x00\n"
	tests := []struct {
		name, command, stream string
		want                  []string
	}{{
		"a directory of two files", "scp -r -p -t /tmp/dest/",
		"D0755 0 dir\nT1700000000 0 1700000000 0\n" + scpFile("a.txt", a) + "T1700000000 0 1700000000 0\n" + scpFile("b.bin", b) + "E\n",
		[]string{
			`x-file {"protocol":"scp","direction":"upload","path":"/tmp/dest/dir/a.txt","size":18,"sha256":"` + hexSum(a) + `"}`,
			`x-file {"protocol":"scp","direction":"upload","path":"/tmp/dest/dir/b.bin","size":3,"sha256":"` + hexSum(b) + `"}`,
		},
	}, {
		"two files into a directory", "scp -d -t /srv",
		scpFile("a", "1") + scpFile("b", ""),
		[]string{
			`x-file {"protocol":"scp","direction":"upload","path":"/srv/a","size":1,"sha256":"` + hexSum("1") + `"}`,
			`x-file {"protocol":"scp","direction":"upload","path":"/srv/b","size":0,"sha256":"` + hexSum("") + `"}`,
		},
	}, {
		"a file to a path that may be a directory", "scp -t /tmp/new",
		scpFile("src.bin", "abc"),
		[]string{`x-file {"protocol":"scp","direction":"upload","path":"/tmp/new","name":"src.bin","size":3,"sha256":"` + hexSum("abc") + `"}`},
	}, {
		"a download after a missing file", "scp -f /nope /var/log/app.log",
		"\x01scp: /nope: No such file or directory\n" + scpFile("app.log", "hello\n"),
		[]string{`x-file {"protocol":"scp","direction":"download","path":"/var/log/app.log","size":6,"sha256":"` + hexSum("hello\n") + `"}`},
	}, {
		"a directory download", "scp -r -f /etc/app/",
		"D0755 0 app\nD0700 0 keys\n" + scpFile("k", "K") + "E\n" + scpFile("conf", "c") + "E\n",
		[]string{
			`x-file {"protocol":"scp","direction":"download","path":"/etc/app/keys/k","size":1,"sha256":"` + hexSum("K") + `"}`,
			`x-file {"protocol":"scp","direction":"download","path":"/etc/app/conf","size":1,"sha256":"` + hexSum("c") + `"}`,
		},
	}, {
		"the sender fails to read a file", "scp -d -t /srv",
		"C0644 3 f\nab\x00\x01scp: f: Input/output error\n" + scpFile("g", "z"),
		[]string{
			`x-file {"protocol":"scp","direction":"upload","path":"/srv/f","size":3,"sha256":"","hash_note":"the sender reported an error"}`,
			`x-file {"protocol":"scp","direction":"upload","path":"/srv/g","size":1,"sha256":"` + hexSum("z") + `"}`,
		},
	}, {
		"truncated in a file", "scp -t /tmp/x",
		scpFile("ok", "fine") + "C0644 10 x\nabc",
		[]string{
			`x-file {"protocol":"scp","direction":"upload","path":"/tmp/x","name":"ok","size":4,"sha256":"` + hexSum("fine") + `"}`,
			`x-file {"protocol":"scp","direction":"upload","path":"/tmp/x","size":3,"sha256":"","hash_note":"incomplete"}`,
		},
	}, {
		"truncated in a header", "scp -t /tmp/x", "C0644 10",
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: the stream ends inside a header"}`},
	}, {
		"garbage", "scp -t /tmp/x", "hello world\n" + scpFile("x", "later"),
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a header starting with 'h'"}`},
	}, {
		"no end marker", "scp -t /tmp/x", "C0644 1 x\nab" + scpFile("x", "later"),
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: no end marker after a file's content"}`},
	}, {
		"a name with a slash", "scp -t /tmp/x", scpFile("../../etc/passwd", "root"),
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a bad file name"}`},
	}, {
		"a bad mode", "scp -t /tmp/x", "C644 1 x\nz\x00",
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a bad mode"}`},
	}, {
		"a bad size", "scp -t /tmp/x", "C0644 -1 x\nz\x00",
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a bad size"}`},
	}, {
		"an end without a directory", "scp -t /tmp/x", "E\n",
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a directory end without a start"}`},
	}, {
		"a header without an end", "scp -t /tmp/x", "C0644 1 " + strings.Repeat("n", 3*maxSCPLine),
		[]string{`x-file-parse-error {"protocol":"scp","error":"not the scp protocol: a header longer than 2048 bytes"}`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			check := func(how string, cut func(int) bool) {
				t.Helper()
				if got := scpFeed(t, tt.command, tt.stream, cut); !slices.Equal(got, tt.want) {
					t.Fatalf("%s: events\n%s\nwant\n%s", how, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
			}
			check("whole", noCut)
			check("one byte a read", func(int) bool { return true })
			for k := range len(tt.stream) {
				check(fmt.Sprintf("cut at %d", k), func(p int) bool { return p == k })
			}
		})
	}
}

func TestTransferObserverChoice(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		reqType, command string
		observer         bool
		event            string
	}{
		{"shell", "", false, ""},
		{"exec", "ls -l", false, ""},
		{"exec", "scp -t '/tmp/x'", true, ""},    // a quoted path is still a path
		{"exec", "scp -t \"/tmp/x\"", false, ""}, // double quotes: a command
		{"exec", "scp -t /tmp/x", true, ""},
		{"exec", "/usr/bin/scp -v -f -- /tmp/x", true, ""},
		{"subsystem", "sftp", true, ""},
		{"exec", "rsync --server -logDtpre.iLsfxCIvu . /tmp/x/", false,
			`x-file {"protocol":"rsync","direction":"upload","paths":["/tmp/x/"],"content":"not parsed (rsync)"}`},
		{"exec", "rsync --server --sender -logDtpre.iLsfxCIvu . /a /b", false,
			`x-file {"protocol":"rsync","direction":"download","paths":["/a","/b"],"content":"not parsed (rsync)"}`},
		{"exec", `rsync --server -logDtpre.iLsfxCIvu . /tmp/dir\ with\ space/it\'s`, false,
			`x-file {"protocol":"rsync","direction":"upload","paths":["/tmp/dir with space/it's"],"content":"not parsed (rsync)"}`},
	} {
		var got events
		o, err := newTransferObserver(tt.reqType, tt.command, got.emit)
		if err != nil || (o != nil) != tt.observer || strings.Join(got.list, "\n") != tt.event {
			t.Errorf("%s %q: observer %v, err %v, events %q; want observer %v, event %q", tt.reqType, tt.command, o != nil, err, got.list, tt.observer, tt.event)
		}
	}
}

func TestEventsAreJSON(t *testing.T) {
	t.Parallel()
	rounds, _ := sftpConversation()
	var got events
	feedRounds(t, newSFTPObserver(got.emit), rounds, noCut, noCut)
	for _, e := range got.list {
		_, data, _ := strings.Cut(e, " ")
		if !json.Valid([]byte(data)) {
			t.Errorf("not JSON: %s", data)
		}
	}
}
