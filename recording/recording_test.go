package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
)

func newSession(t *testing.T) (root, id string, s *Session) {
	t.Helper()
	root = t.TempDir()
	id = uuid.NewString()
	s, err := Create(root, Meta{ID: id, Technician: "alice", Target: "web1", Start: time.Now()})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return root, id, s
}

func newChannel(t *testing.T, s *Session, info ChannelInfo) *Channel {
	t.Helper()
	c, err := s.Channel(info)
	if err != nil {
		t.Fatalf("Channel(%+v): %v", info, err)
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ev is an event as compared by the tests: code and decoded payload.
type ev struct {
	Code, Data string
}

// readCast reads a channel recording and returns its header and events,
// checking that times are non-negative and never go back.
func readCast(t *testing.T, path string) (Header, []ev) {
	t.Helper()
	cr, err := OpenChannel(ChannelFile{Name: filepath.Base(path), Path: path})
	if err != nil {
		t.Fatalf("OpenChannel: %v", err)
	}
	defer cr.Close()
	var evs []ev
	last := 0.0
	for {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if e.Time < last {
			t.Errorf("event %q at %f before the previous one at %f", e.Code, e.Time, last)
		}
		last = e.Time
		b, err := e.Bytes()
		if err != nil {
			t.Fatalf("Bytes of %+v: %v", e, err)
		}
		evs = append(evs, ev{e.Code, string(b)})
	}
	return cr.Header(), evs
}

func TestRoundTrip(t *testing.T) {
	root, id, s := newSession(t)

	pty := newChannel(t, s, ChannelInfo{PTY: true, Term: "xterm-256color", Cols: 120, Rows: 40, Kind: "shell"})
	raw := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "tar cf - /etc"})

	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	// 東 is E6 9D B1, é is C3 A9: both split across two writes.
	must(t, pty.Stdin([]byte("ls\r")))
	must(t, pty.Stdout([]byte("caf\xc3")))
	must(t, pty.Stdout([]byte("\xa9 \xe6")))
	must(t, pty.Stdout([]byte("\x9d\xb1\r\n")))
	must(t, pty.Stderr([]byte("err\r\n")))
	must(t, pty.Stdin([]byte("\xe6\x97"))) // 日 is E6 97 A5
	must(t, pty.Stdin([]byte("\xa5\r")))
	must(t, pty.Resize(100, 30))
	must(t, pty.Event("x-signal", "INT"))
	must(t, pty.Stdout([]byte("\x1b[31mred\x1b[0m\x00")))

	must(t, raw.Event("x-exec", "tar cf - /etc"))
	must(t, raw.Stdin(all))
	must(t, raw.Stdout(all[:128]))
	must(t, raw.Stdout(all[128:]))
	must(t, raw.Stderr([]byte{0xff, 0x00, '\n', 0xc3}))
	must(t, raw.Stdout(nil))
	must(t, raw.Event("x-eof", ""))
	must(t, raw.Event("x-exit-status", "0"))

	must(t, pty.Close())
	must(t, raw.Close())
	end := time.Date(2025, 3, 4, 5, 6, 7, 8000, time.FixedZone("JST", 9*3600))
	must(t, s.End(end, "client closed", 123, 456))

	m, err := ReadMeta(root, id)
	if err != nil {
		t.Fatalf("ReadMeta: %v", err)
	}
	if !m.End.Equal(end) || m.End.Location() != time.UTC {
		t.Errorf("End = %v, want %v in UTC", m.End, end)
	}
	if m.EndReason != "client closed" || m.BytesIn != 123 || m.BytesOut != 456 {
		t.Errorf("EndReason, BytesIn, BytesOut = %q, %d, %d; want \"client closed\", 123, 456", m.EndReason, m.BytesIn, m.BytesOut)
	}
	if m.ID != id || m.Technician != "alice" || m.Target != "web1" {
		t.Errorf("meta = %+v", m)
	}
	if want := []string{"1.cast", "2.cast"}; !reflect.DeepEqual(m.Channels, want) {
		t.Errorf("Channels = %q, want %q", m.Channels, want)
	}

	chans, err := Channels(root, id)
	if err != nil {
		t.Fatalf("Channels: %v", err)
	}
	dir := filepath.Join(root, id)
	wantChans := []ChannelFile{{"1.cast", filepath.Join(dir, "1.cast")}, {"2.cast", filepath.Join(dir, "2.cast")}}
	if !reflect.DeepEqual(chans, wantChans) {
		t.Fatalf("Channels = %+v, want %+v", chans, wantChans)
	}

	h, evs := readCast(t, chans[0].Path)
	wantH := Header{Version: 2, Width: 120, Height: 40, Timestamp: h.Timestamp, Title: "alice@web1 (" + id + ")",
		Env: map[string]string{"TERM": "xterm-256color"}, Session: id, Channel: 1, Kind: "shell", PTY: true}
	if !reflect.DeepEqual(h, wantH) {
		t.Errorf("pty header = %+v\nwant %+v", h, wantH)
	}
	if d := time.Since(time.Unix(h.Timestamp, 0)); d < 0 || d > time.Hour {
		t.Errorf("pty header timestamp %d is not now", h.Timestamp)
	}
	wantEvs := []ev{
		{"i", "ls\r"},
		{"o", "caf"},
		{"o", "é "},
		{"o", "東\r\n"},
		{"o", "err\r\n"},
		{"i", "日\r"},
		{"r", "100x30"},
		{"x-signal", "INT"},
		{"o", "\x1b[31mred\x1b[0m\x00"},
	}
	if !reflect.DeepEqual(evs, wantEvs) {
		t.Errorf("pty events:\n got %q\nwant %q", evs, wantEvs)
	}
	b, err := os.ReadFile(chans[0].Path)
	must(t, err)
	if bytes.Contains(b, []byte("\ufffd")) || bytes.Contains(b, []byte(`\ufffd`)) {
		t.Errorf("pty recording contains U+FFFD:\n%s", b)
	}

	h, evs = readCast(t, chans[1].Path)
	wantH = Header{Version: 2, Width: 80, Height: 24, Timestamp: h.Timestamp, Command: "tar cf - /etc",
		Title: "alice@web1 exec: tar cf - /etc", Session: id, Channel: 2, Kind: "exec", PTY: false, Data: "2.raw"}
	if !reflect.DeepEqual(h, wantH) {
		t.Errorf("exec header = %+v\nwant %+v", h, wantH)
	}
	wantEvs = []ev{
		{"x-exec", "tar cf - /etc"},
		{"x-stdin", string(all)},
		{"x-stdout", string(all[:128])},
		{"x-stdout", string(all[128:])},
		{"x-stderr", "\xff\x00\n\xc3"},
		{"x-stdout", ""},
		{"x-eof", ""},
		{"x-exit-status", "0"},
	}
	if !reflect.DeepEqual(evs, wantEvs) {
		t.Errorf("exec events:\n got %q\nwant %q", evs, wantEvs)
	}

	// Files and directories are private.
	for _, p := range []string{dir, filepath.Join(dir, "session.json"), chans[0].Path, chans[1].Path} {
		fi, err := os.Stat(p)
		must(t, err)
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", p, fi.Mode())
		}
	}
}

