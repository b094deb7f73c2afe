package sqlitestore

import (
	"context"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// A SQLite state file belongs to one node: there is no other node to
// beat for, to lose, or to share a job with.

// Heartbeat records nothing: no other node reads it.
func (s *Store) Heartbeat(ctx context.Context, node, address string, started time.Time) error {
	return nil
}

// Nodes returns no node: the one node of a SQLite state is not listed.
func (s *Store) Nodes(ctx context.Context) ([]broker.NodeBeat, error) { return nil, nil }

// ClaimLostSessions claims none: a node's own sessions cut off by a
// crash are ended when it starts again.
func (s *Store) ClaimLostSessions(ctx context.Context, lostAfter time.Duration, reason string) ([]broker.SessionRecord, error) {
	return nil, nil
}

// RunJob runs fn: the node's own ticker spaces the runs.
func (s *Store) RunJob(ctx context.Context, name string, every time.Duration, fn func(context.Context) error) (bool, error) {
	return true, fn(ctx)
}
