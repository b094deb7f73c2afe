package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// watchOutput is what a watcher sees, written by Watch's goroutine and
// read by the test.
type watchOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *watchOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *watchOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// startWatch runs Watch on session id until it returns; the result
// arrives on the returned channel.
func startWatch(t *testing.T, root, id string, opt WatchOptions) (*watchOutput, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &watchOutput{}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		done <- Watch(ctx, out, root, id, opt)
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited // the watch ends when its context does
	})
	return out, done
}

// waitOutput waits until the watcher has seen want.
func waitOutput(t *testing.T, out *watchOutput, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher never saw %q; it saw:\n%q", want, out.String())
		}
		time.Sleep(time.Millisecond) // polling for a condition, with a deadline
	}
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return within 10s of the session's end")
	}
	return nil
}

// inOrder fails unless each of wants appears in s after the one before.
func inOrder(t *testing.T, s string, wants ...string) {
	t.Helper()
	at := 0
	for _, w := range wants {
		i := strings.Index(s[at:], w)
		if i < 0 {
			t.Fatalf("%q is missing, or out of order, in:\n%q", w, s)
		}
		at += i + len(w)
	}
}

// A session written by the real writer is followed live: the marker
// first, terminal output sanitized and in order, a channel opened later,
// and the end.
func TestWatchFollowsLiveSession(t *testing.T) {
	t.Parallel()
	root, id, s := newSession(t)
	shell := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell", Cols: 100, Rows: 30})
	must(t, shell.Stdout([]byte("prompt$ ")))

	out, done := startWatch(t, root, id, WatchOptions{Poll: 5 * time.Millisecond})
	waitOutput(t, out, "[sekisho: watching session "+id+" (alice@web1) read-only; Ctrl-C to stop]\r\n")
	waitOutput(t, out, "prompt$ ")

	must(t, shell.Stdin([]byte("ls\r")))
	must(t, shell.Stdout([]byte("ls\r\nfile-1\r\n")))
	waitOutput(t, out, "file-1\r\n")
	// A program on the target tries to set the watcher's clipboard and
	// title; the text around the sequences passes.
	must(t, shell.Stdout([]byte("before\x1b]52;c;c2VjcmV0\x07\x1b]2;pwned\x1b\\after\r\n")))
	waitOutput(t, out, "beforeafter\r\n")

	exec := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "uname -a"})
	must(t, exec.Stdout([]byte("Linux web1\n")))
	must(t, exec.Stdout([]byte{0, 1, 2, 0xff}))
	must(t, exec.Event("x-exit-status", "0"))
	must(t, exec.Event("x-close", ""))
	must(t, exec.Close())
	waitOutput(t, out, "[sekisho: channel 2: exit status 0]")

	must(t, shell.Stdout([]byte("still-here\r\n")))
	must(t, shell.Event("x-exit-status", "3"))
	must(t, shell.Event("x-close", ""))
	must(t, shell.Close())
	must(t, s.End(time.Now(), "client closed", 0, 0))
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Watch = %v, want nil at the session's end", err)
	}

	got := out.String()
	inOrder(t, got,
		"[sekisho: watching session "+id,
		"[sekisho: channel 1: shell 100x30]\r\n",
		"prompt$ ls\r\nfile-1\r\n",
		"beforeafter\r\n",
		"[sekisho: channel 2: exec \"uname -a\"]\r\n",
		"Linux web1\r\n",
		"[sekisho: channel 2: 4 bytes of binary output]\r\n",
		"[sekisho: channel 2: exit status 0]\r\n",
		"still-here\r\n",
		"[sekisho: channel 1: exit status 3]\r\n",
		"[sekisho: session ended: client closed]\r\n",
	)
	for _, bad := range []string{"\x1b]", "c2VjcmV0", "pwned"} {
		if strings.Contains(got, bad) {
			t.Errorf("the watcher saw %q:\n%q", bad, got)
		}
	}
	if strings.Count(got, "ls\r") != 1 {
		t.Errorf("the technician's input was shown besides its echo:\n%q", got)
	}
}

