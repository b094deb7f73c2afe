package sqlitestore

import (
	"context"
	"fmt"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// SetHold puts a recording under a legal hold, replacing any other hold
// of it.
func (s *Store) SetHold(ctx context.Context, h broker.LegalHold) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO holds (session, reason, by, at) VALUES (?,?,?,?)
		ON CONFLICT(session) DO UPDATE SET reason=excluded.reason, by=excluded.by, at=excluded.at`,
		h.Session, h.Reason, h.By, h.At.UTC().Format(timeFormat))
	if err != nil {
		return fmt.Errorf("store legal hold: %w", err)
	}
	return nil
}

// RemoveHold lifts the hold of a recording.
func (s *Store) RemoveHold(ctx context.Context, session string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM holds WHERE session=?`, session)
	if err != nil {
		return fmt.Errorf("remove legal hold: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("legal hold of %s: %w", session, broker.ErrNotFound)
	}
	return nil
}

// Holds lists the holds in force, oldest first.
func (s *Store) Holds(ctx context.Context) ([]broker.LegalHold, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT session, reason, by, at FROM holds ORDER BY at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []broker.LegalHold
	for rows.Next() {
		var h broker.LegalHold
		var at string
		if err := rows.Scan(&h.Session, &h.Reason, &h.By, &at); err != nil {
			return nil, err
		}
		if h.At, err = time.Parse(timeFormat, at); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}
