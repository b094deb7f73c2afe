package node

import (
	"context"
	"time"

	"github.com/sekisho/sekisho/broker/pgstore"
)

// listenRetry is how long a node waits before it listens again after its
// connection for notifications was lost; the lock poll and the waits'
// polls cover the gap.
const listenRetry = time.Second

// listenForChanges has every change another node makes to locks and
// access requests acted on here at once: a lock re-read (and live
// sessions re-checked), whoever waits on a request woken, live sessions'
// grants re-checked. Without PostgreSQL there is no other node.
func (n *Node) listenForChanges(ctx context.Context) {
	ps, ok := n.store.(*pgstore.Store)
	if !ok {
		return
	}
	ps.Listen(ctx, listenRetry, func(c pgstore.Change) {
		switch c.Kind {
		case "lock":
			n.kickLocks()
		case "request":
			n.brk.ChangedElsewhere(c.Request)
		default: // (re)connected: what changed meanwhile is unknown
			n.kickLocks()
			n.brk.ChangedElsewhere(0)
		}
	})
}

// kickLocks has the lock watch re-read the locks now rather than at its
// next tick.
func (n *Node) kickLocks() {
	select {
	case n.lockKick <- struct{}{}:
	default: // one is pending
	}
}
