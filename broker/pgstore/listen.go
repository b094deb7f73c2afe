package pgstore

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Channel is the LISTEN/NOTIFY channel on which the store tells every
// node that locks or access requests changed.
const Channel = "sekisho"

// Change is what a notification says changed.
type Change struct {
	// Kind is "lock" or "request"; "" means "anything may have changed":
	// the listener (re)connected and may have missed notifications.
	Kind    string
	Request int64 // the request, for Kind "request"
}

// Listen calls fn for every change any node makes, until ctx ends. It
// holds one connection of its own; when that connection is lost it
// reconnects (waiting retry between attempts) and calls fn with an empty
// Change, since notifications sent meanwhile are lost: the caller then
// re-reads what it keeps, as its poll would.
func (s *Store) Listen(ctx context.Context, retry time.Duration, fn func(Change)) {
	for ctx.Err() == nil {
		s.listenOnce(ctx, fn)
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, fn func(Change)) {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	// The connection will have LISTEN on it: it never goes back to the
	// pool. After Hijack the pool's handle is spent; only conn is used.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return
	}
	fn(Change{})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		kind, arg, _ := strings.Cut(n.Payload, " ")
		c := Change{Kind: kind}
		if kind == "request" {
			c.Request, _ = strconv.ParseInt(arg, 10, 64)
		}
		fn(c)
	}
}
