package session

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestTargetLostMidSessionIsNamed: the target's connection dies while a
// command runs (no exit status, no channel close, just the TCP
// connection gone). The technician is told which target was lost before
// the channel closes, and the session ends with the target as reason.
// (e2e TestTargetKilledMidSession kills a real sshd.)
func TestTargetLostMidSessionIsNamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, replyAll)
	// A target of this test's own that drops the TCP connection once
	// the command has printed something.
	hostKey := newSigner()
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		for nch := range chans {
			ch, creqs, _ := nch.Accept()
			for r := range creqs {
				r.Reply(true, nil)
				if r.Type == "exec" {
					ch.Write([]byte("working\n"))
					nc.Close()
				}
			}
		}
	}()
	h.broker.tg.Address = ln.Addr().String()
	h.broker.tg.HostKeys = []ssh.PublicKey{hostKey.PublicKey()}

	c := h.dial(t)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	s.Stderr = &stderr
	done := make(chan error, 1)
	go func() { done <- s.Run("work") }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session went on after its target was lost")
	}
	var missing *ssh.ExitMissingError
	if !errors.As(err, &missing) {
		t.Errorf("Run = %v, want no exit status", err)
	}
	if !strings.Contains(stderr.String(), "sekisho: the connection to db was lost, so the session is ended") {
		t.Errorf("stderr %q, want the lost target named", stderr.String())
	}
	waitFor(t, "the session to end", func() bool { return len(h.broker.endReasons()) == 1 })
	if got := h.broker.endReasons()[0]; got != EndTargetClosed {
		t.Errorf("end reason %q, want %q", got, EndTargetClosed)
	}
}
