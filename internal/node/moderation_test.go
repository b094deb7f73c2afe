package node

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node/nodetest"
	"github.com/sekisho/sekisho/internal/peer"
	"github.com/sekisho/sekisho/session"
)

// servePeer serves cfg (with key and a refusal sink) on loopback.
func servePeer(t *testing.T, key ssh.Signer, cfg peer.Config) string {
	t.Helper()
	cfg.HostKey, cfg.Refused = key, func(string, string) {}
	if cfg.Watch == nil {
		cfg.Watch = func(context.Context, peer.WatchRequest, *peer.Stream) error { return peer.ErrNotServed }
	}
	srv, err := peer.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// A moderator is seated on the node that has the session even when other
// nodes do not answer (stopped, out of reach) or serve watches only (an
// older release); a refusal there is theirs to read.
func TestLocateSkipsNodesThatCannotAnswer(t *testing.T) {
	_, _, key := nodetest.Key(t, 9, "")
	old := servePeer(t, key, peer.Config{}) // watches only
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	serving := servePeer(t, key, peer.Config{
		Moderate: func(context.Context, peer.WatchRequest, *peer.Stream) error { return nil },
		Control: func(_ context.Context, req peer.ControlRequest) (string, error) {
			switch {
			case req.Session != "s-1":
				return "", peer.ErrNotServed
			case req.Watcher == "wei":
				return "", peer.Refusal("wei is of ops-jp, the technician's own affiliate: a moderator is of another")
			}
			b, _ := json.Marshal(broker.ModeratedSession{ID: "s-1", Technician: "aiko", Target: "web-sg-01", Needed: 1})
			return string(b), nil
		}})
	p := &Peers{nodes: beats{{Name: "n2", Address: old}, {Name: "n4", Address: deadAddr}, {Name: "n3", Address: serving}}, key: key, self: "n1"}

	seat, err := p.Moderate(t.Context(), "s-1", "kenji")
	if err != nil {
		t.Fatalf("kenji's seat: %v", err)
	}
	if ms := seat.Session(); ms.Technician != "aiko" || ms.Target != "web-sg-01" {
		t.Errorf("the seat's session: %+v", ms)
	}
	var rf *session.ModerationRefused
	if _, err := p.Moderate(t.Context(), "s-1", "wei"); !errors.As(err, &rf) || rf.NotHere || rf.Why != "wei is of ops-jp, the technician's own affiliate: a moderator is of another" {
		t.Errorf("wei's seat: %v", err)
	}
	if _, err := p.Moderate(t.Context(), "s-2", "kenji"); !errors.As(err, &rf) || !rf.NotHere {
		t.Errorf("a session no node has: %v", err)
	}
}
