package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
)

// requestValues are the values of a request's columns after id, in the
// order of selectRequests.
func requestValues(r *broker.AccessRequest) ([]any, error) {
	approvals := make([]broker.RequestApproval, len(r.Approvals))
	for i, a := range r.Approvals {
		a.At = a.At.UTC()
		a.By, a.Affiliate, a.Comment = text(a.By), text(a.Affiliate), text(a.Comment) // jsonb refuses \u0000
		approvals[i] = a
	}
	js, err := json.Marshal(approvals)
	if err != nil {
		return nil, fmt.Errorf("encode approvals: %w", err)
	}
	return args(r.Technician, r.Affiliate, r.AffiliateCountry, r.Target, r.Rule, r.Source, r.Reason,
		int64(r.Duration), string(r.State), r.Needed, string(js), r.Created.UTC(), nullTime(r.Expires),
		r.DecidedBy, nullTime(r.DecidedAt), r.Note, nullTime(r.GrantStart), nullTime(r.GrantEnd), r.SourceCountry, r.Revised), nil
}

func scanRequest(row pgx.CollectableRow) (broker.AccessRequest, error) {
	var (
		r                                      broker.AccessRequest
		duration                               int64
		state, approvals                       string
		expires, decidedAt, grantStart, grantE *time.Time
	)
	if err := row.Scan(&r.ID, &r.Technician, &r.Affiliate, &r.AffiliateCountry, &r.Target, &r.Rule, &r.Source, &r.Reason,
		&duration, &state, &r.Needed, &approvals, &r.Created, &expires, &r.DecidedBy, &decidedAt, &r.Note,
		&grantStart, &grantE, &r.SourceCountry, &r.Revised); err != nil {
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
	r.Created = r.Created.UTC()
	r.Expires, r.DecidedAt, r.GrantStart, r.GrantEnd = fromNull(expires), fromNull(decidedAt), fromNull(grantStart), fromNull(grantE)
	return r, nil
}

// selectRequests reads requests, the jsonb approvals as text, decoded as
// sekisho wrote them.
const selectRequests = `SELECT id, technician, affiliate, affiliate_country, target, rule, source, reason, duration, state, needed,
	approvals::text, created_at, expires_at, decided_by, decided_at, note, grant_start, grant_end, source_country, revised FROM requests`

// CreateRequest stores a new access request and returns it with its ID;
// the ID r has is ignored.
func (s *Store) CreateRequest(ctx context.Context, r broker.AccessRequest) (broker.AccessRequest, error) {
	vals, err := requestValues(&r)
	if err != nil {
		return r, fmt.Errorf("store access request: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `INSERT INTO requests (technician, affiliate, affiliate_country, target, rule, source, reason,
		duration, state, needed, approvals, created_at, expires_at, decided_by, decided_at, note, grant_start, grant_end, source_country, revised)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11::jsonb,$12,$13,$14,$15,$16,$17,$18,$19,$20) RETURNING id`, vals...).Scan(&r.ID); err != nil {
		return r, fmt.Errorf("store access request: %w", err)
	}
	s.notify(ctx, "request "+strconv.FormatInt(r.ID, 10))
	return r, nil
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func getRequest(ctx context.Context, q queryer, id int64, suffix string) (broker.AccessRequest, error) {
	rows, _ := q.Query(ctx, selectRequests+` WHERE id=$1`+suffix, id)
	r, err := pgx.CollectExactlyOneRow(rows, scanRequest)
	if errors.Is(err, pgx.ErrNoRows) {
		return broker.AccessRequest{}, fmt.Errorf("access request %d: %w", id, broker.ErrNotFound)
	}
	if err != nil {
		return broker.AccessRequest{}, fmt.Errorf("access request %d: %w", id, err)
	}
	return r, nil
}

// Request returns one access request; ErrNotFound if there is none.
func (s *Store) Request(ctx context.Context, id int64) (broker.AccessRequest, error) {
	return getRequest(ctx, s.pool, id, "")
}

// Requests lists access requests, newest (highest ID) first. f.Viewer
// is the broker's to resolve into f.Targets.
func (s *Store) Requests(ctx context.Context, f broker.RequestFilter) ([]broker.AccessRequest, error) {
	var q query
	if f.Technician != "" {
		q.and("technician=" + q.arg(f.Technician))
	}
	if f.Target != "" {
		q.and("target=" + q.arg(f.Target))
	}
	if f.Targets != nil {
		if len(f.Targets) == 0 {
			return nil, nil
		}
		q.and("target = ANY(" + q.arg(texts(f.Targets)) + ")")
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		q.and("state = ANY(" + q.arg(states) + ")")
	}
	sql := selectRequests + q.clause() + " ORDER BY id DESC"
	if f.Limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, _ := s.pool.Query(ctx, sql, q.args...)
	out, err := pgx.CollectRows(rows, scanRequest)
	if err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	return out, nil
}

// UpdateRequest reads a request, lets fn change it and writes it back in
// one transaction that holds the row (SELECT … FOR UPDATE), so that no
// other update of it, on any node, interleaves. fn may not change the ID.
// An error from fn rolls back and is returned as is. Every node is told
// of the change (Listen).
func (s *Store) UpdateRequest(ctx context.Context, id int64, fn func(*broker.AccessRequest) error) (broker.AccessRequest, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: begin: %w", id, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	r, err := getRequest(ctx, tx, id, " FOR UPDATE")
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
	if _, err := tx.Exec(ctx, `UPDATE requests SET technician=$1, affiliate=$2, affiliate_country=$3, target=$4, rule=$5,
		source=$6, reason=$7, duration=$8, state=$9, needed=$10, approvals=$11::jsonb, created_at=$12, expires_at=$13, decided_by=$14,
		decided_at=$15, note=$16, grant_start=$17, grant_end=$18, source_country=$19, revised=$20 WHERE id=$21`, append(vals, id)...); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: %w", id, err)
	}
	stored, err := getRequest(ctx, tx, id, "")
	if err != nil {
		return broker.AccessRequest{}, err
	}
	// Delivered at commit, to every listening node.
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, "request "+strconv.FormatInt(id, 10)); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return broker.AccessRequest{}, fmt.Errorf("update access request %d: commit: %w", id, err)
	}
	return stored, nil
}
