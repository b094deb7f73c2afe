package recording

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// advance moves the channel's clock on by d, as if d had passed: the
// tests record minutes of session without waiting for them.
func advance(c *Channel, d time.Duration) {
	c.mu.Lock()
	c.start = c.start.Add(-d)
	c.mu.Unlock()
}

// rowsSession records a terminal channel of n rows of output, row i about
// i+1 seconds in, each about size bytes; it returns the session and the
// path of the channel file.
func rowsSession(t *testing.T, n, size int) (root, id, path string) {
	t.Helper()
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell", Cols: 120, Rows: 40})
	pad := strings.Repeat("x", size)
	for i := range n {
		advance(c, time.Second)
		must(t, c.Stdout([]byte(fmt.Sprintf("row %05d %s\r\n", i, pad))))
	}
	must(t, c.Event("x-exit-status", "0"))
	must(t, c.Close())
	must(t, s.End(time.Now(), "done", 0, 0))
	return root, id, filepath.Join(s.Dir(), "1.cast")
}

// rowLine is where the event line of a row starts in the file, and when.
type rowLine struct {
	off  int64
	time float64
}

// rowLines reads where each row's event is in the channel file.
func rowLines(t *testing.T, path string) []rowLine {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	var rows []rowLine
	off := int64(bytes.IndexByte(b, '\n') + 1)
	for _, line := range bytes.SplitAfter(b[off:], []byte("\n")) {
		if e, ok := parseEvent(bytes.TrimSuffix(line, []byte("\n"))); ok && e.Code == "o" {
			rows = append(rows, rowLine{off, e.Time})
		}
		off += int64(len(line))
	}
	return rows
}

var rowRe = regexp.MustCompile(`row (\d{5}) `)

// rowsShown returns the numbers of the rows in replay output.
func rowsShown(out string) []int {
	var rows []int
	for _, m := range rowRe.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		rows = append(rows, n)
	}
	return rows
}

func replayString(t *testing.T, root, id string, opt ReplayOptions) string {
	t.Helper()
	var out bytes.Buffer
	if err := Replay(context.Background(), &out, root, id, opt); err != nil {
		t.Fatalf("Replay(%+v): %v", opt, err)
	}
	return out.String()
}

// checkSeek checks replay output from a time: every row at or after it,
// in order, and before it only the rows of the fast-forward, within the
// bounds that index.go documents.
func checkSeek(t *testing.T, out string, rows []rowLine, from time.Duration) {
	t.Helper()
	first := len(rows) // the first row at or after from
	for i, r := range rows {
		if r.time >= from.Seconds() {
			first = i
			break
		}
	}
	shown := rowsShown(out)
	if len(shown) == 0 {
		t.Fatalf("replay from %v shows no row", from)
	}
	start := shown[0]
	for i, n := range shown {
		if n != start+i {
			t.Fatalf("replay from %v shows rows %v…: not one run", from, shown[:min(i+1, len(shown))])
		}
	}
	if start > first || shown[len(shown)-1] != len(rows)-1 {
		t.Fatalf("replay from %v shows rows %d-%d, want every row from %d to %d", from, start, shown[len(shown)-1], first, len(rows)-1)
	}
	if start == first {
		if first > 0 && rows[first].off > 2*indexStep {
			t.Errorf("replay from %v fast-forwarded nothing before row %d", from, first)
		}
		return
	}
	// The fast-forward: at least one step of recording before From (or
	// all of it), at most two steps and two lines.
	ff := rows[first].off - rows[start].off
	lineLen := rows[1].off - rows[0].off
	if ff > 2*indexStep+2*lineLen {
		t.Errorf("replay from %v fast-forwarded %d bytes (rows %d-%d), more than two steps", from, ff, start, first-1)
	}
	if ff < indexStep && start != 0 {
		t.Errorf("replay from %v fast-forwarded only %d bytes (rows %d-%d), less than a step", from, ff, start, first-1)
	}
}