// An incomplete character held back at Close is recorded, not lost.
func TestCloseFlushesHeldBack(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("a\xe6\x9d")))
	must(t, c.Stdin([]byte("\xf0")))
	must(t, c.Close())
	_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	want := []ev{{"o", "a"}, {"o", "\ufffd\ufffd"}, {"i", "\ufffd"}}
	if !reflect.DeepEqual(evs, want) {
		t.Errorf("events %q, want %q", evs, want)
	}
}

func TestIncompleteTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 0},
		{"é", 0},
		{"a\xc3", 1},
		{"a\xe6", 1},
		{"a\xe6\x9d", 2},
		{"東", 0},
		{"\xf0\x9f\x98", 3},
		{"😀", 0},
		{"\xf0\x9f", 2},
		{"a\x9d", 0},    // a stray continuation byte
		{"a\xc0", 0},    // never valid
		{"\xe0\x80", 0}, // invalid, not incomplete
		{"\xff", 0},     // never valid
		{"\x9d\x9d\x9d", 0},
	} {
		if got := incompleteTail([]byte(tc.in)); got != tc.want {
			t.Errorf("incompleteTail(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestBadIDs(t *testing.T) {
	root := t.TempDir()
	id := uuid.NewString()
	bad := []string{
		"../etc",
		"",
		"ABCDEF",
		strings.ToUpper(id),
		"{" + id + "}",
		"urn:uuid:" + id,
		strings.ReplaceAll(id, "-", ""),
		id + "/..",
		"../" + id,
		id + "\x00",
		"%2e%2e%2f" + id,
		"%2e%2e%2fetc",
		"/" + id,
		"/tmp/" + id,
		id[:8] + "\x00" + id[9:],
	}
	for _, b := range bad {
		if dir, err := SessionDir(root, b); !errors.Is(err, ErrBadID) || dir != "" {
			t.Errorf("SessionDir(%q) = %q, %v; want ErrBadID", b, dir, err)
		}
		if _, err := ReadMeta(root, b); !errors.Is(err, ErrBadID) {
			t.Errorf("ReadMeta(%q) = %v, want ErrBadID", b, err)
		}
		if _, err := Channels(root, b); !errors.Is(err, ErrBadID) {
			t.Errorf("Channels(%q) = %v, want ErrBadID", b, err)
		}
		if err := Replay(context.Background(), io.Discard, root, b, ReplayOptions{Instant: true}); !errors.Is(err, ErrBadID) {
			t.Errorf("Replay(%q) = %v, want ErrBadID", b, err)
		}
		if err := WriteEvents(io.Discard, root, b); !errors.Is(err, ErrBadID) {
			t.Errorf("WriteEvents(%q) = %v, want ErrBadID", b, err)
		}
		if s, err := Create(root, Meta{ID: b}); !errors.Is(err, ErrBadID) || s != nil {
			t.Errorf("Create(%q) = %v, %v; want ErrBadID", b, s, err)
		}
	}
	if ents, err := os.ReadDir(root); err != nil || len(ents) != 0 {
		t.Errorf("root holds %v, %v after refused IDs", ents, err)
	}
	if dir, err := SessionDir(root, id); err != nil || dir != filepath.Join(root, id) {
		t.Errorf("SessionDir(%q) = %q, %v", id, dir, err)
	}
	if _, err := ReadMeta(root, id); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadMeta of a missing session = %v, want ErrNotExist", err)
	}
	hardening.Report(t, "26", "%d hostile recording IDs (../, %%2e%%2e%%2f, NUL, absolute paths, non-canonical UUIDs) through 6 entry points (directory, metadata, channels, replay, export, create): all %d calls refused, nothing created or read outside the recording directory", len(bad), 6*len(bad))
	hardening.Report(t, "13", "%d malformed recording IDs (../, %%2e%%2e%%2f, NUL, absolute paths): each refused with ErrBadID by metadata, channel listing, replay and event export, so no path outside the recording directory is read", len(bad))
}

func TestCreateTwice(t *testing.T) {
	root, id, _ := newSession(t)
	if _, err := Create(root, Meta{ID: id}); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second Create = %v, want ErrExist", err)
	}
}

