package peer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refusals collects what a server reports refused.
type refusals struct {
	mu   sync.Mutex
	list []string
	more chan struct{}
}

func (r *refusals) add(source, detail string) {
	r.mu.Lock()
	r.list = append(r.list, source+": "+detail)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// wait returns the refusals once one contains want, failing after 10s.
func (r *refusals) wait(t *testing.T, want string) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		list := append([]string(nil), r.list...)
		r.mu.Unlock()
		for _, s := range list {
			if strings.Contains(s, want) {
				return list
			}
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("no refusal reported containing %q; reported: %q", want, list)
		}
	}
}

// testServer serves watch on loopback with host key key.
func testServer(t *testing.T, key ssh.Signer, watch func(context.Context, WatchRequest, *Stream) error) (string, *refusals) {
	t.Helper()
	ref := &refusals{more: make(chan struct{}, 1)}
	srv, err := NewServer(Config{HostKey: key, Watch: watch, Refused: ref.add})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), ref
}

// recorder is a watch's output: text and sizes, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "o:"+string(p))
	return len(p), nil
}

func (r *recorder) resize(cols, rows int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("r:%dx%d", cols, rows))
	return nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A node holding the cluster's key gets the stream, output and sizes in
// their order, with what it asked for; the end of the session ends it
// without error.
func TestWatchWithTheClusterKey(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	got := make(chan WatchRequest, 1)
	big := strings.Repeat("x", maxFrame+10)
	addr, ref := testServer(t, key, func(ctx context.Context, req WatchRequest, out *Stream) error {
		got <- req
		out.Resize(80, 24)
		fmt.Fprint(out, "hello ")
		out.Resize(120, 40)
		fmt.Fprint(out, big)
		return nil
	})
	var rec recorder
	req := WatchRequest{Session: "s-1", FromStart: true, StopHint: "leave this page", Node: "n2", Watcher: "kenji"}
	if err := Watch(ctxT(t), addr, key, req, &rec, rec.resize); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if r := <-got; r != req {
		t.Errorf("the server was asked %+v, want %+v", r, req)
	}
	joined := strings.Join(rec.events, "|")
	want := "r:80x24|o:hello |r:120x40|o:" + big[:maxFrame] + "|o:" + big[maxFrame:]
	if joined != want {
		t.Errorf("stream = %.200q…, want %.200q…", joined, want)
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	if len(ref.list) != 0 {
		t.Errorf("refusals reported for an admitted node: %q", ref.list)
	}
}

// A client with another key is refused before it can ask anything, and
// the refusal names the key it offered.
func TestOtherKeyRefused(t *testing.T) {
	t.Parallel()
	key, other := newKey(t), newKey(t)
	called := make(chan struct{}, 1)
	addr, ref := testServer(t, key, func(context.Context, WatchRequest, *Stream) error {
		called <- struct{}{}
		return nil
	})
	// The client pins the server to the key it holds: to reach the
	// listener at all with another key, it must trust the server's.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _, _, err = ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: "n9", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)},
		HostKeyCallback: ssh.FixedHostKey(key.PublicKey())})
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("a client with another key: %v, want refused", err)
	}
	ref.wait(t, "key "+ssh.FingerprintSHA256(other.PublicKey())+" (ssh-ed25519) is not the cluster's host key")
	// Through Watch, which pins the server to its own key, the other key
	// does not even get to authenticate.
	err = Watch(ctxT(t), addr, other, WatchRequest{Session: "s-1"}, &recorder{}, nil)
	if err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("Watch with another key: %v, want the server's key refused", err)
	}
	select {
	case <-called:
		t.Fatal("the watch ran for a client with another key")
	default:
	}
}

// Passwords and keyboard-interactive are not accepted, whatever is typed.
func TestOtherMethodsRefused(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	addr, ref := testServer(t, key, func(context.Context, WatchRequest, *Stream) error { return nil })
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _, _, err = ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: "n1",
		Auth:            []ssh.AuthMethod{ssh.Password("secret"), ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return nil, nil })},
		HostKeyCallback: ssh.FixedHostKey(key.PublicKey())})
	if err == nil {
		t.Fatal("a client with a password was admitted")
	}
	ref.wait(t, "authentication refused")
}

// A session the node does not serve, or a request it does not know, is
// refused with a clear error.
func TestRefusedRequests(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	addr, _ := testServer(t, key, func(_ context.Context, req WatchRequest, _ *Stream) error {
		if req.Session == "broken" {
			return errors.New("recording unreadable")
		}
		return fmt.Errorf("%w: no such session here", ErrNotServed)
	})
	err := Watch(ctxT(t), addr, key, WatchRequest{Session: "gone"}, &recorder{}, nil)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "no such session here") {
		t.Errorf("a session not served there: %v, want ErrNotServed with the reason", err)
	}
	err = Watch(ctxT(t), addr, key, WatchRequest{Session: "broken"}, &recorder{}, nil)
	if err == nil || errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "recording unreadable") {
		t.Errorf("a failed watch: %v, want its error", err)
	}
	if err := Watch(ctxT(t), addr, key, WatchRequest{Session: "a b"}, &recorder{}, nil); err == nil {
		t.Error("a session ID with a space was sent")
	}

	// Another command, over a plain session.
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "n1", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(key.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	s.Stderr = &stderr
	err = s.Run("cat /etc/passwd")
	var exit *ssh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != exitFailed || !strings.Contains(stderr.String(), `this link serves "watch SESSION-ID [from-start]"`) {
		t.Errorf("another command: %v, stderr %q", err, stderr.String())
	}
	if _, _, err := c.OpenChannel("direct-tcpip", nil); err == nil {
		t.Error("a port forward was accepted")
	}
}

