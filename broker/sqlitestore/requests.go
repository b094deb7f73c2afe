package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// Times are stored as TEXT in timeFormat, in UTC, so that they sort as
// strings and keep their nanoseconds; zero optional times are NULL.

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// nullTime is formatTime, or NULL for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

func parseNullTime(s sql.NullString) (time.Time, error) {
	if !s.Valid {
		return time.Time{}, nil
	}
	return time.Parse(timeFormat, s.String)
}

const requestColumns = `id, technician, affiliate, affiliate_country, target, rule, source, reason, duration, state, needed,
	approvals, created_at, expires_at, decided_by, decided_at, note, grant_start, grant_end, source_country, revised`

// requestValues are the values of the columns of requestColumns after id.
func requestValues(r *broker.AccessRequest) ([]any, error) {
	approvals := make([]broker.RequestApproval, len(r.Approvals))
	for i, a := range r.Approvals {
		a.At = a.At.UTC()
		approvals[i] = a
	}
	js, err := json.Marshal(approvals)
	if err != nil {
		return nil, fmt.Errorf("encode approvals: %w", err)
	}
	return []any{r.Technician, r.Affiliate, r.AffiliateCountry, r.Target, r.Rule, r.Source, r.Reason,
		int64(r.Duration), string(r.State), r.Needed, string(js), formatTime(r.Created), nullTime(r.Expires),
		r.DecidedBy, nullTime(r.DecidedAt), r.Note, nullTime(r.GrantStart), nullTime(r.GrantEnd), r.SourceCountry, r.Revised}, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanRequest(row scanner) (broker.AccessRequest, error) {
	var (
		r                                     broker.AccessRequest
		duration                              int64
		state, approvals, created             string
		expires, decidedAt, grantStart, grant sql.NullString
	)
	if err := row.Scan(&r.ID, &r.Technician, &r.Affiliate, &r.AffiliateCountry, &r.Target, &r.Rule, &r.Source, &r.Reason,
		&duration, &state, &r.Needed, &approvals, &created, &expires, &r.DecidedBy, &decidedAt, &r.Note,
		&grantStart, &grant, &r.SourceCountry, &r.Revised); err != nil {
		return r, err
	}
	r.Duration = time.Duration(duration)
	r.State = broker.RequestState(state)
	if err := json.Unmarshal([]byte(approvals), &r.Approvals); err != nil {
		return r, fmt.Errorf("access request %d: decode approvals: %w", r.ID, err)
	}
	if len(r.Approvals) == 0 {
		r.Approvals = nil
	}
	var err error
	if r.Created, err = time.Parse(timeFormat, created); err != nil {
		return r, fmt.Errorf("access request %d: created_at: %w", r.ID, err)
	}
	for _, f := range []struct {
		name string
		s    sql.NullString
		t    *time.Time
	}{
		{"expires_at", expires, &r.Expires},
		{"decided_at", decidedAt, &r.DecidedAt},
		{"grant_start", grantStart, &r.GrantStart},
		{"grant_end", grant, &r.GrantEnd},
	} {
		if *f.t, err = parseNullTime(f.s); err != nil {
			return r, fmt.Errorf("access request %d: %s: %w", r.ID, f.name, err)
		}
	}
	return r, nil
}

// CreateRequest stores a new access request and returns it with its ID;
// the ID r has is ignored.
func (s *Store) CreateRequest(ctx context.Context, r broker.AccessRequest) (broker.AccessRequest, error) {
	vals, err := requestValues(&r)
	if err != nil {
		return r, fmt.Errorf("store access request: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO requests (`+strings.TrimPrefix(requestColumns, "id, ")+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, vals...)
	if err != nil {
		return r, fmt.Errorf("store access request: %w", err)
	}
	if r.ID, err = res.LastInsertId(); err != nil {
		return r, fmt.Errorf("store access request: %w", err)
	}
	return r, nil
}

// queryer is what Request needs of a *sql.DB or *sql.Conn.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getRequest(ctx context.Context, q queryer, id int64) (broker.AccessRequest, error) {
	r, err := scanRequest(q.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id=?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return broker.AccessRequest{}, fmt.Errorf("access request %d: %w", id, broker.ErrNotFound)
	}
	if err != nil {
		return broker.AccessRequest{}, fmt.Errorf("access request %d: %w", id, err)
	}
	return r, nil
}

// Request returns one access request; ErrNotFound if there is none.
func (s *Store) Request(ctx context.Context, id int64) (broker.AccessRequest, error) {
	return getRequest(ctx, s.db, id)
}

// Requests lists access requests, newest (highest ID) first. f.Viewer
// is the broker's to resolve into f.Targets.
func (s *Store) Requests(ctx context.Context, f broker.RequestFilter) ([]broker.AccessRequest, error) {
	var (
		where []string
		args  []any
	)
	if f.Technician != "" {
		where = append(where, "technician=?")
		args = append(args, f.Technician)
	}
	if f.Target != "" {
		where = append(where, "target=?")
		args = append(args, f.Target)
	}
	if f.Targets != nil {
		if len(f.Targets) == 0 {
			return nil, nil
		}
		where = append(where, "target IN (?"+strings.Repeat(",?", len(f.Targets)-1)+")")
		for _, t := range f.Targets {
			args = append(args, t)
		}
	}
	if len(f.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(",?", len(f.States)-1)+")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	q := `SELECT ` + requestColumns + ` FROM requests`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	defer rows.Close()
	var out []broker.AccessRequest
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("list access requests: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	return out, nil
}

// UpdateRequest reads a request, lets fn change it and writes it back in
// one transaction that holds SQLite's write lock from its start (BEGIN
// IMMEDIATE), so that no other writer, in this process or another one
// with the same file open, interleaves. fn may not change the ID. An error
// from fn rolls back and is returned as is. The request is returned as
// stored.
func (s *Store) UpdateRequest(ctx context.Context, id int64, fn func(*broker.AccessRequest) error) (broker.AccessRequest, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: %w", id, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: begin: %w", id, err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		// Roll back on an error or a panic in fn. The rollback must run
		// even if ctx is done; if it fails, the connection (still in the
		// transaction, holding the write lock) must not go back to the
		// pool.
		if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()

	r, err := getRequest(ctx, conn, id)
	if err != nil {
		return broker.AccessRequest{}, err
	}
	if err := fn(&r); err != nil {
		return broker.AccessRequest{}, err
	}
	r.ID = id
	vals, err := requestValues(&r)
	if err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: %w", id, err)
	}
	if _, err := conn.ExecContext(ctx, `UPDATE requests SET technician=?, affiliate=?, affiliate_country=?, target=?, rule=?,
		source=?, reason=?, duration=?, state=?, needed=?, approvals=?, created_at=?, expires_at=?, decided_by=?,
		decided_at=?, note=?, grant_start=?, grant_end=?, source_country=?, revised=? WHERE id=?`, append(vals, id)...); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: %w", id, err)
	}
	stored, err := getRequest(ctx, conn, id)
	if err != nil {
		return broker.AccessRequest{}, err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: commit: %w", id, err)
	}
	done = true
	return stored, nil
}
