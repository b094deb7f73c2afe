package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/recording"
)

// sseEvent is one server-sent event as a browser's EventSource sees it.
type sseEvent struct {
	name string // "" for message
	data string
}

// sseReader reads the events of a stream, skipping comments.
type sseReader struct {
	t  *testing.T
	br *bufio.Reader
}

func (r *sseReader) next() (sseEvent, bool) {
	r.t.Helper()
	var ev sseEvent
	var data []string
	for {
		line, err := r.br.ReadString('\n')
		if err == io.EOF && line == "" {
			return ev, false
		}
		if err != nil {
			r.t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data == nil {
				continue // the end of a comment
			}
			ev.data = strings.Join(data, "\n")
			return ev, true
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			r.t.Fatalf("a line that is not server-sent events: %q", line)
		}
	}
}

// output returns the text of an output event, failing on anything else.
func (r *sseReader) output(ev sseEvent) string {
	r.t.Helper()
	var e []any
	if ev.name != "" || json.Unmarshal([]byte(ev.data), &e) != nil || len(e) != 3 || e[1] != "o" {
		r.t.Fatalf("want an output event [time, \"o\", text], got %+v", ev)
	}
	if _, ok := e[0].(float64); !ok {
		r.t.Fatalf("the time of %s is not a number", ev.data)
	}
	return e[2].(string)
}

// startLive serves the live view of session id under root and opens it as
// a browser's EventSource does.
func startLive(t *testing.T, root, id string) (*sseReader, *http.Response) {
	t.Helper()
	return startLiveAllowed(t, root, id, func() bool { return true })
}

// startLiveAllowed is startLive with the watcher's re-check.
func startLiveAllowed(t *testing.T, root, id string, allowed func() bool) (*sseReader, *http.Response) {
	t.Helper()
	s := &Server{log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cols, rows := liveSize(root, id)
		s.serveLive(w, r, id, localWatch(root, id), cols, rows, allowed)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q; want 200, text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseReader{t: t, br: bufio.NewReader(resp.Body)}, resp
}

// A live session is streamed as the player's eventsource driver reads it:
// its terminal size first, then sanitized output, then done at its end.
func TestServeLiveFollowsSession(t *testing.T) {
	t.Parallel()
	root, id, sess, shell := liveShell(t, 132, 43)
	if err := shell.Stdout([]byte("prompt$ ")); err != nil {
		t.Fatal(err)
	}

	sse, _ := startLive(t, root, id)
	if ev, _ := sse.next(); ev.name != "" || ev.data != `{"cols":132,"rows":43}` {
		t.Fatalf("first event %+v, want the terminal size", ev)
	}
	var seen strings.Builder
	for !strings.Contains(seen.String(), "prompt$ ") {
		ev, ok := sse.next()
		if !ok {
			t.Fatalf("the stream ended before the prompt; it showed %q", seen.String())
		}
		seen.WriteString(sse.output(ev))
	}

	// A hyperlink and a clipboard write are removed, the text passes.
	if err := shell.Stdout([]byte("ls\r\n\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\ \x1b]52;c;c2VjcmV0\x07héllo\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := shell.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sess.End(time.Now(), "client closed", 0, 0); err != nil {
		t.Fatal(err)
	}
	var last sseEvent
	for {
		ev, ok := sse.next()
		if !ok {
			break
		}
		if last.name == "done" {
			t.Fatalf("an event after done: %+v", ev)
		}
		if last = ev; ev.name == "" {
			seen.WriteString(sse.output(ev))
		}
	}
	if last.name != "done" {
		t.Fatalf("the stream ended with %+v, want event done", last)
	}
	got := seen.String()
	if !strings.Contains(got, "read-only; leave this page to stop watching]") || strings.Contains(got, "Ctrl-C") {
		t.Errorf("the banner does not tell a browser how to stop watching: %q", got)
	}
	if !strings.Contains(got, "link héllo\r\n") || !strings.Contains(got, "[sekisho: session ended: client closed]") {
		t.Errorf("the stream showed %q", got)
	}
	for _, bad := range []string{"\x1b]", "evil.example", "c2VjcmV0"} {
		if strings.Contains(got, bad) {
			t.Errorf("the stream showed %q: %q", bad, got)
		}
	}
}

// A session without a recording here is offline, and the stream ends so
// that the player does not reconnect.
func TestServeLiveOffline(t *testing.T) {
	t.Parallel()
	sse, _ := startLive(t, t.TempDir(), uuid.NewString())
	var got []sseEvent
	for {
		ev, ok := sse.next()
		if !ok {
			break
		}
		got = append(got, ev)
	}
	want := []sseEvent{{"", `{"cols":80,"rows":24}`}, {"", `{"state":"offline"}`}, {"done", "ended"}}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %+v, want %+v", got, want)
		}
	}
}

// A browser that goes away ends the handler, though the session goes on.
func TestServeLiveEndsWithBrowser(t *testing.T) {
	t.Parallel()
	root, id, _, _ := liveShell(t, 80, 24)
	s := &Server{log: slog.New(slog.DiscardHandler)}
	returned := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		cols, rows := liveSize(root, id)
		s.serveLive(w, r, id, localWatch(root, id), cols, rows, func() bool { return true })
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sse := &sseReader{t: t, br: bufio.NewReader(resp.Body)}
	sse.next() // the size: the stream runs
	cancel()
	resp.Body.Close()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("serveLive still runs 10s after the browser went away")
	}
}

