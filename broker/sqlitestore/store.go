// Package sqlitestore keeps sekisho's sessions and audit log in an embedded
// SQLite file through a pure-Go driver (no cgo). It runs in WAL mode so
// that the CLI can read the register while the server writes it.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/sekisho/sekisho/broker"
)

const schema = `
CREATE TABLE IF NOT EXISTS sessions (
	id                TEXT PRIMARY KEY,
	technician        TEXT NOT NULL,
	affiliate         TEXT NOT NULL,
	affiliate_country TEXT NOT NULL,
	source            TEXT NOT NULL,
	target            TEXT NOT NULL,
	target_address    TEXT NOT NULL,
	residency         TEXT NOT NULL,
	login             TEXT NOT NULL,
	cross_border      INTEGER NOT NULL,
	rule              TEXT NOT NULL,
	trace             TEXT NOT NULL,
	cert_serial       TEXT NOT NULL,
	cert_key_id       TEXT NOT NULL,
	started_at        TEXT NOT NULL,
	ended_at          TEXT,
	bytes_in          INTEGER NOT NULL DEFAULT 0,
	bytes_out         INTEGER NOT NULL DEFAULT 0,
	end_reason        TEXT NOT NULL DEFAULT '',
	recording         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at);
CREATE TABLE IF NOT EXISTS locks (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	kind       TEXT NOT NULL,
	name       TEXT NOT NULL,
	reason     TEXT NOT NULL,
	by         TEXT NOT NULL,
	created_at TEXT NOT NULL,
	expires_at TEXT,
	removed_at TEXT
);
CREATE TABLE IF NOT EXISTS holds (
	session TEXT PRIMARY KEY,
	reason  TEXT NOT NULL,
	by      TEXT NOT NULL,
	at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totp (
	technician TEXT PRIMARY KEY,
	secret     TEXT NOT NULL,
	last_step  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	technician        TEXT NOT NULL,
	affiliate         TEXT NOT NULL,
	affiliate_country TEXT NOT NULL,
	target            TEXT NOT NULL,
	rule              TEXT NOT NULL,
	source            TEXT NOT NULL,
	reason            TEXT NOT NULL,
	duration          INTEGER NOT NULL,
	state             TEXT NOT NULL,
	needed            INTEGER NOT NULL,
	approvals         TEXT NOT NULL DEFAULT '[]',
	created_at        TEXT NOT NULL,
	expires_at        TEXT,
	decided_by        TEXT NOT NULL DEFAULT '',
	decided_at        TEXT,
	note              TEXT NOT NULL DEFAULT '',
	grant_start       TEXT,
	grant_end         TEXT
);
CREATE INDEX IF NOT EXISTS requests_technician_target ON requests(technician, target);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE TABLE IF NOT EXISTS audit (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	at         TEXT NOT NULL,
	kind       TEXT NOT NULL,
	technician TEXT NOT NULL,
	target     TEXT NOT NULL,
	source     TEXT NOT NULL,
	session    TEXT NOT NULL,
	detail     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
	node       TEXT PRIMARY KEY,
	checked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_technician ON audit(technician);
CREATE INDEX IF NOT EXISTS audit_session ON audit(session);
`

// columnsAdded are columns added after the first release of the schema;
// migrate adds them to an older file.
var columnsAdded = []addedColumn{
	{"sessions", "source_country", "TEXT NOT NULL DEFAULT ''"},
	{"sessions", "source_network", "TEXT NOT NULL DEFAULT ''"},
	{"sessions", "recording_head", "TEXT NOT NULL DEFAULT ''"},
	{"sessions", "recording_chunks", "INTEGER NOT NULL DEFAULT 0"},
	{"sessions", "recording_complete", "INTEGER NOT NULL DEFAULT 0"},
	{"sessions", "request", "INTEGER NOT NULL DEFAULT 0"},
	// The node that served a session; a session of an older file was
	// served by the one node there was.
	{"sessions", "node", "TEXT NOT NULL DEFAULT ''"},
	// Whether the session's rule asked for moderators; no rule did
	// before moderation came.
	{"sessions", "moderated", "INTEGER NOT NULL DEFAULT 0"},
	// A request filed before its source country was kept has none: its
	// grant is then used from the address it was filed from only.
	{"requests", "source_country", "TEXT NOT NULL DEFAULT ''"},
	// What the rules in force last changed of a request after it was
	// filed; an older request was changed by none.
	{"requests", "revised", "TEXT NOT NULL DEFAULT ''"},
}

// addedColumn is a column added to table after its first release.
type addedColumn struct{ table, column, decl string }

