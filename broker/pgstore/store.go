// Package pgstore keeps sekisho's state on PostgreSQL (pgx), so that
// several nodes share sessions, the audit log, locks, holds, second
// factors and access requests. Its schema is versioned migrations
// embedded in the binary (migrations/NNNN_name.sql), applied at start
// under an advisory lock or by hand (sekisho db migrate).
//
// It gives the same answers as the embedded SQLite store; the store tests
// (broker/storetest) run against both. Two differences are the engine's:
// times keep microseconds, not nanoseconds, and text that is not valid
// UTF-8, or holds NUL, which PostgreSQL refuses, is stored with U+FFFD in
// place of the bad bytes, so that an audit event is never lost for a
// technician's odd input. A third is the database's: the console's text
// search folds case as the database's LC_CTYPE does, all letters under a
// UTF-8 locale (C.UTF-8, en_US.UTF-8), as SQLite's index does, but only
// ASCII ones under the C locale; create the database with a UTF-8 locale.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sekisho/sekisho/broker"
)

// Options are how Open treats the database.
type Options struct {
	// ManualMigrations makes Open refuse a database that lacks
	// migrations, instead of applying them: for operators who migrate
	// by hand (sekisho db migrate) before rolling out a new version.
	ManualMigrations bool
	// MaxConns caps the pool (0: pgx's default, the larger of 4 and the
	// number of CPUs).
	MaxConns int32
	// Password, when set, is used instead of any in the connection
	// string (which a config should not hold).
	Password string
	// OnlyConnect opens the pool without checking or applying
	// migrations: for Migrate itself.
	OnlyConnect bool
}

// Store is a broker.Store on PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	beat *pgxpool.Pool // the heartbeat's own; nil for OnlyConnect
}

var _ broker.Store = (*Store)(nil)

// Open connects to the database at dsn (a postgres:// URL or key=value
// string), checks it answers and brings its schema up to date.
func Open(ctx context.Context, dsn string, opt Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("state store: the PostgreSQL address is not valid (want postgres://user@host:port/database): %w", redact(err))
	}
	if opt.MaxConns > 0 {
		cfg.MaxConns = opt.MaxConns
	}
	if opt.Password != "" {
		cfg.ConnConfig.Password = opt.Password
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("state store: %w", redact(err))
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("state store: PostgreSQL at %s does not answer: %w", where, redact(err))
	}
	if opt.OnlyConnect {
		return &Store{pool: pool}, nil
	}
	if opt.ManualMigrations {
		missing, err := pending(ctx, pool)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("state store %s: %w", where, err)
		}
		if len(missing) > 0 {
			pool.Close()
			return nil, fmt.Errorf("state store %s: %w: %s missing; run sekisho db migrate", where, ErrSchemaBehind, strings.Join(missing, ", "))
		}
	} else if _, err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("state store %s: %w", where, err)
	}
	// The heartbeat has a connection of its own: sessions and console
	// searches that take every other cannot make a healthy node look
	// silent, and stand back.
	beatCfg := cfg.Copy()
	beatCfg.MaxConns, beatCfg.MinConns = 1, 0
	beat, err := pgxpool.NewWithConfig(ctx, beatCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("state store: %w", redact(err))
	}
	return &Store{pool: pool, beat: beat}, nil
}

// redact drops the password from an error that quotes a connection
// string; pgx's own errors name host and user only.
func redact(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("cannot parse the connection string")
	}
	return err
}

// Pool is the store's connection pool, for the node's cluster jobs
// (advisory locks, LISTEN).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() error {
	if s.beat != nil {
		s.beat.Close()
	}
	s.pool.Close()
	return nil
}

// text makes a string storable: PostgreSQL refuses invalid UTF-8 and NUL.
func text(v string) string {
	if !strings.ContainsRune(v, 0) && utf8.ValidString(v) {
		return v
	}
	return strings.ReplaceAll(strings.ToValidUTF8(v, "\uFFFD"), "\x00", "\uFFFD")
}