// Channels refuses channel names in session.json that are not plain .cast
// file names of the session directory.
func TestChannelsBadName(t *testing.T) {
	names := []string{"../x.cast", "1.txt", "a/1.cast", "/etc/passwd.cast", ""}
	for _, name := range names {
		root, id, s := newSession(t)
		s.meta.Channels = []string{name}
		must(t, s.writeMeta())
		if chans, err := Channels(root, id); err == nil || !strings.Contains(err.Error(), "bad channel name") {
			t.Errorf("Channels with %q = %+v, %v; want a bad channel name error", name, chans, err)
		}
	}
	hardening.Report(t, "26", "%d hostile channel names in session.json (../x.cast, a/1.cast, /etc/passwd.cast, another extension, empty): all refused as bad channel names", len(names))
}

func TestReplay(t *testing.T) {
	root, id, s := newSession(t)
	pty := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell", Cols: 100, Rows: 30})
	must(t, pty.Stdin([]byte("cat x\r")))
	must(t, pty.Stdout([]byte("hello \x1b]52;c;aGVsbG8=\x07world\r\n")))
	must(t, pty.Stdout([]byte("\x1b[31mred\x1b[0m \x1b]2;title\x1b\\東\x1b[21t\r\n")))
	must(t, pty.Stdout([]byte("\x1b]0;left open")))
	must(t, pty.Close())
	exec := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "printf '\x1b]0;x\x07'"})
	must(t, exec.Stdout([]byte("line1\nline2\x1b[6n\n")))
	must(t, exec.Stdout([]byte{0, 1, 2, 0xff}))
	must(t, exec.Stderr([]byte("oops\n")))
	must(t, exec.Event("x-exit-status", "1"))
	must(t, exec.Close())
	must(t, s.End(time.Now(), "done", 0, 0))

	want1 := "\r\n\x1b[7m sekisho replay: channel 1, shell 100x30 \x1b[0m\r\n" +
		"hello world\r\n" +
		"\x1b[31mred\x1b[0m 東\r\n"
	want2 := "\r\n\x1b[7m sekisho replay: channel 2, exec \"printf '\\x1b]0;x\\a'\" \x1b[0m\r\n" +
		"line1\r\nline2\r\n" +
		"[4 bytes of binary data]\r\n" +
		"oops\r\n" +
		"\r\n\x1b[7m exit status 1 \x1b[0m\r\n"
	for _, tc := range []struct {
		channel int
		want    string
	}{{0, want1 + want2}, {1, want1}, {2, want2}, {3, ""}} {
		var out bytes.Buffer
		err := Replay(context.Background(), &out, root, id, ReplayOptions{Instant: true, Channel: tc.channel})
		if err != nil {
			t.Fatalf("Replay channel %d: %v", tc.channel, err)
		}
		if out.String() != tc.want {
			t.Errorf("Replay channel %d:\n got %q\nwant %q", tc.channel, out.String(), tc.want)
		}
	}
}

