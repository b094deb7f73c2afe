package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node/nodetest"
	"github.com/sekisho/sekisho/internal/peer"
	"github.com/sekisho/sekisho/recording"
)

// The cluster section's node-to-node addresses.
func TestPeerSection(t *testing.T) {
	valid, _ := nodetest.Config(t)
	pg := strings.Replace(valid, "state: state/sekisho.db\n", "database:\n  url: postgres://sekisho@db:5432/s\n", 1)
	for _, tc := range []struct {
		name, cfg, err, addr string
	}{
		{name: "off", cfg: pg},
		{name: "listen", cfg: pg + "\ncluster:\n  listen: 10.0.0.11:2223\n", addr: "10.0.0.11:2223"},
		{name: "advertise", cfg: pg + "\ncluster:\n  listen: 0.0.0.0:2223\n  advertise: n1.internal:2223\n", addr: "n1.internal:2223"},
		{name: "no host", cfg: pg + "\ncluster:\n  listen: :2223\n", err: "set cluster.advertise"},
		{name: "any address", cfg: pg + "\ncluster:\n  listen: '[::]:2223'\n", err: "set cluster.advertise"},
		{name: "no port", cfg: pg + "\ncluster:\n  listen: 10.0.0.11\n", err: "write host:port"},
		{name: "advertise no host", cfg: pg + "\ncluster:\n  listen: 10.0.0.11:2223\n  advertise: :2223\n", err: "cluster.advertise \":2223\""},
		{name: "advertise alone", cfg: pg + "\ncluster:\n  advertise: n1:2223\n", err: "without cluster.listen"},
		{name: "sqlite", cfg: valid + "\ncluster:\n  listen: 127.0.0.1:2223\n", err: "no other nodes"},
	} {
		cfg, err := ParseConfig(strings.NewReader(tc.cfg), "sekisho.yaml")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v; want an error saying %q", tc.name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == "" && cfg.PeerAddress() != tc.addr:
			t.Errorf("%s: advertised %q, want %q", tc.name, cfg.PeerAddress(), tc.addr)
		}
	}
}

// beats is a register of heartbeats.
type beats []broker.NodeBeat

func (b beats) Nodes(context.Context) ([]broker.NodeBeat, error) { return b, nil }

// peerWatch is what watching through Peers and the serving node's
// liveStreamer needs: a recording being written, and the two ends of the
// link on loopback.
type peerWatch struct {
	root, id string
	shell    *recording.Channel
	sess     *recording.Session
	addr     string
	refused  chan string
}

func startPeerWatch(t *testing.T, key ssh.Signer) *peerWatch {
	t.Helper()
	pw := &peerWatch{root: t.TempDir(), id: uuid.NewString(), refused: make(chan string, 16)}
	var err error
	pw.sess, err = recording.Create(pw.root, recording.Meta{ID: pw.id, Technician: "aiko", Target: "db-jp-01", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	pw.shell, err = pw.sess.Channel(recording.ChannelInfo{PTY: true, Kind: "shell", Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	live := liveStreamer{recDir: pw.root, serving: func(id string) bool { return id == pw.id }}
	srv, err := peer.NewServer(peer.Config{HostKey: key, Watch: live.stream, Refused: func(source, detail string) { pw.refused <- detail }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pw.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return pw
}

// syncBuffer is a buffer a watch writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitPeer waits until cond holds, for at most 10s.
func waitPeer(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A node holding the cluster's key follows a live session another node
// serves, as a watch there shows it: the terminal's size first, output
// as it is recorded, the end of the session.
func TestPeersWatchLiveSession(t *testing.T) {
	t.Parallel()
	_, _, key := nodetest.Key(t, 9, "")
	pw := startPeerWatch(t, key)
	p := &Peers{nodes: beats{{Name: "n1", Address: pw.addr}}, key: key, self: "n2"}
	if err := pw.shell.Stdout([]byte("before-joining\r\n")); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	var sizes []string
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() {
		done <- p.Watch(t.Context(), "n1", pw.id, "kenji", &out, recording.WatchOptions{StopHint: "leave this page", Resize: func(c, r int) error {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, fmt.Sprintf("%dx%d", c, r))
			return nil
		}})
	}()
	waitPeer(t, "the banner", func() bool { return strings.Contains(out.String(), "leave this page") })
	if err := pw.shell.Stdout([]byte("marker-typed-live\r\n")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "the live output", func() bool { return strings.Contains(out.String(), "marker-typed-live") })
	pw.shell.Close()
	if err := pw.sess.End(time.Now(), "technician logged out", 0, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end with the session")
	}
	if s := out.String(); !strings.Contains(s, "before-joining") || !strings.Contains(s, "session ended: technician logged out") {
		t.Errorf("the watch showed %q", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) == 0 || sizes[0] != "100x30" {
		t.Errorf("sizes told: %q, want 100x30 first", sizes)
	}
}

// A session the node does not serve, an ID that is none, and a node
// without a listener are refused with errors that say so.
func TestPeersWatchRefused(t *testing.T) {
	t.Parallel()
	_, _, key := nodetest.Key(t, 9, "")
	pw := startPeerWatch(t, key)
	p := &Peers{nodes: beats{{Name: "n1", Address: pw.addr}, {Name: "n3"}}, key: key, self: "n2"}
	for _, tc := range []struct {
		node, id, want string
		noRecording    bool
	}{
		{"n1", uuid.NewString(), "not live on that node", true},
		{"n1", "../../etc", "not a session ID", true},
		{"n3", pw.id, "node n3 takes no connections from other nodes", false},
		{"n4", pw.id, "node n4 is not in the nodes' register", false},
	} {
		err := p.Watch(t.Context(), tc.node, tc.id, "kenji", &syncBuffer{}, recording.WatchOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, recording.ErrNoRecording) != tc.noRecording {
			t.Errorf("watch %s on %s: %v; want %q (no recording: %v)", tc.id, tc.node, err, tc.want, tc.noRecording)
		}
	}
	// Another key is not admitted, and the refusal names it (one report
	// per source and window: the first).
	_, _, other := nodetest.Key(t, 10, "")
	c, err := net.Dial("tcp", pw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, _, err := ssh.NewClientConn(c, pw.addr, &ssh.ClientConfig{User: "n9", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)},
		HostKeyCallback: ssh.FixedHostKey(key.PublicKey())}); err == nil {
		t.Fatal("another key was admitted")
	}
	select {
	case d := <-pw.refused:
		if !strings.Contains(d, ssh.FingerprintSHA256(other.PublicKey())+" (ssh-ed25519) is not the cluster's host key") {
			t.Errorf("refusal reported as %q; want the key offered named", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refusal of another key was not reported")
	}
	// Nor does a node with another key believe this one.
	p.key = other
	if err := p.Watch(t.Context(), "n1", pw.id, "kenji", &syncBuffer{}, recording.WatchOptions{}); err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("a node with another key: %v, want the serving node's key refused", err)
	}
}
