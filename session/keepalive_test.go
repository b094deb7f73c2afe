package session

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// peer answers keepalives while answering is set; otherwise its requests
// block like writes to a peer that stalled a key exchange.
type peer struct {
	ssh.Conn
	answering atomic.Bool
	asked     atomic.Int64
	closed    chan struct{}
}

func (p *peer) SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error) {
	p.asked.Add(1)
	if name != "keepalive@openssh.com" || !wantReply {
		panic("unexpected request " + name)
	}
	if p.answering.Load() {
		return false, nil, nil // a refusal is an answer too
	}
	<-p.closed
	return false, nil, ssh.ErrNoAuth
}

func TestKeepAliveEndsAPeerThatStopsAnswering(t *testing.T) {
	p := &peer{closed: make(chan struct{})}
	defer close(p.closed)
	p.answering.Store(true)
	dead := make(chan string, 1)
	defer keepAlive(p, 5*time.Millisecond, 3, func(why string) { dead <- why })()

	deadline := time.Now().Add(10 * time.Second)
	for p.asked.Load() < 20 {
		select {
		case why := <-dead:
			t.Fatalf("a peer that answers was declared dead: %s", why)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("keepalives were not sent")
		}
		time.Sleep(time.Millisecond)
	}
	p.answering.Store(false)
	select {
	case why := <-dead:
		if !strings.Contains(why, "3 keepalives in a row unanswered") || !strings.Contains(why, "ssh.keepalive_interval") {
			t.Fatalf("reason %q does not say how many went unanswered and which setting", why)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a peer that stopped answering was not declared dead")
	}
	if n := p.asked.Load(); n > 20+5 {
		t.Fatalf("%d requests sent; blocked requests must not pile up beyond count_max+1", n)
	}
}

func TestKeepAliveStops(t *testing.T) {
	p := &peer{closed: make(chan struct{})}
	defer close(p.closed)
	k := &keepalive{conn: p, interval: time.Hour, countMax: 1, dead: func(string) { t.Error("declared dead after stop") }}
	k.timer = time.AfterFunc(time.Hour, func() {})
	k.tick() // asks once; the peer does not answer
	waitFor(t, "the first keepalive", func() bool { return p.asked.Load() == 1 })
	k.stopped = true // what stop does
	k.tick()         // a check that was already due when stop came
	if n := p.asked.Load(); n != 1 {
		t.Fatalf("%d keepalives sent in all; want none after stop", n)
	}
}

func TestBrokenTellsFailuresFromCloses(t *testing.T) {
	for _, tc := range []struct {
		err    error
		broken bool
	}{
		{nil, false},
		{io.EOF, false},
		{fmt.Errorf("read tcp: %w", net.ErrClosed), false},
		{errors.New(`ssh: disconnect, reason 11: "disconnected by user"`), false}, // OpenSSH's goodbye
		{errors.New("ssh: MAC failure"), true},
		{errors.New("cipher: message authentication failed"), true},
		{errors.New(`ssh: disconnect, reason 2: "Corrupted MAC on input"`), true},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true},
	} {
		if got := broken(tc.err); got != tc.broken {
			t.Errorf("broken(%v) = %v, want %v", tc.err, got, tc.broken)
		}
	}
}