// migrate adds the columns of added that the file lacks.
func migrate(ctx context.Context, db *sql.DB, added []addedColumn) error {
	for _, c := range added {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name=?`, c.table, c.column).Scan(&n); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		if n == 0 {
			if _, err := db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", c.table, c.column, c.decl)); err != nil {
				return fmt.Errorf("migrate: add %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return nil
}

// TimeFormat is how times are stored, as TEXT in UTC, so that they sort
// as strings and keep their nanoseconds.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

const timeFormat = TimeFormat

// Store is a broker.Store on SQLite.
type Store struct {
	db *sql.DB
}

var _ broker.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path. The database
// holds the audit log, what was typed and shown in sessions (the search
// index) and sealed secrets: it and its -wal and -shm files are made
// readable by their owner only, as SQLite gives the latter two the
// database's mode.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	// secure_delete: what is deleted or overwritten (a TOTP secret
	// sealed in place of one in the clear) is zeroed, not left in free
	// space.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=secure_delete(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: create schema: %w", path, err)
	}
	if err := migrate(ctx, db, columnsAdded); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, textSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: create text index: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, consoleSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: create console and throttle tables: %w", path, err)
	}
	if err := migrate(ctx, db, consoleColumnsAdded); err != nil {
		db.Close()
		return nil, fmt.Errorf("state store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// ownerOnly creates the database file with mode 0600 if it is missing,
// and takes group and other access from it and its -wal and -shm files
// if they have it (a store made by an older sekisho, or copied).
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&0o700); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// StartSession registers a session as it starts.
func (s *Store) StartSession(ctx context.Context, r *broker.SessionRecord) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions
		(id, technician, affiliate, affiliate_country, source, source_country, source_network, target, target_address, residency, login,
		 cross_border, rule, trace, cert_serial, cert_key_id, started_at, recording, request, node, moderated)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		r.ID, r.Technician, r.Affiliate, r.AffiliateCountry, r.Source, r.SourceCountry, r.SourceNetwork, r.Target, r.TargetAddress, r.Residency, r.Login,
		r.CrossBorder, r.Rule, r.Trace, fmt.Sprint(r.CertSerial), r.CertKeyID, r.StartedAt.UTC().Format(timeFormat), r.Recording, r.Request, r.Node, r.Moderated)
	if err != nil {
		return fmt.Errorf("store session %s: %w", r.ID, err)
	}
	return nil
}

// EndSession records how a session ended.
func (s *Store) EndSession(ctx context.Context, id string, e broker.SessionEnd) error {
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET ended_at=?, bytes_in=?, bytes_out=?, end_reason=? WHERE id=?`,
		e.At.UTC().Format(timeFormat), e.BytesIn, e.BytesOut, e.Reason, id)
	if err != nil {
		return fmt.Errorf("end session %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("end session %s: %w", id, broker.ErrNotFound)
	}
	return nil
}

// SetRecordingSeal records the seal of a session's recording.
func (s *Store) SetRecordingSeal(ctx context.Context, id, head string, chunks int, complete bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET recording_head=?, recording_chunks=?, recording_complete=? WHERE id=?`,
		head, chunks, complete, id)
	if err != nil {
		return fmt.Errorf("record the seal of %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("record the seal of %s: %w", id, broker.ErrNotFound)
	}
	return nil
}

const sessionColumns = `id, technician, affiliate, affiliate_country, source, source_country, source_network, target, target_address, residency, login,
	cross_border, rule, trace, cert_serial, cert_key_id, started_at, ended_at, bytes_in, bytes_out, end_reason, recording,
	recording_head, recording_chunks, recording_complete, request, node, moderated`

// Session returns one session by ID.
func (s *Store) Session(ctx context.Context, id string) (broker.SessionRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id=?`, id)
	if err != nil {
		return broker.SessionRecord{}, err
	}
	list, err := scanSessions(rows)
	if err != nil {
		return broker.SessionRecord{}, err
	}
	if len(list) == 0 {
		return broker.SessionRecord{}, fmt.Errorf("session %s: %w", id, broker.ErrNotFound)
	}
	return list[0], nil
}