// args makes every string argument storable.
func args(in ...any) []any {
	for i, a := range in {
		if s, ok := a.(string); ok {
			in[i] = text(s)
		}
	}
	return in
}

// nullTime is t, or NULL for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// query builds a statement's WHERE with numbered parameters.
type query struct {
	where []string
	args  []any
}

// arg adds v and returns its placeholder.
func (q *query) arg(v any) string {
	if s, ok := v.(string); ok {
		v = text(s)
	}
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

func (q *query) and(cond string) { q.where = append(q.where, cond) }

func (q *query) clause() string {
	if len(q.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.where, " AND ")
}

// notify tells every node's listener that something changed (see Listen).
func (s *Store) notify(ctx context.Context, what string) {
	// A lost notification is caught by the listeners' poll.
	s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, what)
}

// StartSession registers a session as it starts.
func (s *Store) StartSession(ctx context.Context, r *broker.SessionRecord) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO sessions
		(id, technician, affiliate, affiliate_country, source, source_country, source_network, target, target_address, residency, login,
		 cross_border, rule, trace, cert_serial, cert_key_id, started_at, recording, request, node, moderated)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)`,
		args(r.ID, r.Technician, r.Affiliate, r.AffiliateCountry, r.Source, r.SourceCountry, r.SourceNetwork, r.Target, r.TargetAddress, r.Residency, r.Login,
			r.CrossBorder, r.Rule, r.Trace, strconv.FormatUint(r.CertSerial, 10), r.CertKeyID, r.StartedAt.UTC(), r.Recording, r.Request, r.Node, r.Moderated)...)
	if err != nil {
		return fmt.Errorf("store session %s: %w", r.ID, err)
	}
	return nil
}

// EndSession records how a session ended.
func (s *Store) EndSession(ctx context.Context, id string, e broker.SessionEnd) error {
	// A session a survivor ended "node lost" keeps that end: the node
	// that served it is back too late to say otherwise.
	tag, err := s.pool.Exec(ctx, `UPDATE sessions SET ended_at=$1, bytes_in=$2, bytes_out=$3, end_reason=$4
		WHERE id=$5 AND (ended_at IS NULL OR end_reason <> $6)`,
		args(e.At.UTC(), e.BytesIn, e.BytesOut, e.Reason, id, broker.EndNodeLost)...)
	if err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return s.notUpdated(ctx, "end session", id)
	}
	return nil
}

// notUpdated says why an update of session id changed nothing: there is
// no such session, or a survivor took it over.
func (s *Store) notUpdated(ctx context.Context, what, id string) error {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE id=$1`, text(id)).Scan(&n); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %s: %w", what, id, broker.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", what, id, broker.ErrTakenOver)
}

