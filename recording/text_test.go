package recording

import (
	"bytes"
	"encoding/base64"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const fileSum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// reviewedSession records a session of four channels: a terminal with a
// command corrected with a backspace, coloured output with an OSC 8 link
// and a sudo password; an exec; sftp with a download; a port forward.
func reviewedSession(t *testing.T) (root, id string) {
	t.Helper()
	root, id, s := newSession(t)

	sh := newChannel(t, s, ChannelInfo{PTY: true, Term: "xterm", Kind: "shell", Cols: 80, Rows: 24})
	step := func(c *Channel, out, in string) {
		advance(c, time.Second)
		if out != "" {
			must(t, c.Stdout([]byte(out)))
		}
		if in != "" {
			must(t, c.Stdin([]byte(in)))
		}
	}
	step(sh, "\x1b]0;aiko@db: ~\x07aiko@db:~$ ", "ls -l /etc/shadw") // 1s
	step(sh, "ls -l /etc/shadw", "\x7f")                             // 2s
	step(sh, "\b \b", "ow\r")                                        // 3s: Enter
	step(sh, "ow\r\n\x1b[31m-rw-r-----\x1b[0m 1 root \x1b]8;;file:///etc/shadow\x1b\\shadow\x1b]8;;\x1b\\ 1234 Mar  1 /etc/shadow\r\naiko@db:~$ ",
		"sudo cat /etc/shadow\r") // 4s
	step(sh, "sudo cat /etc/shadow\r\n[sudo] password for aiko: ", "hunter2\r") // 5s: hidden
	step(sh, "\r\nroot:*:19000:0:99999:7:::\r\naiko@db:~$ ", "\x1b[A")          // 6s: arrow up
	step(sh, "", "\x03")                                                        // 7s: ^C
	step(sh, "^C\r\naiko@db:~$ ", "exit\r")                                     // 8s
	step(sh, "exit\r\nlogout\r\n", "")                                          // 9s
	must(t, sh.Event("x-exit-status", "0"))
	must(t, sh.Event("x-close", ""))
	must(t, sh.Close())

	ex := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "uname -a"})
	must(t, ex.Event("x-exec", "uname -a"))
	advance(ex, 2*time.Second)
	must(t, ex.Stdout([]byte("Linux db 6.1.0 x86_64\ncaf\xc3")))
	must(t, ex.Stdout([]byte("\xa9\n"))) // "é" split across reads
	must(t, ex.Stderr([]byte{0xff, 0x00, 'b', 'i', 'n'}))
	must(t, ex.Event("x-exit-status", "0"))
	must(t, ex.Close())

	ft := newChannel(t, s, ChannelInfo{Kind: "subsystem", Command: "sftp"})
	must(t, ft.Event("x-subsystem", "sftp"))
	must(t, ft.Stdin([]byte("\x00\x00\x00\x05\x01\x00\x00\x00\x03open /etc/shadow")))
	advance(ft, 3*time.Second)
	must(t, ft.Event("x-file", `{"protocol":"sftp","direction":"download","path":"/etc/shadow","size":1234,"sha256":"`+fileSum+`"}`))
	must(t, ft.Event("x-file-op", `{"protocol":"sftp","op":"rename","path":"/tmp/a","to":"/tmp/b\u202e"}`))
	must(t, ft.Event("x-close", ""))
	must(t, ft.Close())

	fw := newChannel(t, s, ChannelInfo{Kind: "forward", Command: "10.0.0.5:5432"})
	must(t, fw.Stdin([]byte("SELECT secret FROM vault;")))
	advance(fw, time.Second)
	must(t, fw.Event("x-close", `{"destination":"10.0.0.5:5432","bytes_in":25,"bytes_out":7}`))
	must(t, fw.Close())
	must(t, s.End(time.Now(), "logout", 0, 0))
	return root, id
}

