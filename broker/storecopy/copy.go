// Package storecopy moves a sekisho node's whole state from its embedded
// SQLite file to PostgreSQL, for an operator who outgrows one node:
// sessions, the audit log (in order), access requests with their IDs,
// locks (removed ones too), legal holds, second factors with the codes
// already used, and the console's text index.
package storecopy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// Counts is how many rows of each table were copied.
type Counts map[string]int64

func (c Counts) String() string {
	var parts []string
	for _, t := range tables {
		parts = append(parts, fmt.Sprintf("%s %d", t.label, c[t.pg]))
	}
	return strings.Join(parts, ", ")
}

// kind is how a SQLite value becomes a PostgreSQL one.
type kind int

const (
	plain kind = iota // integers and texts
	when              // TEXT in sqlitestore's time format, NULL for none
	flag              // INTEGER 0/1
)

type column struct {
	sqlite, pg string
	kind       kind
}

type table struct {
	label    string // as the operator reads it
	pg       string
	from     string // the SQLite FROM clause
	order    string
	columns  []column
	identity string // a column PostgreSQL numbers, set past the copied rows
}

func cols(names string, k kind) []column {
	var out []column
	for _, n := range strings.Fields(names) {
		src, dst, ok := strings.Cut(n, ">")
		if !ok {
			dst = src
		}
		out = append(out, column{src, dst, k})
	}
	return out
}

