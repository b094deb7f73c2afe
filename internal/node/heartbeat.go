package node

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// Heartbeats and stepping back. Every node writes its heartbeat to the
// shared store every cluster.heartbeat; a survivor takes a node silent for
// cluster.node_lost_after for lost, ends its sessions and seals their
// recordings from the object store. A node is never taken for lost while
// it still records: one that cannot write its heartbeat for half of
// node_lost_after (it lost the database, or the database lost it) closes
// its door (new connections are closed at once, so that a load balancer
// sends them to another node and its health checks fail) and ends its
// live sessions, which seals their recordings here and ships them. Once a
// heartbeat is written again it takes sessions again. On SQLite a node is
// alone: its heartbeat is a no-op that never fails.

// fenceListener closes the connections it accepts while the node stands
// back.
type fenceListener struct {
	net.Listener
	closed atomic.Bool
}

func (l *fenceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.closed.Load() {
			return c, err
		}
		c.Close()
	}
}

// standBackReason is the end reason of the sessions a node ends when it
// cannot write its heartbeat.
const standBackReason = "this node lost the shared database: sessions end here before another node takes it for lost; connect again"

// silentReason is the end reason of the sessions a node ends when it
// finds, on writing a heartbeat, that it went without one for so long
// (frozen, suspended, starved) that another node may have taken it for
// lost and sealed their recordings.
const silentReason = "this node went silent too long (another node may have taken its sessions over): connect again"

// heartbeat writes the node's heartbeat until ctx ends, standing back
// while it cannot: its door closed, and its live sessions ended by
// endLive, which returns how many.
func (n *Node) heartbeat(ctx context.Context, every, lostAfter time.Duration, lastOK time.Time, endLive func(why string) int) {
	t := time.NewTicker(every)
	defer t.Stop()
	standing := false
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The heartbeat is as old as the moment it was asked for: the
		// database may record it that late.
		start := time.Now()
		bctx, cancel := context.WithTimeout(ctx, every)
		err := n.store.Heartbeat(bctx, n.name, n.peerAddress(), n.started)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if gap := start.Sub(lastOK); gap >= lostAfter/2 && !standing {
				// Frozen or starved past the point where it should have
				// stood back: what it still relays may have been taken
				// over and sealed elsewhere.
				ended := endLive(silentReason)
				n.log.Error("this node went without a heartbeat for half of cluster.node_lost_after or more; it ended its live sessions, which another node may have taken for lost",
					"node", n.name, "gap", gap, "sessions_ended", ended)
			}
			lastOK = start
			if failing {
				n.log.Info("heartbeat written again", "node", n.name)
			}
			failing = false
			if standing {
				standing = false
				n.fence.closed.Store(false)
				n.log.Warn("the shared database answers again: this node takes sessions again", "node", n.name)
			}
			continue
		}
		if !failing {
			n.log.Error("heartbeat not written; this node stops taking sessions if it cannot write one soon", "node", n.name, "err", err,
				"stands_back_after", lostAfter/2, "taken_for_lost_after", lostAfter)
		}
		failing = true
		if !standing && time.Since(lastOK) >= lostAfter/2 {
			standing = true
			n.fence.closed.Store(true)
			ended := endLive(standBackReason)
			n.log.Error("no heartbeat written for half of cluster.node_lost_after: this node takes no sessions and ended its live ones",
				"node", n.name, "since", lastOK, "sessions_ended", ended)
		}
	}
}

// beatMeanwhile writes the node's heartbeat every interval while the node
// starts (recovery of a large spool may take longer than node_lost_after),
// until the returned function is called.
func beatMeanwhile(store Store, name, address string, started time.Time, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			bctx, bcancel := context.WithTimeout(ctx, every)
			store.Heartbeat(bctx, name, address, started)
			bcancel()
		}
	}()
	return func() { cancel(); <-done }
}

// endLive ends the node's live sessions with why, and returns how many.
func (n *Node) endLive(why string) int {
	ended := 0
	for _, s := range n.srv.Live() {
		if n.srv.Kill(s.ID, why) {
			ended++
		}
	}
	return ended
}
