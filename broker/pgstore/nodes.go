package pgstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
)

// Heartbeat records, by the database's clock, that node is alive: every
// node compares heartbeats with the same clock, so the nodes' own clocks
// may differ.
func (s *Store) Heartbeat(ctx context.Context, node, address string, started time.Time) error {
	pool := s.beat
	if pool == nil {
		pool = s.pool
	}
	_, err := pool.Exec(ctx, `INSERT INTO nodes (name, address, started_at, heartbeat_at) VALUES ($1, $2, $3, now())
		ON CONFLICT (name) DO UPDATE SET address = excluded.address, started_at = excluded.started_at, heartbeat_at = now()`,
		args(node, address, started.UTC())...)
	if err != nil {
		return fmt.Errorf("heartbeat of node %s: %w", node, err)
	}
	return nil
}

// Nodes returns the nodes that ever beat, with how long ago each last
// did by the database's clock.
func (s *Store) Nodes(ctx context.Context) ([]broker.NodeBeat, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, address, started_at, heartbeat_at, extract(epoch FROM now() - heartbeat_at) FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.NodeBeat, error) {
		var (
			n   broker.NodeBeat
			age float64
		)
		err := row.Scan(&n.Name, &n.Address, &n.Started, &n.Heartbeat, &age)
		n.Started, n.Heartbeat, n.Silent = n.Started.UTC(), n.Heartbeat.UTC(), time.Duration(age*float64(time.Second))
		return n, err
	})
}

// ClaimLostSessions ends the live sessions of every node silent for
// longer than lostAfter, in one statement that holds the lost nodes' rows:
// a heartbeat that commits first keeps its node's sessions, one that
// comes later waits for the claim, and of several claims at once each
// session goes to one.
func (s *Store) ClaimLostSessions(ctx context.Context, lostAfter time.Duration, reason string) ([]broker.SessionRecord, error) {
	rows, err := s.pool.Query(ctx, `WITH lost AS (
			SELECT name FROM nodes WHERE heartbeat_at < now() - make_interval(secs => $1) FOR UPDATE
		)
		UPDATE sessions SET ended_at = now(), end_reason = $2
		FROM lost WHERE sessions.node = lost.name AND sessions.ended_at IS NULL
		RETURNING `+sessionColumns, lostAfter.Seconds(), text(reason))
	if err != nil {
		return nil, fmt.Errorf("claim the sessions of lost nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanSession)
	if err != nil {
		return nil, fmt.Errorf("claim the sessions of lost nodes: %w", err)
	}
	return out, nil
}

// jobLockClass is the first key of the advisory locks of jobs, so that
// they cannot collide with the store's other advisory locks.
const jobLockClass = 0x5e_15

// RunJob runs fn under the job's session-level advisory lock, unless
// another node holds it or started the job less than every ago (every 0:
// the lock alone decides). It reports whether fn ran. The lock lives on a
// connection of its own: if the node dies, PostgreSQL releases it.
func (s *Store) RunJob(ctx context.Context, name string, every time.Duration, fn func(context.Context) error) (bool, error) {
	h := fnv.New32a()
	h.Write([]byte(name))
	key := int32(h.Sum32())
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("job %s: %w", name, err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, int32(jobLockClass), key).Scan(&got); err != nil {
		conn.Conn().Close(ctx)
		conn.Release()
		return false, fmt.Errorf("job %s: %w", name, err)
	}
	if !got {
		conn.Release()
		return false, nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, int32(jobLockClass), key); err != nil {
			// A connection that may still hold the lock is not reused.
			conn.Conn().Close(uctx)
		}
		conn.Release()
	}()
	if every > 0 {
		var due bool
		err := conn.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE name = $1 AND ran_at > now() - make_interval(secs => $2))`,
			text(name), every.Seconds()).Scan(&due)
		if err != nil {
			return false, fmt.Errorf("job %s: %w", name, err)
		}
		if !due {
			return false, nil
		}
		// When it started: the next run is due every after this one
		// began, however long it takes, and a run that fails is not
		// tried again before then.
		_, err = conn.Exec(ctx, `INSERT INTO jobs (name, ran_at) VALUES ($1, now()) ON CONFLICT (name) DO UPDATE SET ran_at = now()`, text(name))
		if err != nil {
			return false, fmt.Errorf("job %s: %w", name, err)
		}
	}
	return true, fn(ctx)
}

// ProbeWrite writes the node's health row, by the database's clock: a
// read-only replica or a database out of space refuses it.
func (s *Store) ProbeWrite(ctx context.Context, node string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO health (node, checked_at) VALUES ($1, now())
		ON CONFLICT (node) DO UPDATE SET checked_at = now()`, args(node)...)
	if err != nil {
		return fmt.Errorf("write to the state store: %w", err)
	}
	return nil
}