// A watch joins at the live point with the last output of the terminal
// for context, or from the start with everything.
func TestWatchJoinPoint(t *testing.T) {
	t.Parallel()
	root, id, s := newSession(t)
	old := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "true"})
	must(t, old.Stdout([]byte("old-exec-output\n")))
	must(t, old.Event("x-close", ""))
	must(t, old.Close())
	shell := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	var history strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&history, "line-%04d\r\n", i)
	}
	must(t, shell.Stdout([]byte(history.String())))
	must(t, shell.Stdout([]byte("prompt$ ")))

	live, liveDone := startWatch(t, root, id, WatchOptions{Poll: 5 * time.Millisecond})
	all, allDone := startWatch(t, root, id, WatchOptions{FromStart: true, Poll: 5 * time.Millisecond})
	waitOutput(t, live, "prompt$ ")
	waitOutput(t, all, "prompt$ ")
	must(t, shell.Stdout([]byte("after-join\r\n")))
	must(t, shell.Close())
	must(t, s.End(time.Now(), "target closed", 0, 0))
	for _, done := range []<-chan error{liveDone, allDone} {
		if err := waitDone(t, done); err != nil {
			t.Fatalf("Watch = %v", err)
		}
	}

	got := live.String()
	inOrder(t, got, "read-only", "[sekisho: channel 2: shell 80x24]\r\nline-", "line-0999\r\nprompt$ after-join\r\n", "[sekisho: session ended: target closed]")
	if strings.Contains(got, "line-0000") || strings.Contains(got, "old-exec-output") || strings.Contains(got, "channel 1") {
		t.Errorf("joining at the live point showed old history:\n%q", got)
	}
	if len(got) > 2*watchContext {
		t.Errorf("joining at the live point showed %d bytes", len(got))
	}
	if !strings.HasPrefix(got[strings.Index(got, "shell 80x24]\r\n")+len("shell 80x24]\r\n"):], "line-") {
		t.Errorf("the context does not start on a line of its own:\n%q", got)
	}
	inOrder(t, all.String(), "[sekisho: channel 1: exec \"true\"]", "old-exec-output\r\n", "[sekisho: channel 2: shell 80x24]\r\nline-0000\r\n",
		"line-0999\r\nprompt$ after-join\r\n", "[sekisho: session ended: target closed]")
}

// Only complete lines are read: an event being written is shown once it
// is whole, and one left cut by a failed write is named at the end.
func TestWatchPartialLines(t *testing.T) {
	t.Parallel()
	root, id, s := newSession(t)
	shell := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, shell.Stdout([]byte("first\r\n")))
	out, done := startWatch(t, root, id, WatchOptions{FromStart: true, Poll: time.Millisecond})
	waitOutput(t, out, "first\r\n")

	f, err := os.OpenFile(filepath.Join(s.Dir(), "1.cast"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	defer f.Close()
	_, err = f.WriteString(`[1.0,"o","hal`)
	must(t, err)
	// Each poll reads the channels in order: once the watcher shows what
	// a channel opened after the half line carries, it has read the half
	// line too, and must have held it back.
	exec := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "true"})
	must(t, exec.Stdout([]byte("second-channel\n")))
	waitOutput(t, out, "second-channel")
	if strings.Contains(out.String(), "hal") {
		t.Fatalf("a partial line was shown: %q", out.String())
	}
	must(t, exec.Close())
	_, err = f.WriteString("f-line\\r\\n\"]\n" + `[1.1,"o","cut`)
	must(t, err)
	waitOutput(t, out, "half-line\r\n")
	must(t, shell.Close())
	must(t, s.End(time.Now(), "sekisho stopped", 0, 0))
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Watch = %v", err)
	}
	inOrder(t, out.String(), "half-line\r\n", "[sekisho: channel 1: the recording ends with a truncated event", "[sekisho: session ended: sekisho stopped]")
}

func TestWatchErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	var out bytes.Buffer
	if err := Watch(context.Background(), &out, root, "../etc", WatchOptions{}); !errors.Is(err, ErrBadID) {
		t.Errorf("Watch(bad ID) = %v, want ErrBadID", err)
	}
	if err := Watch(context.Background(), &out, root, uuid.NewString(), WatchOptions{}); !errors.Is(err, ErrNoRecording) {
		t.Errorf("Watch(unknown session) = %v, want ErrNoRecording", err)
	}
	if out.Len() != 0 {
		t.Errorf("a failed watch wrote %q", out.String())
	}

	// A watch of a quiet live session ends with its context.
	root, id, _ := newSession(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchOutput{}
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, w, root, id, WatchOptions{Poll: time.Millisecond}) }()
	waitOutput(t, w, "read-only")
	cancel()
	if err := waitDone(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after cancel = %v, want context.Canceled", err)
	}
}

// A failing writer (the watcher went away) ends the watch with its error.
func TestWatchWriteError(t *testing.T) {
	t.Parallel()
	root, id, _ := newSession(t)
	if err := Watch(context.Background(), errWriter{}, root, id, WatchOptions{}); !errors.Is(err, errTest) {
		t.Errorf("Watch = %v, want the write error", err)
	}
}

// A watch with Resize set is told the size of the terminal it joins, as
// last resized, and then every change in order with the output; a resize
// to the same size, or to nonsense, is not passed on.
func TestWatchFollowsResizes(t *testing.T) {
	t.Parallel()
	root, id := t.TempDir(), uuid.NewString()
	sess, err := Create(root, Meta{ID: id, Technician: "alice", Target: "web1", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	shell, err := sess.Channel(ChannelInfo{PTY: true, Kind: "shell", Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	must(t, shell.Stdout([]byte("before\r\n")))
	must(t, shell.Resize(100, 30)) // in the history: only its result counts

	out := &watchOutput{}
	resize := func(cols, rows int) error {
		fmt.Fprintf(out, "<%dx%d>", cols, rows)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, out, root, id, WatchOptions{Resize: resize}) }()
	waitOutput(t, out, "<100x30>")

	must(t, shell.Stdout([]byte("small\r\n")))
	must(t, shell.Resize(120, 40))
	must(t, shell.Resize(120, 40))
	must(t, shell.Stdout([]byte("wide\r\n")))
	must(t, shell.Resize(0, 40))
	must(t, shell.Resize(132, 43))
	must(t, shell.Close())
	must(t, sess.End(time.Now(), "client closed", 0, 0))
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	inOrder(t, got, "<100x30>", "before", "small", "<120x40>", "wide", "<132x43>", "session ended")
	if n := strings.Count(got, "<"); n != 3 {
		t.Errorf("%d sizes passed on, want 3 (the joined size, 120x40 once, 132x43):\n%q", n, got)
	}
}

// The spool copy of a session that just ended goes to its store between
// two looks of the watcher: what the files it holds open still have is
// shown, and the watch ends saying so, rather than failing.
func TestWatchEndsWhenTheSpoolCopyGoes(t *testing.T) {
	t.Parallel()
	root, id, s := newSession(t)
	shell := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell", Cols: 100, Rows: 30})
	must(t, shell.Stdout([]byte("prompt$ ")))
	out, done := startWatch(t, root, id, WatchOptions{Poll: 5 * time.Millisecond})
	waitOutput(t, out, "prompt$ ")
	// The last output and the removal land between two polls: the watcher
	// holds the file open and reads the rest from it.
	must(t, shell.Stdout([]byte("last-words\r\n")))
	dir, err := SessionDir(root, id)
	must(t, err)
	must(t, os.RemoveAll(dir))
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Watch = %v, want nil when the spool copy goes", err)
	}
	if got := out.String(); !strings.Contains(got, "[sekisho: session ended: ended; its recording went to its store]") {
		t.Errorf("the watcher saw:\n%q", got)
	}
}