func TestReplayFrom(t *testing.T) {
	root, id, path := rowsSession(t, 200, 8<<10)
	rows := rowLines(t, path)
	if _, err := os.Stat(indexPath(path)); err != nil {
		t.Fatalf("the writer made no index: %v", err)
	}
	for _, from := range []time.Duration{0, 500 * time.Millisecond, 30 * time.Second, 90 * time.Second, 150 * time.Second, 199 * time.Second, 200 * time.Second} {
		t.Run(from.String(), func(t *testing.T) {
			out := replayString(t, root, id, ReplayOptions{Instant: true, From: from})
			if from == 0 {
				if got := rowsShown(out); len(got) != 200 || got[0] != 0 {
					t.Fatalf("replay from 0 shows %d rows from %v", len(got), got[:1])
				}
				return
			}
			banner := fmt.Sprintf("\r\n\x1b[7m sekisho replay: channel 1, shell 120x40, from %s \x1b[0m\r\n", from)
			if !strings.HasPrefix(out, banner) {
				t.Errorf("output starts %q, want %q", out[:min(len(out), 80)], banner)
			}
			checkSeek(t, out, rows, from)
			if !strings.HasSuffix(out, "\r\n\x1b[7m exit status 0 \x1b[0m\r\n") {
				t.Errorf("output ends %q, want the exit status", out[max(0, len(out)-80):])
			}
		})
	}
}

// A recording made before the index existed gets one on its first replay
// from a time; it is the one the writer makes.
func TestReplayFromBuildsIndex(t *testing.T) {
	root, id, path := rowsSession(t, 200, 8<<10)
	written := loadIndex(indexPath(path))
	if len(written) < 5 {
		t.Fatalf("the writer's index has %d entries for %d bytes", len(written), len(rowLines(t, path))*8<<10)
	}
	want := replayString(t, root, id, ReplayOptions{Instant: true, From: 150 * time.Second})
	must(t, os.Remove(indexPath(path)))
	got := replayString(t, root, id, ReplayOptions{Instant: true, From: 150 * time.Second})
	if got != want {
		t.Errorf("replay without the index differs from the one with it")
	}
	built := loadIndex(indexPath(path))
	if fmt.Sprint(built) != fmt.Sprint(written) {
		t.Errorf("built index\n%v\nthe writer's\n%v", built, written)
	}
}

// A damaged index costs a scan, never a wrong replay.
func TestReplayFromBadIndex(t *testing.T) {
	root, id, path := rowsSession(t, 200, 8<<10)
	rows := rowLines(t, path)
	good, err := os.ReadFile(indexPath(path))
	must(t, err)
	const from = 150 * time.Second
	want := replayString(t, root, id, ReplayOptions{Instant: true, From: from})
	checkSeek(t, want, rows, from)

	lines := strings.SplitAfter(strings.TrimSuffix(string(good), "\n"), "\n")
	mapLines := func(f func(t float64, off int64) string) string {
		var b strings.Builder
		for _, l := range lines {
			ts, offs, _ := strings.Cut(strings.TrimSpace(l), " ")
			tv, _ := strconv.ParseFloat(ts, 64)
			ov, _ := strconv.ParseInt(offs, 10, 64)
			b.WriteString(f(tv, ov) + "\n")
		}
		return b.String()
	}
	everyRow := func() string {
		var b strings.Builder
		for _, r := range rows {
			fmt.Fprintf(&b, "%v %d\n", r.time, r.off)
		}
		return b.String()
	}
	reversed := func() string {
		var b strings.Builder
		for i := len(lines) - 1; i >= 0; i-- {
			b.WriteString(strings.TrimSuffix(lines[i], "\n") + "\n")
		}
		return b.String()
	}
	for _, tc := range []struct {
		name string
		idx  string // "" with dir: a directory in its place
		dir  bool
	}{
		{name: "empty"},
		{name: "directory", dir: true},
		{name: "garbage", idx: "\x00\xff not an index\n\n12 x\n-1 5\nNaN 100\n1e308 9223372036854775807\n"},
		{name: "cut mid-line", idx: string(good[:len(good)/2+3])},
		{name: "only the first entry", idx: lines[0]},
		{name: "offsets one off", idx: mapLines(func(t float64, off int64) string { return fmt.Sprintf("%v %d", t, off+1) })},
		{name: "offsets past the end", idx: mapLines(func(t float64, off int64) string { return fmt.Sprintf("%v %d", t, off+1<<40) })},
		{name: "times later", idx: mapLines(func(t float64, off int64) string { return fmt.Sprintf("%v %d", t+0.5, off) })},
		{name: "times earlier", idx: mapLines(func(t float64, off int64) string { return fmt.Sprintf("%v %d", t-100, off) })},
		{name: "times all zero", idx: mapLines(func(t float64, off int64) string { return fmt.Sprintf("0 %d", off) })},
		{name: "reversed", idx: reversed()},
		{name: "duplicated", idx: string(good) + string(good)},
		{name: "a line start with a wrong time", idx: fmt.Sprintf("1e308 %d\n", rows[10].off)},
		{name: "a line start with a time too early", idx: fmt.Sprintf("1 %d\n", rows[190].off)},
		{name: "an entry for every line", idx: everyRow()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := indexPath(path)
			must(t, os.RemoveAll(p))
			if tc.dir {
				must(t, os.Mkdir(p, 0o700))
				defer os.Remove(p)
			} else {
				must(t, os.WriteFile(p, []byte(tc.idx), 0o600))
			}
			for range 2 { // the second replay reads what the first cached
				if got := replayString(t, root, id, ReplayOptions{Instant: true, From: from}); got != want {
					t.Errorf("replay differs from the one with a sound index")
					checkSeek(t, got, rows, from)
				}
			}
		})
	}
}