// SetRecordingSeal records the seal of a session's recording.
func (s *Store) SetRecordingSeal(ctx context.Context, id, head string, chunks int, complete bool) error {
	// The seal a survivor recorded for a session it took over stays: it
	// is the one in the object store.
	tag, err := s.pool.Exec(ctx, `UPDATE sessions SET recording_head=$1, recording_chunks=$2, recording_complete=$3
		WHERE id=$4 AND NOT (end_reason = $5 AND recording_head <> '' AND recording_head <> $1)`,
		args(head, chunks, complete, id, broker.EndNodeLost)...)
	if err != nil {
		return fmt.Errorf("record the seal of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return s.notUpdated(ctx, "record the seal of", id)
	}
	return nil
}

const sessionColumns = `id, technician, affiliate, affiliate_country, source, source_country, source_network, target, target_address, residency, login,
	cross_border, rule, trace, cert_serial, cert_key_id, started_at, ended_at, bytes_in, bytes_out, end_reason, recording,
	recording_head, recording_chunks, recording_complete, request, node, moderated`

func scanSession(row pgx.CollectableRow) (broker.SessionRecord, error) {
	var (
		r       broker.SessionRecord
		serial  string
		started time.Time
		ended   *time.Time
	)
	err := row.Scan(&r.ID, &r.Technician, &r.Affiliate, &r.AffiliateCountry, &r.Source, &r.SourceCountry, &r.SourceNetwork, &r.Target, &r.TargetAddress,
		&r.Residency, &r.Login, &r.CrossBorder, &r.Rule, &r.Trace, &serial, &r.CertKeyID, &started, &ended,
		&r.BytesIn, &r.BytesOut, &r.EndReason, &r.Recording, &r.RecordingHead, &r.RecordingChunks, &r.RecordingComplete, &r.Request, &r.Node,
		&r.Moderated)
	r.CertSerial, _ = strconv.ParseUint(serial, 10, 64)
	r.StartedAt = started.UTC()
	r.EndedAt = fromNull(ended)
	return r, err
}

// Session returns one session by ID.
func (s *Store) Session(ctx context.Context, id string) (broker.SessionRecord, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id=$1`, text(id))
	r, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, fmt.Errorf("session %s: %w", id, broker.ErrNotFound)
	}
	return r, err
}

// Sessions lists sessions, newest first.
func (s *Store) Sessions(ctx context.Context, f broker.SessionFilter) ([]broker.SessionRecord, error) {
	var q query
	for _, eq := range []struct{ column, value string }{
		{"technician", f.Technician}, {"target", f.Target},
		{"affiliate", f.Affiliate}, {"source_country", f.SourceCountry}, {"residency", f.Residency}, {"node", f.Node},
	} {
		if eq.value != "" {
			q.and(eq.column + "=" + q.arg(eq.value))
		}
	}
	if f.CrossBorder != nil {
		q.and("cross_border=" + q.arg(*f.CrossBorder))
	}
	if f.Live {
		q.and("ended_at IS NULL")
	}
	if !f.Since.IsZero() {
		q.and("started_at>=" + q.arg(f.Since.UTC()))
	}
	if !f.Until.IsZero() {
		q.and("started_at<" + q.arg(f.Until.UTC()))
	}
	if f.Residencies != nil {
		if len(f.Residencies) == 0 {
			return nil, nil // an empty scope sees nothing
		}
		q.and("residency = ANY(" + q.arg(texts(f.Residencies)) + ")")
	}
	if f.EndReason != "" {
		q.and(containsASCIIFold("end_reason", q.arg(f.EndReason)))
	}
	if f.HasFiles != nil {
		op := "IN"
		if !*f.HasFiles {
			op = "NOT IN"
		}
		q.and("id " + op + " (SELECT id FROM session_text WHERE files>0)")
	}
	if words := broker.SearchWords(f.Text); len(words) > 0 {
		q.and("id IN (SELECT id FROM session_text WHERE " + textCondition(&q, words) + ")")
	}
	sql := `SELECT ` + sessionColumns + ` FROM sessions` + q.clause() + ` ORDER BY started_at DESC, id DESC`
	if f.Limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	if f.Offset > 0 {
		sql += fmt.Sprintf(" OFFSET %d", f.Offset)
	}
	rows, _ := s.pool.Query(ctx, sql, q.args...)
	out, err := pgx.CollectRows(rows, scanSession)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// containsASCIIFold is the SQL condition that column contains the text of
// placeholder p, ignoring the case of ASCII letters only, as the filters
// promise and SQLite does: lower() under the "C" collation folds A-Z and
// nothing else, whatever the database's locale.
func containsASCIIFold(column, p string) string {
	return `strpos(lower(` + column + ` COLLATE "C"), lower(` + p + ` COLLATE "C")) > 0`
}

func texts(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = text(s)
	}
	return out
}

// Audit appends an event to the audit log.
func (s *Store) Audit(ctx context.Context, e broker.AuditEvent) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO audit (at, kind, technician, target, source, session, detail) VALUES ($1,$2,$3,$4,$5,$6,$7)`,
		args(e.At.UTC(), e.Kind, e.Technician, e.Target, e.Source, e.Session, e.Detail)...)
	if err != nil {
		return fmt.Errorf("store audit event: %w", err)
	}
	return nil
}

