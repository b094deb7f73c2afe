package sqlitestore

import (
	"context"
	"fmt"
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

// ProbeWrite writes the node's health row: on a full disk the write
// fails as a session's row would.
func (s *Store) ProbeWrite(ctx context.Context, node string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO health (node, checked_at) VALUES (?, ?)
		ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at`, node, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("write to the state store: %w", err)
	}
	return nil
}