// A watcher that goes away ends the watch on the serving node.
func TestWatcherGoneEndsTheStream(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	started, ended := make(chan struct{}), make(chan struct{})
	addr, _ := testServer(t, key, func(ctx context.Context, _ WatchRequest, out *Stream) error {
		fmt.Fprint(out, "first")
		close(started)
		<-ctx.Done()
		close(ended)
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, addr, key, WatchRequest{Session: "s-1"}, &recorder{}, nil) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not start")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch after its context ended: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the serving node's watch went on after the watcher left")
	}
}

// Sources are bounded: failures have a source refused before its
// handshake, and refusals are reported once per window with the count of
// those held back.
func TestLimits(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLimits(2, 3, 2)
	l.now = func() time.Time { return now }

	steps := []struct {
		name string
		do   func() (bool, string)
		ok   bool
		why  string
	}{
		{"first from a", func() (bool, string) { return l.admit("a") }, true, ""},
		{"second from a", func() (bool, string) { return l.admit("a") }, true, ""},
		{"third from a, two under way", func() (bool, string) { return l.admit("a") }, false, "2 handshakes from this address"},
		{"first from b", func() (bool, string) { return l.admit("b") }, true, ""},
		{"first from c, three in all", func() (bool, string) { return l.admit("c") }, false, "3 handshakes under way"},
		{"a fails twice", func() (bool, string) { l.done("a", true); l.done("a", true); return l.admit("a") }, false, "2 failed attempts"},
		{"b is not held to a's failures", func() (bool, string) { l.done("b", false); return l.admit("b") }, true, ""},
		{"a after the failure window", func() (bool, string) { now = now.Add(failWindow); return l.admit("a") }, true, ""},
	}
	for _, s := range steps {
		ok, why := s.do()
		if ok != s.ok || !strings.Contains(why, s.why) {
			t.Errorf("%s: %v %q, want %v %q", s.name, ok, why, s.ok, s.why)
		}
	}

	if r := l.refusal("x", "one"); r != "one" {
		t.Errorf("first refusal reported as %q", r)
	}
	for _, why := range []string{"two", "three"} {
		if r := l.refusal("x", why); r != "" {
			t.Errorf("a refusal within the window reported: %q", r)
		}
	}
	if f := l.flush(); len(f) != 0 {
		t.Errorf("flushed before the window ended: %q", f)
	}
	now = now.Add(refusalWindow)
	f := l.flush()
	if !strings.Contains(f["x"], "2 refusals") || !strings.Contains(f["x"], "the last: three") {
		t.Errorf("flushed %q, want the two held back", f)
	}
	if r := l.refusal("x", "four"); r != "four" {
		t.Errorf("a refusal after a flush: %q", r)
	}
}

// freezer relays TCP connections to addr until frozen: then it forwards
// nothing more, yet keeps them open, as a crashed or cut-off host would.
type freezer struct {
	ln     net.Listener
	frozen chan struct{}
}

func newFreezer(t *testing.T, addr string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, frozen: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); up.Close() })
			go f.pipe(up, c)
			go f.pipe(c, up)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			<-make(chan struct{}) // holds the connection open, forwarding nothing
		default:
		}
		if err != nil {
			dst.Close()
			return
		}
		dst.Write(buf[:n])
	}
}

// A node that stops answering (crashed, cut off) loses its streams within
// the keepalives, not when TCP gives up minutes later: a moderator seated
// through it stops counting.
func TestSilentNodeLosesItsStream(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	started, ended := make(chan struct{}), make(chan struct{})
	srv, err := NewServer(Config{HostKey: key, Refused: func(string, string) {}, KeepaliveInterval: 100 * time.Millisecond, KeepaliveCountMax: 3,
		Watch: func(ctx context.Context, _ WatchRequest, out *Stream) error {
			fmt.Fprint(out, "first")
			close(started)
			<-ctx.Done()
			close(ended)
			return ctx.Err()
		}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f := newFreezer(t, ln.Addr().String())
	go Watch(ctxT(t), f.ln.Addr().String(), key, WatchRequest{Session: "s-1"}, &recorder{}, nil)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not start")
	}
	close(f.frozen)
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the serving node's stream went on 10 s after the other node fell silent")
	}
}