// AuditEvents returns the newest audit events, oldest first.
func (s *Store) AuditEvents(ctx context.Context, limit int) ([]broker.AuditEvent, error) {
	return s.SearchAudit(ctx, broker.AuditFilter{Limit: limit})
}

// SearchAudit returns the newest events that match f, oldest first.
func (s *Store) SearchAudit(ctx context.Context, f broker.AuditFilter) ([]broker.AuditEvent, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var q query
	if len(f.Kinds) > 0 {
		var or []string
		for _, k := range f.Kinds {
			if p, ok := strings.CutSuffix(k, "*"); ok || strings.HasSuffix(k, ".") {
				if !ok {
					p = k
				}
				or = append(or, "left(kind, "+q.arg(len([]rune(p)))+") = "+q.arg(p))
			} else {
				or = append(or, "kind = "+q.arg(k))
			}
		}
		q.and("(" + strings.Join(or, " OR ") + ")")
	}
	for _, c := range []struct{ column, value string }{{"technician", f.Technician}, {"target", f.Target}, {"session", f.Session}} {
		if c.value != "" {
			q.and(c.column + " = " + q.arg(c.value))
		}
	}
	if f.Source != "" {
		// An address matches itself and itself with any port.
		q.and("(source = " + q.arg(f.Source) + " OR left(source, " + q.arg(len([]rune(f.Source))+1) + ") = " + q.arg(f.Source+":") + ")")
	}
	if !f.Since.IsZero() {
		q.and("at >= " + q.arg(f.Since.UTC()))
	}
	if !f.Until.IsZero() {
		q.and("at < " + q.arg(f.Until.UTC()))
	}
	if f.Text != "" {
		q.and(containsASCIIFold("detail", q.arg(f.Text)))
	}
	limit := q.arg(f.Limit)
	rows, _ := s.pool.Query(ctx, `SELECT at, kind, technician, target, source, session, detail FROM
		(SELECT * FROM audit`+q.clause()+` ORDER BY seq DESC LIMIT `+limit+`) newest ORDER BY seq`, q.args...)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.AuditEvent, error) {
		var e broker.AuditEvent
		err := row.Scan(&e.At, &e.Kind, &e.Technician, &e.Target, &e.Source, &e.Session, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	return out, nil
}

// AddLock stores a lock.
func (s *Store) AddLock(ctx context.Context, l broker.Lock) (broker.Lock, error) {
	err := s.pool.QueryRow(ctx, `INSERT INTO locks (kind, name, reason, made_by, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6) RETURNING id`,
		args(l.Kind, l.Name, l.Reason, l.By, l.Created.UTC(), nullTime(l.Expires))...).Scan(&l.ID)
	if err != nil {
		return l, fmt.Errorf("store lock: %w", err)
	}
	s.notify(ctx, "lock")
	return l, nil
}

// RemoveLock marks a lock removed.
func (s *Store) RemoveLock(ctx context.Context, id int64) error {
	tag, err := s.pool.Exec(ctx, `UPDATE locks SET removed_at=now() WHERE id=$1 AND removed_at IS NULL`, id)
	if err != nil {
		return fmt.Errorf("remove lock %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("lock %d: %w", id, broker.ErrNotFound)
	}
	s.notify(ctx, "lock")
	return nil
}

// Locks returns the locks in force at now, oldest first.
func (s *Store) Locks(ctx context.Context, now time.Time) ([]broker.Lock, error) {
	rows, _ := s.pool.Query(ctx, `SELECT id, kind, name, reason, made_by, created_at, expires_at FROM locks
		WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > $1) ORDER BY id`, now.UTC())
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.Lock, error) {
		var (
			l       broker.Lock
			expires *time.Time
		)
		err := row.Scan(&l.ID, &l.Kind, &l.Name, &l.Reason, &l.By, &l.Created, &expires)
		l.Created = l.Created.UTC()
		l.Expires = fromNull(expires)
		return l, err
	})
}