func TestSessionText(t *testing.T) {
	root, id := reviewedSession(t)
	want := Text{
		Typed: "ls -l /etc/shadow\nsudo cat /etc/shadow\n[hidden input]\nexit\n" +
			"uname -a\n" +
			"download /etc/shadow (1234 bytes, sha256 0123456789abcdef…) via sftp\nrename /tmp/a -> /tmp/b\u202e via sftp\n",
		Shown: "aiko@db:~$ ls -l /etc/shadow\n" +
			"-rw-r----- 1 root shadow 1234 Mar  1 /etc/shadow\n" +
			"aiko@db:~$ sudo cat /etc/shadow\n" +
			"[sudo] password for aiko: \n" +
			"root:*:19000:0:99999:7:::\n" +
			"aiko@db:~$ ^C\n" +
			"aiko@db:~$ exit\n" +
			"logout\n" +
			"Linux db 6.1.0 x86_64\ncafé\n",
		Files:    1,
		Commands: 4,
	}
	got, err := SessionText(root, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("SessionText:\n got %#v\nwant %#v", got, want)
	}

	// Bounded: each text is cut at max bytes, at a character boundary;
	// the counts cover the whole recording.
	for _, max := range []int{1, 10, 60, 70, 10000} {
		got, err := SessionText(root, id, max)
		if err != nil {
			t.Fatal(err)
		}
		for name, pair := range map[string][2]string{"Typed": {got.Typed, want.Typed}, "Shown": {got.Shown, want.Shown}} {
			full := pair[1]
			cut := min(max, len(full))
			for cut > 0 && cut < len(full) && !utf8.RuneStart(full[cut]) {
				cut--
			}
			if pair[0] != full[:cut] {
				t.Errorf("SessionText(max %d).%s = %q, want %q", max, name, pair[0], full[:cut])
			}
		}
		if got.Files != want.Files || got.Commands != want.Commands {
			t.Errorf("SessionText(max %d) counts %d files, %d commands; want %d, %d", max, got.Files, got.Commands, want.Files, want.Commands)
		}
	}
}

func TestTimeline(t *testing.T) {
	root, id := reviewedSession(t)
	got, err := Timeline(root, id)
	if err != nil {
		t.Fatal(err)
	}
	// In wall-clock order, each At its channel's start plus Time.
	starts := map[int]time.Time{}
	chans, err := Channels(root, id)
	must(t, err)
	for i, ch := range chans {
		f, err := os.Open(ch.Path)
		must(t, err)
		cr, err := NewCastReader(f, ch.Name)
		must(t, err)
		starts[i+1] = time.Unix(cr.Header().Timestamp, 0)
		f.Close()
	}
	for i, e := range got {
		if i > 0 && e.At.Before(got[i-1].At) {
			t.Errorf("event %d (%v) is before event %d (%v)", i, e.At, i-1, got[i-1].At)
		}
		if want := starts[e.Channel].Add(time.Duration(e.Time * float64(time.Second))); !e.At.Equal(want) {
			t.Errorf("event %d: At %v, want %v", i, e.At, want)
		}
	}

	type ev struct {
		Channel int
		Second  float64 // Time, in whole seconds
		Kind    string
		Text    string
	}
	var gotEv []ev
	for _, e := range got {
		gotEv = append(gotEv, ev{e.Channel, math.Floor(e.Time), e.Kind, e.Text})
	}
	slices.SortStableFunc(gotEv, func(a, b ev) int { return a.Channel - b.Channel })
	want := []ev{
		{1, 3, "command", "ls -l /etc/shadow"},
		{1, 4, "command", "sudo cat /etc/shadow"},
		{1, 8, "command", "exit"},
		{1, 9, "exit", "exit status 0"},
		{1, 9, "end", "channel closed"},
		{2, 0, "command", "uname -a"},
		{2, 2, "exit", "exit status 0"},
		{3, 0, "subsystem", "sftp"},
		{3, 3, "file", "download /etc/shadow (1234 bytes, sha256 0123456789abcdef…) via sftp"},
		{3, 3, "file-op", "rename /tmp/a -> /tmp/b\uFFFD via sftp"},
		{3, 3, "end", "channel closed"},
		{4, 0, "forward", "to 10.0.0.5:5432"},
		{4, 1, "end", "forward to 10.0.0.5:5432 closed: 25 bytes in, 7 bytes out"},
	}
	if !reflect.DeepEqual(gotEv, want) {
		t.Errorf("Timeline:\n got %+v\nwant %+v", gotEv, want)
	}
}

