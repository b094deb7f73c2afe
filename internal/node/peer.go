package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/peer"
	"github.com/sekisho/sekisho/recording"
)

// peerListener is the node's node-to-node listener, when cluster.listen
// is set.
type peerListener struct {
	srv       *peer.Server
	served    chan struct{}
	advertise string
}

// startPeer opens the node to the other nodes of its cluster on
// cluster.listen: they may follow the live sessions this node serves.
func (n *Node) startPeer(cfg *Config, hostKey ssh.Signer, recDir string) error {
	if cfg.Cluster.Listen == "" {
		return nil
	}
	live := liveStreamer{recDir: recDir, serving: func(id string) bool {
		for _, s := range n.srv.Live() {
			if s.ID == id {
				return true
			}
		}
		return false
	}}
	srv, err := peer.NewServer(peer.Config{HostKey: hostKey, Watch: live.stream, Moderate: n.moderateStream, Control: n.moderationControl, Logger: n.log,
		Refused: func(source, detail string) {
			n.brk.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventClusterRefused, Source: source, Detail: detail})
		}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Cluster.Listen)
	if err != nil {
		return fmt.Errorf("cluster.listen: %w", err)
	}
	n.peer = &peerListener{srv: srv, served: make(chan struct{}), advertise: cfg.PeerAddress()}
	go func() {
		defer close(n.peer.served)
		if err := srv.Serve(ln); err != nil {
			n.log.Error("the node-to-node listener stopped: other nodes cannot follow this node's sessions", "err", err)
		}
	}()
	n.log.Info("node-to-node listener", "addr", ln.Addr().String(), "advertise", cfg.PeerAddress())
	return nil
}

// peerAddress is the address other nodes dial for this node's
// node-to-node listener, written in its heartbeat; empty without one.
func (n *Node) peerAddress() string {
	if n.peer == nil {
		return ""
	}
	return n.peer.advertise
}

// stopPeer ends the streams to other nodes and closes the listener.
func (n *Node) stopPeer() {
	if n.peer == nil {
		return
	}
	n.peer.srv.Close()
	<-n.peer.served
}

// liveStreamer streams to other nodes the live sessions this node
// serves, from its recordings: what a watch on this node would show.
type liveStreamer struct {
	recDir  string
	serving func(id string) bool // whether session id is live on this node
}

// stream follows live session req.Session on out until it ends or ctx
// is done. Who may watch was decided by the node that asks.
func (l liveStreamer) stream(ctx context.Context, req peer.WatchRequest, out *peer.Stream) error {
	if _, err := recording.SessionDir(l.recDir, req.Session); err != nil {
		return fmt.Errorf("%w: not a session ID", peer.ErrNotServed)
	}
	if !l.serving(req.Session) {
		return peer.ErrNotServed
	}
	if cols, rows, ok := recording.TerminalSize(l.recDir, req.Session); ok {
		if err := out.Resize(cols, rows); err != nil {
			return err
		}
	}
	err := recording.Watch(ctx, out, l.recDir, req.Session, recording.WatchOptions{FromStart: req.FromStart, Resize: out.Resize, StopHint: req.StopHint})
	if errors.Is(err, recording.ErrNoRecording) {
		return fmt.Errorf("%w: no recording of it here", peer.ErrNotServed)
	}
	return err
}

// Peers follows, over the node-to-node link, live sessions that other
// nodes of the cluster serve. The nodes' heartbeats say where each one
// listens.
type Peers struct {
	nodes interface {
		Nodes(ctx context.Context) ([]broker.NodeBeat, error)
	}
	key       ssh.Signer
	self      string
	lostAfter time.Duration
	mod       moderationCache
}

// NewPeers reads the cluster's host key, which proves this machine to
// the other nodes, and returns what follows their sessions. It never
// makes a key: a machine without the cluster's key is not of the
// cluster.
func NewPeers(cfg *Config, store Store) (*Peers, error) {
	path := cfg.Path(cfg.HostKey)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("host key %s: %w (the cluster's host key, which proves this machine to the other nodes)", path, err)
	}
	key, err := loadOrCreateHostKey(path, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return newPeers(cfg, store, key), nil
}

func newPeers(cfg *Config, store Store, key ssh.Signer) *Peers {
	return &Peers{nodes: store, key: key, self: cfg.NodeName, lostAfter: time.Duration(cfg.Cluster.NodeLostAfter)}
}

// Watch follows live session id, which node serves, on w as
// recording.Watch would there (the same options), for watcher, whom the
// caller has allowed to watch it. A session the node does not serve (any
// more) is recording.ErrNoRecording.
func (p *Peers) Watch(ctx context.Context, node, id, watcher string, w io.Writer, opt recording.WatchOptions) error {
	addr, err := p.Address(ctx, node)
	if err != nil {
		return err
	}
	err = peer.Watch(ctx, addr, p.key, peer.WatchRequest{Session: id, FromStart: opt.FromStart, StopHint: opt.StopHint, Node: p.self, Watcher: watcher}, w, opt.Resize)
	if errors.Is(err, peer.ErrNotServed) {
		return fmt.Errorf("%w %s on node %s: %w", recording.ErrNoRecording, id, node, err)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	return err
}

// Address returns where node takes other nodes' connections, from its
// heartbeat.
func (p *Peers) Address(ctx context.Context, node string) (string, error) {
	beats, err := p.nodes.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, b := range beats {
		switch {
		case b.Name != node:
			continue
		case b.Address == "":
			return "", fmt.Errorf("node %s takes no connections from other nodes (cluster.listen is not set in its config): watch the session through node %s", node, node)
		case p.lostAfter > 0 && b.Silent > p.lostAfter:
			return "", fmt.Errorf("node %s has not beaten for %s: it is down or cut off", node, b.Silent.Round(time.Second))
		}
		return b.Address, nil
	}
	return "", fmt.Errorf("node %s is not in the nodes' register: it has not run with this database", node)
}