// SetTOTP stores a technician's TOTP secret.
func (s *Store) SetTOTP(ctx context.Context, technician, secret string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO totp (technician, secret, last_step) VALUES ($1,$2,0)
		ON CONFLICT (technician) DO UPDATE SET secret=excluded.secret, last_step=0`, args(technician, secret)...)
	if err != nil {
		return fmt.Errorf("store totp secret: %w", err)
	}
	return nil
}

// TOTP returns a technician's TOTP state.
func (s *Store) TOTP(ctx context.Context, technician string) (broker.TOTPState, error) {
	var st broker.TOTPState
	err := s.pool.QueryRow(ctx, `SELECT secret, last_step FROM totp WHERE technician=$1`, text(technician)).Scan(&st.Secret, &st.LastStep)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("totp of %s: %w", technician, broker.ErrNotFound)
	}
	return st, err
}

// ReplaceTOTPSecret replaces the secret old, keeping last_step.
// PostgreSQL keeps the old row version until VACUUM reclaims it; the
// secret in it is sealed by Vault whenever the store has ever held it
// sealed, which is the only way sekisho writes it here.
func (s *Store) ReplaceTOTPSecret(ctx context.Context, technician, old, secret string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE totp SET secret=$1 WHERE technician=$2 AND secret=$3`, args(secret, technician, old)...)
	if err != nil {
		return false, fmt.Errorf("replace totp secret: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// TOTPSecrets returns every stored secret by technician.
func (s *Store) TOTPSecrets(ctx context.Context) (map[string]string, error) {
	rows, _ := s.pool.Query(ctx, `SELECT technician, secret FROM totp`)
	out := map[string]string{}
	var tech, secret string
	_, err := pgx.ForEachRow(rows, []any{&tech, &secret}, func() error {
		out[tech] = secret
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list totp secrets: %w", err)
	}
	return out, nil
}

// ClaimTOTPStep marks step used, atomically across nodes.
func (s *Store) ClaimTOTPStep(ctx context.Context, technician string, step int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE totp SET last_step=$1 WHERE technician=$2 AND last_step < $1`, step, text(technician))
	if err != nil {
		return false, fmt.Errorf("claim totp step: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// SetHold puts a recording under a legal hold, replacing any other hold
// of it.
func (s *Store) SetHold(ctx context.Context, h broker.LegalHold) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO holds (session, reason, made_by, at) VALUES ($1,$2,$3,$4)
		ON CONFLICT (session) DO UPDATE SET reason=excluded.reason, made_by=excluded.made_by, at=excluded.at`,
		args(h.Session, h.Reason, h.By, h.At.UTC())...)
	if err != nil {
		return fmt.Errorf("store legal hold: %w", err)
	}
	return nil
}

// RemoveHold lifts the hold of a recording.
func (s *Store) RemoveHold(ctx context.Context, session string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM holds WHERE session=$1`, text(session))
	if err != nil {
		return fmt.Errorf("remove legal hold: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("legal hold of %s: %w", session, broker.ErrNotFound)
	}
	return nil
}

// Holds lists the holds in force, oldest first.
func (s *Store) Holds(ctx context.Context) ([]broker.LegalHold, error) {
	rows, _ := s.pool.Query(ctx, `SELECT session, reason, made_by, at FROM holds ORDER BY at`)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (broker.LegalHold, error) {
		var h broker.LegalHold
		err := row.Scan(&h.Session, &h.Reason, &h.By, &h.At)
		h.At = h.At.UTC()
		return h, err
	})
}