// feedChannel runs events through one channel's extraction, as SessionText and
// Timeline do, without a recording on disk.
func feedChannel(pty bool, kind string, events []Event) (Text, []TimelineEvent) {
	x := &extractor{typed: textBuffer{max: -1}, shown: textBuffer{max: -1}, timeline: true}
	c := &channelText{x: x, n: 1, start: time.Unix(0, 0).UTC(), pty: pty, kind: kind}
	for _, e := range events {
		c.event(e)
	}
	c.finish()
	return Text{Typed: x.typed.b.String(), Shown: x.shown.b.String(), Files: x.files, Commands: x.commands}, x.events
}

func TestTypedLines(t *testing.T) {
	tests := []struct {
		name   string
		prompt string // shown before the input
		in     []string
		typed  string
		cmds   []string
	}{
		{"backspace and DEL", "$ ", []string{"lss\x7f -l\b\x7f-a\r"}, "ls -a\n", []string{"ls -a"}},
		{"backspace past the start", "$ ", []string{"\x7f\x7fid\r"}, "id\n", []string{"id"}},
		{"multibyte backspace", "$ ", []string{"echo héé\x7f\r"}, "echo hé\n", []string{"echo hé"}},
		{"ctrl-u", "$ ", []string{"rm -rf /\x15ls\r"}, "ls\n", []string{"ls"}},
		{"ctrl-w", "$ ", []string{"cat /etc/passwd  \x17/etc/group\r"}, "cat /etc/group\n", []string{"cat /etc/group"}},
		{"ctrl-c abandons", "$ ", []string{"reboot\x03", "uptime\r"}, "reboot\nuptime\n", []string{"uptime"}},
		{"arrow keys and SS3", "$ ", []string{"\x1b[A\x1bOB\x1b[1;5Cwho\r"}, "who\n", []string{"who"}},
		{"bracketed paste", "$ ", []string{"\x1b[200~echo pasted\x1b[201~\r"}, "echo pasted\n", []string{"echo pasted"}},
		{"split over events", "$ ", []string{"sys", "temctl sto", "p nginx", "\r"}, "systemctl stop nginx\n", []string{"systemctl stop nginx"}},
		{"CR LF is one Enter", "$ ", []string{"a1\r\nb2\r\n"}, "a1\nb2\n", []string{"a1", "b2"}},
		{"blank lines", "$ ", []string{"\r\r  \r"}, "", nil},
		{"unfinished line", "$ ", []string{"shutdown -h"}, "shutdown -h\n", nil},
		{"tab kept", "$ ", []string{"ls /et\tc\r"}, "ls /et\tc\n", []string{"ls /et c"}}, // a tab is one line's space in a timeline
		{"sudo password", "[sudo] password for aiko: ", []string{"hunter2\r"}, "[hidden input]\n", nil},
		{"ssh passphrase", "Enter passphrase for key '/home/a/.ssh/id_ed25519': ", []string{"s3cret\r"}, "[hidden input]\n", nil},
		{"verification code", "Verification code:", []string{"123456\r"}, "[hidden input]\n", nil},
		{"PIN", "Enter PIN: ", []string{"0000\r"}, "[hidden input]\n", nil},
		{"password prompt with colour", "\x1b[1mPassword:\x1b[0m ", []string{"pw\r"}, "[hidden input]\n", nil},
		{"a shell prompt is not a password prompt", "password-db:~$ ", []string{"ls\r"}, "ls\n", []string{"ls"}},
		{"a prompt after CR is not the line", "Password:\r", []string{"ls\r"}, "ls\n", []string{"ls"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events := []Event{{Time: 0.5, Code: "o", Data: tc.prompt}}
			for i, in := range tc.in {
				events = append(events, Event{Time: float64(i + 1), Code: "i", Data: in})
			}
			text, timeline := feedChannel(true, "shell", events)
			if text.Typed != tc.typed {
				t.Errorf("Typed = %q, want %q", text.Typed, tc.typed)
			}
			var cmds []string
			for _, e := range timeline {
				if e.Kind == "command" {
					cmds = append(cmds, e.Text)
				}
			}
			if !reflect.DeepEqual(cmds, tc.cmds) || text.Commands != len(tc.cmds) {
				t.Errorf("commands %q (counted %d), want %q", cmds, text.Commands, tc.cmds)
			}
		})
	}
}