func join(parts ...[]column) []column {
	var out []column
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// tables are copied in this order, each in full.
var tables = []table{
	{label: "sessions", pg: "sessions", from: "sessions", order: "started_at, id", columns: join(
		cols("id technician affiliate affiliate_country source source_country source_network target target_address residency login", plain),
		cols("cross_border", flag),
		cols("rule trace cert_serial cert_key_id", plain),
		cols("started_at ended_at", when),
		cols("bytes_in bytes_out end_reason recording recording_head recording_chunks", plain),
		cols("recording_complete", flag),
		cols("request node", plain),
		cols("moderated", flag))},
	{label: "audit events", pg: "audit", from: "audit", order: "seq", identity: "seq", columns: join(
		cols("seq", plain), cols("at", when), cols("kind technician target source session detail", plain))},
	{label: "access requests", pg: "requests", from: "requests", order: "id", identity: "id", columns: join(
		cols("id technician affiliate affiliate_country target rule source source_country reason duration state needed approvals", plain),
		cols("created_at expires_at", when), cols("decided_by", plain), cols("decided_at", when), cols("note", plain),
		cols("grant_start grant_end", when), cols("revised", plain))},
	{label: "locks", pg: "locks", from: "locks", order: "id", identity: "id", columns: join(
		cols("id kind name reason by>made_by", plain), cols("created_at expires_at removed_at", when))},
	{label: "legal holds", pg: "holds", from: "holds", order: "session", columns: join(
		cols("session reason by>made_by", plain), cols("at", when))},
	{label: "second factors", pg: "totp", from: "totp", order: "technician", columns: cols("technician secret last_step", plain)},
	{label: "indexed texts", pg: "session_text",
		from:  "session_text JOIN session_fts ON session_fts.rowid = session_text.n",
		order: "session_text.n", columns: cols("session_text.id>id files commands session_fts.typed>typed session_fts.shown>shown", plain)},
}

// SQLiteToPostgres copies everything in the SQLite file at path into the
// PostgreSQL database of pool, whose schema must be current (pgstore.Open
// migrates it) and which must hold no state yet: a copy never merges. It
// reads the file in one read transaction, a consistent snapshot, and
// writes in one PostgreSQL transaction, so that a failure leaves the
// database as empty as it was. The nodes using the file must be stopped
// first, or what they write after the snapshot is not copied.
func SQLiteToPostgres(ctx context.Context, path string, pool *pgxpool.Pool) (Counts, error) {
	// Open brings an older file's schema up to date, so that every
	// column read below exists.
	src, err := sqlitestore.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	src.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	rtx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer rtx.Rollback()

	wtx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("write to PostgreSQL: %w", err)
	}
	defer wtx.Rollback(context.WithoutCancel(ctx))
	for _, t := range tables {
		var n int64
		if err := wtx.QueryRow(ctx, `SELECT count(*) FROM `+t.pg).Scan(&n); err != nil {
			return nil, fmt.Errorf("PostgreSQL: %w (run sekisho db migrate first?)", err)
		}
		if n > 0 {
			return nil, fmt.Errorf("the PostgreSQL database already holds %d %s: copy into an empty database, never over one in use", n, t.label)
		}
	}
	// A node that started on the database beats there before it writes
	// anything else: it would write beside the copy.
	var beating int64
	if err := wtx.QueryRow(ctx, `SELECT count(*) FROM nodes`).Scan(&beating); err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w (run sekisho db migrate first?)", err)
	}
	if beating > 0 {
		return nil, fmt.Errorf("sekisho nodes have run on this PostgreSQL database (%d in its nodes table): copy into an empty database, with no node started on it", beating)
	}
	counts := Counts{}
	for _, t := range tables {
		n, err := copyTable(ctx, rtx, wtx, t)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", t.label, err)
		}
		counts[t.pg] = n
		if t.identity != "" {
			if _, err := wtx.Exec(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), coalesce(max(%s), 0) + 1, false) FROM %s`,
				t.pg, t.identity, t.identity, t.pg)); err != nil {
				return nil, fmt.Errorf("copy %s: number the next one: %w", t.label, err)
			}
		}
	}
	// What arrived is what was there.
	for _, t := range tables {
		var n int64
		if err := wtx.QueryRow(ctx, `SELECT count(*) FROM `+t.pg).Scan(&n); err != nil {
			return nil, err
		}
		if n != counts[t.pg] {
			return nil, fmt.Errorf("copy %s: %d read, %d in PostgreSQL", t.label, counts[t.pg], n)
		}
	}
	if err := wtx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("write to PostgreSQL: %w", err)
	}
	return counts, nil
}

func copyTable(ctx context.Context, rtx *sql.Tx, wtx pgx.Tx, t table) (int64, error) {
	srcCols := make([]string, len(t.columns))
	dstCols := make([]string, len(t.columns))
	for i, c := range t.columns {
		srcCols[i], dstCols[i] = c.sqlite, c.pg
	}
	rows, err := rtx.QueryContext(ctx, `SELECT `+strings.Join(srcCols, ", ")+` FROM `+t.from+` ORDER BY `+t.order)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	src := &rowSource{rows: rows, cols: t.columns}
	n, err := wtx.CopyFrom(ctx, pgx.Identifier{t.pg}, dstCols, src)
	if src.err != nil {
		return n, src.err
	}
	if err != nil {
		return n, err
	}
	return n, rows.Err()
}

// rowSource feeds SQLite rows to COPY, converting each value.
type rowSource struct {
	rows *sql.Rows
	cols []column
	err  error
}

func (r *rowSource) Next() bool { return r.err == nil && r.rows.Next() }

func (r *rowSource) Values() ([]any, error) {
	raw := make([]any, len(r.cols))
	ptrs := make([]any, len(r.cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	if err := r.rows.Scan(ptrs...); err != nil {
		r.err = err
		return nil, err
	}
	out := make([]any, len(r.cols))
	for i, c := range r.cols {
		v, err := convert(raw[i], c.kind)
		if err != nil {
			r.err = fmt.Errorf("column %s: %w", c.sqlite, err)
			return nil, r.err
		}
		out[i] = v
	}
	return out, nil
}

func (r *rowSource) Err() error { return r.err }

func convert(v any, k kind) (any, error) {
	if b, ok := v.([]byte); ok {
		v = string(b)
	}
	switch k {
	case when:
		if v == nil {
			return nil, nil
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("a time stored as %T", v)
		}
		t, err := time.Parse(sqlitestore.TimeFormat, s)
		if err != nil {
			return nil, err
		}
		return t.UTC(), nil
	case flag:
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("a flag stored as %T", v)
		}
		return n != 0, nil
	}
	if s, ok := v.(string); ok {
		// PostgreSQL refuses invalid UTF-8 and NUL, which SQLite kept.
		if strings.ToValidUTF8(s, "") != s || strings.ContainsRune(s, 0) {
			s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
		}
		return s, nil
	}
	return v, nil
}