// Sessions lists sessions, newest first.
func (s *Store) Sessions(ctx context.Context, f broker.SessionFilter) ([]broker.SessionRecord, error) {
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
	if f.CrossBorder != nil {
		where = append(where, "cross_border=?")
		args = append(args, *f.CrossBorder)
	}
	if f.Live {
		where = append(where, "ended_at IS NULL")
	}
	if !f.Since.IsZero() {
		where = append(where, "started_at>=?")
		args = append(args, f.Since.UTC().Format(timeFormat))
	}
	if !f.Until.IsZero() {
		where = append(where, "started_at<?")
		args = append(args, f.Until.UTC().Format(timeFormat))
	}
	for _, eq := range []struct{ column, value string }{
		{"affiliate", f.Affiliate}, {"source_country", f.SourceCountry}, {"residency", f.Residency}, {"node", f.Node},
	} {
		if eq.value != "" {
			where = append(where, eq.column+"=?")
			args = append(args, eq.value)
		}
	}
	if f.Residencies != nil {
		if len(f.Residencies) == 0 {
			return nil, nil // an empty scope sees nothing
		}
		where = append(where, "residency IN (?"+strings.Repeat(",?", len(f.Residencies)-1)+")")
		for _, r := range f.Residencies {
			args = append(args, r)
		}
	}
	if f.EndReason != "" {
		where = append(where, "instr(lower(end_reason), lower(?))>0")
		args = append(args, f.EndReason)
	}
	if f.HasFiles != nil {
		op := "IN"
		if !*f.HasFiles {
			op = "NOT IN"
		}
		where = append(where, "id "+op+" (SELECT id FROM session_text WHERE files>0)")
	}
	if f.Text != "" {
		if m := parseTextQuery(f.Text); !m.empty() {
			cond, cargs := m.condition()
			where = append(where, "id IN (SELECT session_text.id FROM session_fts JOIN session_text ON session_text.n=session_fts.rowid WHERE "+cond+")")
			args = append(args, cargs...)
		}
	}
	q := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY started_at DESC"
	switch {
	case f.Limit > 0:
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	case f.Offset > 0:
		q += " LIMIT -1"
	}
	if f.Offset > 0 {
		q += fmt.Sprintf(" OFFSET %d", f.Offset)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanSessions(rows)
}

func scanSessions(rows *sql.Rows) ([]broker.SessionRecord, error) {
	defer rows.Close()
	var out []broker.SessionRecord
	for rows.Next() {
		var (
			r               broker.SessionRecord
			serial, started string
			ended           sql.NullString
			crossBorder     bool
		)
		if err := rows.Scan(&r.ID, &r.Technician, &r.Affiliate, &r.AffiliateCountry, &r.Source, &r.SourceCountry, &r.SourceNetwork, &r.Target, &r.TargetAddress,
			&r.Residency, &r.Login, &crossBorder, &r.Rule, &r.Trace, &serial, &r.CertKeyID, &started, &ended,
			&r.BytesIn, &r.BytesOut, &r.EndReason, &r.Recording, &r.RecordingHead, &r.RecordingChunks, &r.RecordingComplete, &r.Request, &r.Node,
			&r.Moderated); err != nil {
			return nil, err
		}
		r.CrossBorder = crossBorder
		fmt.Sscan(serial, &r.CertSerial)
		r.StartedAt, _ = time.Parse(timeFormat, started)
		if ended.Valid {
			r.EndedAt, _ = time.Parse(timeFormat, ended.String)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Audit appends an event to the audit log.
func (s *Store) Audit(ctx context.Context, e broker.AuditEvent) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit (at, kind, technician, target, source, session, detail) VALUES (?,?,?,?,?,?,?)`,
		e.At.UTC().Format(timeFormat), e.Kind, e.Technician, e.Target, e.Source, e.Session, e.Detail)
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
	var where []string
	var args []any
	if len(f.Kinds) > 0 {
		var or []string
		for _, k := range f.Kinds {
			if p, ok := strings.CutSuffix(k, "*"); ok || strings.HasSuffix(k, ".") {
				if !ok {
					p = k
				}
				or = append(or, `substr(kind, 1, ?) = ?`)
				args = append(args, len(p), p)
			} else {
				or = append(or, `kind = ?`)
				args = append(args, k)
			}
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	for _, c := range []struct{ column, value string }{{"technician", f.Technician}, {"target", f.Target}, {"session", f.Session}} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	if f.Source != "" {
		// An address matches itself and itself with any port.
		where = append(where, "(source = ? OR substr(source, 1, ?) = ?)")
		args = append(args, f.Source, len(f.Source)+1, f.Source+":")
	}
	if !f.Since.IsZero() {
		where = append(where, "at >= ?")
		args = append(args, f.Since.UTC().Format(timeFormat))
	}
	if !f.Until.IsZero() {
		where = append(where, "at < ?")
		args = append(args, f.Until.UTC().Format(timeFormat))
	}
	if f.Text != "" {
		where = append(where, "instr(lower(detail), lower(?)) > 0")
		args = append(args, f.Text)
	}
	q := "SELECT * FROM audit"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	rows, err := s.db.QueryContext(ctx, `SELECT at, kind, technician, target, source, session, detail FROM
		(`+q+` ORDER BY seq DESC LIMIT ?) ORDER BY seq`, args...)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	defer rows.Close()
	var out []broker.AuditEvent
	for rows.Next() {
		var e broker.AuditEvent
		var at string
		if err := rows.Scan(&at, &e.Kind, &e.Technician, &e.Target, &e.Source, &e.Session, &e.Detail); err != nil {
			return nil, err
		}
		e.At, _ = time.Parse(timeFormat, at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// AddLock stores a lock.
func (s *Store) AddLock(ctx context.Context, l broker.Lock) (broker.Lock, error) {
	var expires any
	if !l.Expires.IsZero() {
		expires = l.Expires.UTC().Format(timeFormat)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO locks (kind, name, reason, by, created_at, expires_at) VALUES (?,?,?,?,?,?)`,
		l.Kind, l.Name, l.Reason, l.By, l.Created.UTC().Format(timeFormat), expires)
	if err != nil {
		return l, fmt.Errorf("store lock: %w", err)
	}
	l.ID, err = res.LastInsertId()
	return l, err
}

// RemoveLock marks a lock removed.
func (s *Store) RemoveLock(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE locks SET removed_at=? WHERE id=? AND removed_at IS NULL`,
		time.Now().UTC().Format(timeFormat), id)
	if err != nil {
		return fmt.Errorf("remove lock %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("lock %d: %w", id, broker.ErrNotFound)
	}
	return nil
}

// Locks returns the locks in force at now, oldest first.
func (s *Store) Locks(ctx context.Context, now time.Time) ([]broker.Lock, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, kind, name, reason, by, created_at, expires_at FROM locks
		WHERE removed_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id`, now.UTC().Format(timeFormat))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []broker.Lock
	for rows.Next() {
		var (
			l       broker.Lock
			created string
			expires sql.NullString
		)
		if err := rows.Scan(&l.ID, &l.Kind, &l.Name, &l.Reason, &l.By, &created, &expires); err != nil {
			return nil, err
		}
		l.Created, _ = time.Parse(timeFormat, created)
		if expires.Valid {
			l.Expires, _ = time.Parse(timeFormat, expires.String)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// SetTOTP stores a technician's TOTP secret.
func (s *Store) SetTOTP(ctx context.Context, technician, secret string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO totp (technician, secret, last_step) VALUES (?,?,0)
		ON CONFLICT(technician) DO UPDATE SET secret=excluded.secret, last_step=0`, technician, secret)
	if err != nil {
		return fmt.Errorf("store totp secret: %w", err)
	}
	return nil
}

// TOTP returns a technician's TOTP state.
func (s *Store) TOTP(ctx context.Context, technician string) (broker.TOTPState, error) {
	var st broker.TOTPState
	err := s.db.QueryRowContext(ctx, `SELECT secret, last_step FROM totp WHERE technician=?`, technician).Scan(&st.Secret, &st.LastStep)
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("totp of %s: %w", technician, broker.ErrNotFound)
	}
	return st, err
}

// ReplaceTOTPSecret replaces the secret old, keeping last_step, and
// checkpoints the write-ahead log so that old is left in neither file
// (secure_delete zeroes it in the page).
func (s *Store) ReplaceTOTPSecret(ctx context.Context, technician, old, secret string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE totp SET secret=? WHERE technician=? AND secret=?`, secret, technician, old)
	if err != nil {
		return false, fmt.Errorf("replace totp secret: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || n != 1 {
		return false, err
	}
	// A reader may keep the log from being truncated now; later
	// checkpoints write over it then.
	if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return true, fmt.Errorf("checkpoint after replacing the totp secret: %w", err)
	}
	return true, nil
}

// TOTPSecrets returns every stored secret by technician.
func (s *Store) TOTPSecrets(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT technician, secret FROM totp`)
	if err != nil {
		return nil, fmt.Errorf("list totp secrets: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var tech, secret string
		if err := rows.Scan(&tech, &secret); err != nil {
			return nil, err
		}
		out[tech] = secret
	}
	return out, rows.Err()
}

// ClaimTOTPStep marks step used, atomically.
func (s *Store) ClaimTOTPStep(ctx context.Context, technician string, step int64) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE totp SET last_step=? WHERE technician=? AND last_step < ?`, step, technician, step)
	if err != nil {
		return false, fmt.Errorf("claim totp step: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