func TestShownText(t *testing.T) {
	long := strings.Repeat("x", maxLineBytes)
	tests := []struct {
		name string
		out  []string
		want string
	}{
		{"colours", []string{"\x1b[1;31mred\x1b[0m \x1b[38;5;208morange\x1b[m\r\n"}, "red orange\n"},
		{"OSC 8 link keeps its text", []string{"\x1b]8;id=1;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\n"}, "click\n"},
		{"OSC ended by BEL", []string{"\x1b]2;title\x07text\n"}, "text\n"},
		{"DCS", []string{"a\x1bP1$r0m\x1b\\b\n"}, "ab\n"},
		{"C1 CSI and OSC", []string{"\u009b31mred\u009b0m \u009d0;t\u009cok\n"}, "red ok\n"},
		{"sequence split over events", []string{"a\x1b", "[3", "1mb\x1b]0;ti", "tle\x07c\n"}, "abc\n"},
		{"charset and keypad", []string{"\x1b(B\x1b=a\x1b>b\n"}, "ab\n"},
		{"CR starts a line", []string{"10%\r20%\r\n"}, "10%\n20%\n"},
		{"CR LF split over events", []string{"a\r", "\nb\n"}, "a\nb\n"},
		{"backspace", []string{"abc\b\bX\n"}, "aX\n"},
		{"controls dropped", []string{"a\x07\x0eb\x7fc\u0085\n"}, "abc\n"},
		{"blank lines left out", []string{"\r\n\r\n\na\n\n"}, "a\n"},
		{"long line split", []string{long + "yz\n"}, long + "\nyz\n"},
		{"unfinished last line", []string{"$ "}, "$ \n"},
		{"binary output skipped", []string{"a\n", "\uFFFD\uFFFDbin\n", "b\n"}, "a\nb\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var events []Event
			for _, o := range tc.out {
				events = append(events, Event{Code: "o", Data: o})
			}
			if text, _ := feedChannel(true, "shell", events); text.Shown != tc.want {
				t.Errorf("Shown = %q, want %q", text.Shown, tc.want)
			}
			// The same bytes on a channel without a terminal.
			events = events[:0]
			for _, o := range tc.out {
				if strings.ContainsRune(o, utf8.RuneError) {
					o = "\xff\xfe" + o // binary: skipped there too
				}
				events = append(events, Event{Code: "x-stdout", Data: base64.StdEncoding.EncodeToString([]byte(o))})
			}
			if text, _ := feedChannel(false, "exec", events); text.Shown != tc.want {
				t.Errorf("exec: Shown = %q, want %q", text.Shown, tc.want)
			}
		})
	}
}