func TestReplayNoChannels(t *testing.T) {
	root, id, _ := newSession(t)
	if err := Replay(context.Background(), io.Discard, root, id, ReplayOptions{Instant: true}); !errors.Is(err, ErrNoChannels) {
		t.Fatalf("Replay = %v, want ErrNoChannels", err)
	}
}

// Replay in time waits between events and stops when the context ends.
func TestReplayCancel(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Close())
	cast := `{"version":2,"width":80,"height":24,"timestamp":0,"x_session":"` + id + `","x_channel":1,"x_kind":"shell","x_pty":true}
[0.0,"o","first"]
[3600.0,"o","second"]
`
	must(t, os.WriteFile(filepath.Join(s.Dir(), "1.cast"), []byte(cast), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	err := Replay(ctx, &out, root, id, ReplayOptions{MaxIdle: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Replay = %v, want context.Canceled", err)
	}
	if want := "\r\n\x1b[7m sekisho replay: channel 1, shell 80x24 \x1b[0m\r\nfirst"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

// A recording cut mid-event (the write failed) replays up to the cut.
func TestReplayTruncated(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("kept\r\n")))
	must(t, c.Close())
	f, err := os.OpenFile(filepath.Join(s.Dir(), "1.cast"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(`[1.0,"o","lo`)
	must(t, err)
	must(t, f.Close())

	var out bytes.Buffer
	must(t, Replay(context.Background(), &out, root, id, ReplayOptions{Instant: true}))
	want := "\r\n\x1b[7m sekisho replay: channel 1, shell 80x24 \x1b[0m\r\nkept\r\n" +
		"\r\n\x1b[7m sekisho replay: channel 1 ends with a truncated event (its write failed; nothing after it was forwarded) \x1b[0m\r\n"
	if out.String() != want {
		t.Errorf("Replay:\n got %q\nwant %q", out.String(), want)
	}
	out.Reset()
	must(t, WriteEvents(&out, root, id))
	got := timeCol.ReplaceAllString(out.String(), "T ")
	if want := "# channel 1: shell 80x24 pty=true\nT 1 o             \"kept\\r\\n\"\n# channel 1 ends with a truncated event (its write failed; nothing after it was forwarded)\n"; got != want {
		t.Errorf("WriteEvents:\n got %q\nwant %q", got, want)
	}
}

func TestReplayBadBase64(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "true"})
	must(t, c.Close())
	cast := `{"version":2,"width":80,"height":24,"timestamp":0,"x_channel":1,"x_kind":"exec"}
[0.5,"x-stdout","%%%"]
`
	must(t, os.WriteFile(filepath.Join(s.Dir(), "1.cast"), []byte(cast), 0o600))
	err := Replay(context.Background(), io.Discard, root, id, ReplayOptions{Instant: true})
	if err == nil || !strings.HasPrefix(err.Error(), "1.cast: bad x-stdout event at 0.500s: ") {
		t.Fatalf("Replay = %v, want a bad x-stdout event error", err)
	}
}

var timeCol = regexp.MustCompile(`(?m)^ *[0-9]+\.[0-9]{3} `)

func TestWriteEvents(t *testing.T) {
	root, id, s := newSession(t)
	pty := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, pty.Stdin([]byte("rm -rf /tmp/x\r")))
	must(t, pty.Stdout([]byte("\x1b]52;c;?\x07ok\r\n")))
	must(t, pty.Resize(90, 20))
	must(t, pty.Close())
	exec := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "sh"})
	must(t, exec.Stdin([]byte("id\n\x00")))
	must(t, exec.Stderr([]byte("bad\xff")))
	must(t, exec.Event("x-exit-status", "0"))
	must(t, exec.Close())

	var out bytes.Buffer
	must(t, WriteEvents(&out, root, id))
	got := timeCol.ReplaceAllString(out.String(), "T ")
	want := `# channel 1: shell 80x24 pty=true
T 1 i             "rm -rf /tmp/x\r"
T 1 o             "\x1b]52;c;?\aok\r\n"
T 1 r             "90x20"
# channel 2: exec "sh" pty=false
T 2 x-stdin       "id\n\x00"
T 2 x-stderr      "bad\xff"
T 2 x-exit-status "0"
`
	if got != want {
		t.Errorf("WriteEvents:\n got %s\nwant %s", got, want)
	}
}