// A character split across writes is sent whole, with the next write.
func TestLiveStreamWholeCharacters(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	st := &liveStream{w: rec, rc: http.NewResponseController(rec), cols: 80, rows: 24}
	for _, p := range []string{"a\xc3", "\xa9b", "\xe2\x82", "\xac", "\xff"} {
		if n, err := st.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	sse := &sseReader{t: t, br: bufio.NewReader(rec.Body)}
	sse.next() // the size
	var got []string
	for {
		ev, ok := sse.next()
		if !ok {
			break
		}
		got = append(got, sse.output(ev))
	}
	want := []string{"a", "éb", "€", "\ufffd"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestCompleteUTF8(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 3},
		{"a\xc3", 1},
		{"a\xc3\xa9", 3},
		{"\xe2\x82", 0},
		{"\xe2\x82\xac", 3},
		{"x\xf0\x9f\x98", 1},
		{"x\xf0\x9f\x98\x80", 5},
		{"\xff", 1},
		{"\x80\x80\x80\x80", 4}, // invalid: sent as is, JSON replaces it
	} {
		if got := completeUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("completeUTF8(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// A watcher who may no longer watch (signed out, locked, key removed,
// scope narrowed) loses the live view within a second or so, with a word
// why, and nothing recorded after that reaches them.
func TestServeLiveEndsWhenTheWatcherMayNoLonger(t *testing.T) {
	t.Parallel()
	root, id, _, shell := liveShell(t, 80, 24)
	if err := shell.Stdout([]byte("before-revocation ")); err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Bool
	allowed.Store(true)
	sse, _ := startLiveAllowed(t, root, id, allowed.Load)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "before-revocation") {
		ev, ok := sse.next()
		if !ok {
			t.Fatalf("the stream ended early; it showed %q", seen.String())
		}
		if ev.data[0] == '[' {
			seen.WriteString(sse.output(ev))
		}
	}
	allowed.Store(false)
	start := time.Now()
	for {
		ev, ok := sse.next()
		if !ok {
			t.Fatalf("the stream ended without done; it showed %q", seen.String())
		}
		if ev.name == "done" {
			break
		}
		if ev.data != "" && ev.data[0] == '[' {
			seen.WriteString(sse.output(ev))
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the live view ended %v after the watcher lost the right", took)
	}
	if !strings.Contains(seen.String(), "you may no longer watch this session") {
		t.Errorf("the watcher was not told why: %q", seen.String())
	}
	// Output after the end reaches nobody: the stream is closed.
	if err := shell.Stdout([]byte("after-revocation")); err != nil {
		t.Fatal(err)
	}
	if ev, ok := sse.next(); ok {
		t.Errorf("an event after done: %+v", ev)
	}
}

// A resize of the technician's terminal reaches the player as an "r"
// event between the output before and after it; a size the player could
// not draw is not passed on.
func TestServeLiveResizes(t *testing.T) {
	t.Parallel()
	root, id, sess, shell := liveShell(t, 80, 24)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(shell.Stdout([]byte("before$ ")))
	sse, _ := startLive(t, root, id)
	if ev, _ := sse.next(); ev.data != `{"cols":80,"rows":24}` {
		t.Fatalf("first event %+v, want the terminal size", ev)
	}
	var got []string // "o:text" and "r:size", in order
	wrote := false
	for {
		// Once the watch has joined (it showed before$), the terminal
		// is resized and goes on: the watch follows that live.
		if !wrote && strings.Contains(strings.Join(got, ""), "before$") {
			wrote = true
			must(shell.Resize(120, 40))
			must(shell.Stdout([]byte("after$ ")))
			must(shell.Resize(5000, 40))
			must(shell.Close())
			must(sess.End(time.Now(), "client closed", 0, 0))
		}
		ev, ok := sse.next()
		if !ok || ev.name == "done" {
			break
		}
		var e []any
		if json.Unmarshal([]byte(ev.data), &e) != nil || len(e) != 3 {
			t.Fatalf("event %+v is not [time, code, data]", ev)
		}
		if _, ok := e[0].(float64); !ok {
			t.Fatalf("the time of %s is not a number", ev.data)
		}
		switch e[1] {
		case "o":
			got = append(got, "o:"+e[2].(string))
		case "r":
			size, _ := json.Marshal(e[2])
			got = append(got, "r:"+string(size))
		default:
			t.Fatalf("event %s: want code o or r", ev.data)
		}
	}
	all := strings.Join(got, "|")
	b, r, a := strings.Index(all, "before$"), strings.Index(all, `r:{"cols":120,"rows":40}`), strings.Index(all, "after$")
	if b < 0 || r < b || a < r {
		t.Errorf("want before$, then a resize to 120x40, then after$; the stream was %q", all)
	}
	if strings.Count(all, "r:") != 1 {
		t.Errorf("want one resize event; the stream was %q", all)
	}
}

// liveShell starts the recording of a live session under a new root, with
// one terminal channel of cols×rows.
func liveShell(t *testing.T, cols, rows int) (root, id string, sess *recording.Session, shell *recording.Channel) {
	t.Helper()
	root, id = t.TempDir(), uuid.NewString()
	sess, err := recording.Create(root, recording.Meta{ID: id, Technician: "alice", Target: "web1", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	shell, err = sess.Channel(recording.ChannelInfo{PTY: true, Kind: "shell", Cols: cols, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	return root, id, sess, shell
}