func TestTimelineText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ls -l", "ls -l"},
		{"a\tb\nc\rd", "a b c d"},
		{"\x1b[2Jclear\x07", "\uFFFD[2Jclear\uFFFD"},
		{"evil\u202egnp.exe", "evil\uFFFDgnp.exe"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{strings.Repeat("a", 200), strings.Repeat("a", 200)},
		{strings.Repeat("a", 201), strings.Repeat("a", 197) + "…"},
		{strings.Repeat("é", 101), strings.Repeat("é", 98) + "…"},
	}
	for _, tc := range tests {
		got := timelineText(tc.in)
		if got != tc.want || len(got) > maxTimelineText {
			t.Errorf("timelineText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTimelineIsBounded(t *testing.T) {
	events := make([]Event, 0, MaxTimelineEvents+10)
	for i := range MaxTimelineEvents + 10 {
		events = append(events, Event{Time: float64(i), Code: "x-signal", Data: "INT"})
	}
	_, got := feedChannel(false, "exec", events)
	if len(got) != MaxTimelineEvents {
		t.Fatalf("%d events, want %d", len(got), MaxTimelineEvents)
	}
	last := got[len(got)-1]
	if last.Kind != "end" || last.Text != "timeline cut at 5000 events: the recording has more" {
		t.Errorf("last event %+v, want the cut marker", last)
	}
	if e := got[len(got)-2]; e.Kind != "signal" || e.Time != MaxTimelineEvents-2 {
		t.Errorf("event before the marker %+v", e)
	}
}

func TestSessionTextErrors(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdin([]byte("whoami\r")))
	must(t, c.Close())
	// A last event cut short: what comes before it is still text.
	f, err := os.OpenFile(s.Dir()+"/1.cast", os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(`[1.5, "i", "rebo`)
	must(t, err)
	must(t, f.Close())
	text, err := SessionText(root, id, 0)
	if err != nil || text.Typed != "whoami\n" {
		t.Errorf("truncated recording: SessionText = %#v, %v", text, err)
	}
	tl, err := Timeline(root, id)
	if err != nil || len(tl) != 2 || tl[0].Text != "whoami" || tl[1].Kind != "end" {
		t.Errorf("truncated recording: Timeline = %+v, %v", tl, err)
	}
	if _, err := SessionText(root, "not-a-uuid", 0); err == nil {
		t.Error("SessionText of a bad ID: no error")
	}
	if _, err := Timeline(t.TempDir(), id); err == nil {
		t.Error("Timeline of a missing recording: no error")
	}
}

// Once the shown text is full, the output of an exec channel is no longer
// read; what was shown before, what is typed after, and the commands are
// kept.
func TestSessionTextStopsReadingOutputOnceFull(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "tar cf - /srv"})
	must(t, c.Event("x-exec", "tar cf - /srv"))
	must(t, c.Stdout([]byte("first line shown\n")))
	must(t, c.Stdout(bytes.Repeat([]byte("0123456789abcdef\n"), 1<<16))) // 1.1 MB
	must(t, c.Stdin([]byte("typed after\n")))
	must(t, c.Close())
	txt, err := SessionText(root, id, 64)
	must(t, err)
	if !strings.HasPrefix(txt.Shown, "first line shown\n") || len(txt.Shown) > 64 {
		t.Errorf("shown %q", txt.Shown)
	}
	if !strings.Contains(txt.Typed, "tar cf - /srv") || !strings.Contains(txt.Typed, "typed after") || txt.Commands != 1 {
		t.Errorf("typed %q, %d commands", txt.Typed, txt.Commands)
	}
}

// What the moderators of a moderated session did is on its timeline, in
// the order it happened among the technician's commands, the text as
// recorded but made one safe line and cut like any other.
func TestTimelineShowsModerators(t *testing.T) {
	root, id, s := newSession(t)
	sh := newChannel(t, s, ChannelInfo{PTY: true, Term: "xterm", Kind: "shell", Cols: 80, Rows: 24})
	must(t, sh.Event("x-moderator", "kenji joined"))
	advance(sh, time.Second)
	must(t, sh.Stdout([]byte("db$ ")))
	must(t, sh.Stdin([]byte("psql orders\r")))
	advance(sh, time.Second)
	must(t, sh.Event("x-moderator", "kenji said: check the backup first\x1b[2J\u202e"))
	must(t, sh.Event("x-moderator", "kenji held the input"))
	advance(sh, time.Second)
	must(t, sh.Event("x-moderator", "kenji released the input"))
	must(t, sh.Event("x-moderator", "kenji left; input held"))
	advance(sh, time.Second)
	must(t, sh.Event("x-moderator", "kenji ended the session: "+strings.Repeat("wrong table ", 30)))
	must(t, sh.Close())

	got, err := Timeline(root, id)
	must(t, err)
	type ev struct {
		Second float64
		Kind   string
		Text   string
	}
	var gotEv []ev
	for _, e := range got {
		gotEv = append(gotEv, ev{math.Floor(e.Time), e.Kind, e.Text})
	}
	long := "kenji ended the session: " + strings.Repeat("wrong table ", 30)
	want := []ev{
		{0, "moderator", "kenji joined"},
		{1, "command", "psql orders"},
		{2, "moderator", "kenji said: check the backup first\uFFFD[2J\uFFFD"},
		{2, "moderator", "kenji held the input"},
		{3, "moderator", "kenji released the input"},
		{3, "moderator", "kenji left; input held"},
		{4, "moderator", long[:maxTimelineText-len("…")] + "…"},
	}
	if !reflect.DeepEqual(gotEv, want) {
		t.Errorf("Timeline:\n got %+v\nwant %+v", gotEv, want)
	}
}