func TestReplayFromPastTheEnd(t *testing.T) {
	root, id, _ := rowsSession(t, 20, 1<<10)
	out := replayString(t, root, id, ReplayOptions{Instant: true, From: time.Hour})
	want := "\r\n\x1b[7m sekisho replay: channel 1, shell 120x40, from 1h0m0s \x1b[0m\r\n" +
		"\r\n\x1b[7m sekisho replay: channel 1 has nothing at or after 1h0m0s \x1b[0m\r\n"
	if out != want {
		t.Errorf("replay past the end:\n got %q\nwant %q", out, want)
	}
}

// A channel without a terminal has no screen to draw: nothing before From.
func TestReplayFromExec(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "tail -f log"})
	for i := range 10 {
		advance(c, time.Second)
		must(t, c.Stdout(fmt.Appendf(nil, "line %d\n", i)))
	}
	must(t, c.Close())
	out := replayString(t, root, id, ReplayOptions{Instant: true, From: 8 * time.Second})
	want := "\r\n\x1b[7m sekisho replay: channel 1, exec \"tail -f log\", from 8s \x1b[0m\r\n" +
		"line 7\r\nline 8\r\nline 9\r\n"
	if out != want {
		t.Errorf("replay from 8s:\n got %q\nwant %q", out, want)
	}
}

// From is reached in time: the first pause is from From to the first
// event after it, capped like every pause; nothing waits for what was
// skipped.
func TestReplayFromDoesNotWaitForWhatItSkips(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("early\r\n")))
	advance(c, 100*time.Hour)
	must(t, c.Stdout([]byte("late\r\n")))
	must(t, c.Close())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	must(t, Replay(ctx, &out, root, id, ReplayOptions{From: 100 * time.Hour, MaxIdle: time.Hour}))
	if !strings.HasSuffix(out.String(), "early\r\nlate\r\n") {
		t.Errorf("output %q", out.String())
	}
}

// marker is how replay shows a marker line.
func marker(text string) string { return "\r\n\x1b[7m " + text + " \x1b[0m\r\n" }

var markerRe = regexp.MustCompile("\r\n\x1b\\[7m (.*?) \x1b\\[0m\r\n")