// checkFailed asserts that every kind of write on c returns want.
func checkFailed(t *testing.T, c *Channel, want error) {
	t.Helper()
	for name, write := range map[string]func() error{
		"Stdout":         func() error { return c.Stdout([]byte("x")) },
		"Stdout partial": func() error { return c.Stdout([]byte("\xe6")) },
		"Stdout empty":   func() error { return c.Stdout(nil) },
		"Stderr":         func() error { return c.Stderr([]byte("x")) },
		"Stdin":          func() error { return c.Stdin([]byte("x")) },
		"Stdin partial":  func() error { return c.Stdin([]byte("\xc3")) },
		"Resize":         func() error { return c.Resize(1, 1) },
		"Event":          func() error { return c.Event("x-eof", "") },
	} {
		for range 2 {
			if err := write(); err == nil || err != want {
				t.Errorf("%s after failure = %v, want %v", name, err, want)
			}
		}
	}
}

func TestWriteAfterClose(t *testing.T) {
	for _, pty := range []bool{true, false} {
		t.Run(fmt.Sprintf("pty=%v", pty), func(t *testing.T) {
			_, _, s := newSession(t)
			c := newChannel(t, s, ChannelInfo{PTY: pty, Kind: "shell"})
			must(t, c.Stdout([]byte("before")))
			must(t, c.Close())
			// The first write after Close is half a character, which a
			// terminal channel holds back rather than writes.
			err := c.Stdout([]byte("\xe6"))
			if err == nil {
				t.Fatal("Stdout after Close succeeded")
			}
			checkFailed(t, c, err)
			if cerr := c.Close(); cerr != nil {
				t.Errorf("second Close = %v, want nil", cerr)
			}
			_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
			code := "o"
			if !pty {
				code = "x-stdout"
			}
			if want := []ev{{code, "before"}}; !reflect.DeepEqual(evs, want) {
				t.Errorf("events %q, want %q", evs, want)
			}
		})
	}
}