func TestReplayMarkers(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	for _, k := range []string{"l", "s", "\r"} {
		must(t, c.Stdin([]byte(k)))
	}
	must(t, c.Stdout([]byte("ls\r\nfile\r\n")))
	sum := strings.Repeat("0123456789abcdef", 4)
	must(t, c.Event("x-file", `{"protocol":"sftp","direction":"upload","path":"/tmp/\u001b]52;c;aGk=\u0007x\nnext\u202e","size":123,"sha256":"`+sum+`"}`))
	must(t, c.Event("x-file-op", `{"protocol":"sftp","op":"rename","path":"/a","to":"/b"}`))
	must(t, c.Event("x-file", `{"protocol":"rsync","direction":"download","paths":["a","b"],"content":"not parsed (rsync)"}`))
	must(t, c.Event("x-file-parse-error", `{"protocol":"scp","error":"bad\u0007header"}`))
	must(t, c.Event("x-file", "not json\x1b[2J"))
	must(t, c.Stdin([]byte("\x1b]52;c;?\x07"+strings.Repeat("y", 300)+"\r")))
	must(t, c.Event("x-signal", "INT"))
	must(t, c.Stdin([]byte("exit")))
	must(t, c.Event("x-exit-status", "0\x1b[2J"))
	must(t, c.Close())
	exec := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "sh"})
	must(t, exec.Event("x-exec", "sh"))
	must(t, exec.Stdin([]byte("id\n")))
	must(t, exec.Stdin([]byte{0, 1, 2}))
	must(t, exec.Stdin([]byte{3}))
	must(t, exec.Stdout([]byte("uid=0\n")))
	must(t, exec.Close())

	fileMarkers := marker(`file: sftp upload "/tmp/\x1b]52;c;aGk=\ax\nnext\u202e", 123 bytes, sha256 0123456789abcdef…`) +
		marker(`file: sftp rename "/a" -> "/b"`) +
		marker(`file: rsync download "a" "b", "not parsed (rsync)"`) +
		marker(`file: scp transfers no longer followed: "bad\aheader"`) +
		marker(`x-file "not json\x1b[2J"`)
	banner1 := "\r\n\x1b[7m sekisho replay: channel 1, shell 80x24 \x1b[0m\r\n"
	banner2 := "\r\n\x1b[7m sekisho replay: channel 2, exec \"sh\" \x1b[0m\r\n"
	long := `input "\x1b]52;c;?\a` + strings.Repeat("y", 200-len("\x1b]52;c;?\x07")) + `"… (310 bytes)`
	markers := 0
	for _, tc := range []struct {
		inline bool
		want   string
	}{
		{false, banner1 + "ls\r\nfile\r\n" + fileMarkers + marker(`exit status 0\x1b[2J`) +
			banner2 + "uid=0\r\n"},
		{true, banner1 + marker(`input "ls\r"`) + "ls\r\nfile\r\n" + fileMarkers + marker(long) + marker(`signal "INT"`) +
			marker(`input "exit"`) + marker(`exit status 0\x1b[2J`) +
			banner2 + marker(`exec "sh"`) + marker(`input "id\n"`) + marker("input: 4 bytes of binary data") + "uid=0\r\n"},
	} {
		got := replayString(t, root, id, ReplayOptions{Instant: true, EventsInline: tc.inline})
		if got != tc.want {
			t.Errorf("replay, events inline %v:\n got %q\nwant %q", tc.inline, got, tc.want)
		}
		for _, m := range markerRe.FindAllStringSubmatch(got, -1) {
			markers++
			for _, r := range m[1] {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e {
					t.Errorf("marker %q holds %U", m[1], r)
				}
			}
		}
	}
	hardening.Report(t, "27", "file paths, errors, input and exit statuses holding OSC 52, ESC [2J, BEL, newlines and U+202E replayed as %d marker lines in 2 modes: every control character quoted, none reaches the reviewer's terminal", markers)
}

// A marker shows even when recorded output left a sequence open, which
// would swallow it if it went through the Sanitizer.
func TestReplayMarkerAfterOpenSequence(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("ok\x1b]0;never closed")))
	must(t, c.Event("x-exit-status", "1"))
	must(t, c.Close())
	got := replayString(t, root, id, ReplayOptions{Instant: true})
	if want := "\r\n\x1b[7m sekisho replay: channel 1, shell 80x24 \x1b[0m\r\nok" + marker("exit status 1"); got != want {
		t.Errorf("replay:\n got %q\nwant %q", got, want)
	}
}

func TestQuoted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"/tmp/a b", `"/tmp/a b"`},
		{"東\x1b[2J\r\n\x00\xff\u202e", `"東\x1b[2J\r\n\x00\xff\u202e"`},
		{strings.Repeat("a", 200), `"` + strings.Repeat("a", 200) + `"`},
		{strings.Repeat("a", 201), `"` + strings.Repeat("a", 200) + `"… (201 bytes)`},
		{strings.Repeat("a", 199) + "東", `"` + strings.Repeat("a", 199) + `"… (202 bytes)`},
	} {
		if got := quoted(tc.in); got != tc.want {
			t.Errorf("quoted(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := word("sftp\x1b[2J-é_x"); got != "sftp2J-_x" {
		t.Errorf("word = %q", got)
	}
}

// What moderators did shows in replay as markers, whether or not the
// other events do, their text escaped as any recorded text is.
func TestReplayShowsModerators(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Event("x-moderator", "kenji joined"))
	must(t, c.Stdout([]byte("db$ ")))
	must(t, c.Event("x-moderator", "kenji said: check the backup first\x1b]52;c;aGk=\x07\u202e"))
	must(t, c.Event("x-moderator", "kenji held the input"))
	must(t, c.Event("x-moderator", "kenji ended the session: wrong table"))
	must(t, c.Close())

	banner := "\r\n\x1b[7m sekisho replay: channel 1, shell 80x24 \x1b[0m\r\n"
	want := banner + marker("moderator: kenji joined") + "db$ " +
		marker(`moderator: kenji said: check the backup first\x1b]52;c;aGk=\a\u202e`) +
		marker("moderator: kenji held the input") +
		marker("moderator: kenji ended the session: wrong table")
	for _, inline := range []bool{false, true} {
		if got := replayString(t, root, id, ReplayOptions{Instant: true, EventsInline: inline}); got != want {
			t.Errorf("replay, events inline %v:\n got %q\nwant %q", inline, got, want)
		}
	}
}