func TestWriteErrorSticky(t *testing.T) {
	for _, pty := range []bool{true, false} {
		t.Run(fmt.Sprintf("pty=%v", pty), func(t *testing.T) {
			_, _, s := newSession(t)
			c := newChannel(t, s, ChannelInfo{PTY: pty, Kind: "shell"})
			must(t, c.Stdout([]byte("before")))
			// Hold back half a character: it must not be flushed by Close
			// once the channel failed.
			must(t, c.Stdin([]byte("\xc3")))
			fl := &c.ev
			if !pty {
				fl = c.data // exact bytes are written there first
			}
			orig := fl.f
			t.Cleanup(func() { orig.Close() })
			ro, err := os.Open(orig.Name())
			must(t, err)
			fl.f = ro

			err = c.Stdout([]byte("lost"))
			if err == nil {
				t.Fatal("Stdout to a read-only file succeeded")
			}
			if !errors.Is(err, syscall.EBADF) || !strings.HasPrefix(err.Error(), "recording write: ") {
				t.Errorf("write error = %v, want a recording write error wrapping EBADF", err)
			}
			checkFailed(t, c, err)
			if cerr := c.Close(); cerr != err {
				t.Errorf("Close = %v, want the write error %v", cerr, err)
			}
			checkFailed(t, c, err)
			if cerr := c.Close(); cerr != err {
				t.Errorf("second Close = %v, want the write error %v", cerr, err)
			}
			// A closed *os.File errors on Close again: Close was called.
			if ro.Close() == nil {
				t.Error("the read-only file was not closed by Close")
			}
			_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
			want := []ev{{"o", "before"}} // the held-back byte is not flushed
			if !pty {
				want = []ev{{"x-stdout", "before"}, {"x-stdin", "\xc3"}}
			}
			if !reflect.DeepEqual(evs, want) {
				t.Errorf("events %q, want %q", evs, want)
			}
		})
	}
}

// Channel creation fails, and the session must be refused, when the
// recording cannot be written.
func TestChannelUnwritable(t *testing.T) {
	_, _, s := newSession(t)
	must(t, os.WriteFile(filepath.Join(s.Dir(), "1.cast"), nil, 0o600)) // taken
	if c, err := s.Channel(ChannelInfo{Kind: "shell"}); err == nil || c != nil {
		t.Fatalf("Channel over an existing file = %v, %v; want an error", c, err)
	}
	// The next channel gets the next number.
	c := newChannel(t, s, ChannelInfo{Kind: "shell"})
	must(t, c.Close())
	if _, err := os.Stat(filepath.Join(s.Dir(), "2.cast")); err != nil {
		t.Fatal(err)
	}
}

// The two relay directions write at once; every event arrives whole and
// each direction's characters split across writes are joined.
func TestConcurrentWrites(t *testing.T) {
	_, _, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	const n = 200
	var wg sync.WaitGroup
	for _, w := range []struct {
		f    func([]byte) error
		data string
	}{{c.Stdout, "out東"}, {c.Stdin, "in日"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte(w.data)
			for range n {
				// Split inside the last character.
				if err := w.f(b[:len(b)-1]); err != nil {
					t.Error(err)
					return
				}
				if err := w.f(b[len(b)-1:]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	must(t, c.Close())
	_, evs := readCast(t, filepath.Join(s.Dir(), "1.cast"))
	var out, in strings.Builder
	for _, e := range evs {
		switch e.Code {
		case "o":
			out.WriteString(e.Data)
		case "i":
			in.WriteString(e.Data)
		default:
			t.Fatalf("unexpected event %q", e)
		}
	}
	if got, want := out.String(), strings.Repeat("out東", n); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if got, want := in.String(), strings.Repeat("in日", n); got != want {
		t.Errorf("input %q, want %q", got, want)
	}
}
