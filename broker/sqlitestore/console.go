package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// consoleSchema holds the console's sign-in links and browser sessions,
// kept under the hashes of their tokens, and the failed attempts the
// second-factor throttle counts. Their times are Unix nanoseconds, not
// text: the idle end of a session moves with arithmetic in SQL. The
// column n orders rows as they were stored: the oldest link or session
// goes first when a technician has too many.
const consoleSchema = `
CREATE TABLE IF NOT EXISTS console_links (
	n               INTEGER PRIMARY KEY AUTOINCREMENT,
	token_hash      TEXT NOT NULL UNIQUE,
	technician      TEXT NOT NULL,
	key_fingerprint TEXT NOT NULL,
	created         INTEGER NOT NULL,
	expires         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS console_links_technician ON console_links(technician);
CREATE TABLE IF NOT EXISTS console_sessions (
	n               INTEGER PRIMARY KEY AUTOINCREMENT,
	token_hash      TEXT NOT NULL UNIQUE,
	technician      TEXT NOT NULL,
	key_fingerprint TEXT NOT NULL,
	csrf            TEXT NOT NULL,
	created         INTEGER NOT NULL,
	seen            INTEGER NOT NULL,
	idle_until      INTEGER NOT NULL,
	expires         INTEGER NOT NULL,
	via             TEXT NOT NULL DEFAULT '',
	issuer          TEXT NOT NULL DEFAULT '',
	subject         TEXT NOT NULL DEFAULT '',
	roles           TEXT NOT NULL DEFAULT '',
	id_token        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS console_sessions_technician ON console_sessions(technician);
CREATE TABLE IF NOT EXISTS oidc_logins (
	state_hash   TEXT PRIMARY KEY,
	browser_hash TEXT NOT NULL,
	nonce        TEXT NOT NULL,
	verifier     TEXT NOT NULL,
	next         TEXT NOT NULL,
	created      INTEGER NOT NULL,
	expires      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS oidc_logins_expires ON oidc_logins(expires);
CREATE TABLE IF NOT EXISTS failed_attempts (
	n       INTEGER PRIMARY KEY AUTOINCREMENT,
	subject TEXT NOT NULL,
	at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_attempts_subject ON failed_attempts(subject, at);
CREATE INDEX IF NOT EXISTS failed_attempts_at ON failed_attempts(at);
`

// consoleColumnsAdded are console columns added after the table was
// first released; migrate adds them to an older file once consoleSchema
// has made the tables.
var consoleColumnsAdded = []addedColumn{
	// How a browser session was started; an older one was started by a
	// link.
	{"console_sessions", "via", "TEXT NOT NULL DEFAULT ''"},
	{"console_sessions", "issuer", "TEXT NOT NULL DEFAULT ''"},
	{"console_sessions", "subject", "TEXT NOT NULL DEFAULT ''"},
	{"console_sessions", "roles", "TEXT NOT NULL DEFAULT ''"},
	{"console_sessions", "id_token", "TEXT NOT NULL DEFAULT ''"},
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// immediate runs fn in a transaction that holds SQLite's write lock from
// its start (BEGIN IMMEDIATE): no other writer, in this process or
// another with the file open, interleaves between what fn reads and what
// it writes. An error from fn rolls back and is returned as is.
func (s *Store) immediate(ctx context.Context, fn func(conn *sql.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		// As in UpdateRequest: a connection still in the transaction must
		// not go back to the pool.
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	if err := fn(conn); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	done = true
	return nil
}

// BeginAttempt counts an attempt under every key, unless one is at its
// limit, in one write transaction.
func (s *Store) BeginAttempt(ctx context.Context, limits []broker.FailureLimit, now time.Time, window time.Duration) (bool, error) {
	since := nanos(now.Add(-window))
	counted := false
	err := s.immediate(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `DELETE FROM failed_attempts WHERE at < ?`, since); err != nil {
			return err
		}
		for _, l := range limits {
			var n int
			if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM failed_attempts WHERE subject=? AND at >= ?`, l.Key, since).Scan(&n); err != nil {
				return err
			}
			if n >= l.Max {
				return nil
			}
		}
		for _, l := range limits {
			if _, err := conn.ExecContext(ctx, `INSERT INTO failed_attempts (subject, at) VALUES (?,?)`, l.Key, nanos(now)); err != nil {
				return err
			}
		}
		counted = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("count a failed attempt: %w", err)
	}
	return counted, nil
}

// ForgiveAttempt removes one failure at at under each key.
func (s *Store) ForgiveAttempt(ctx context.Context, keys []string, at time.Time) error {
	for _, k := range keys {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM failed_attempts WHERE n =
			(SELECT n FROM failed_attempts WHERE subject=? AND at=? ORDER BY n DESC LIMIT 1)`, k, nanos(at)); err != nil {
			return fmt.Errorf("forgive a failed attempt: %w", err)
		}
	}
	return nil
}

// PutConsoleLink stores a link and applies the cap in one write
// transaction.
func (s *Store) PutConsoleLink(ctx context.Context, l broker.ConsoleLink, max int, now time.Time) error {
	err := s.immediate(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `DELETE FROM console_links WHERE expires < ?`, nanos(now)); err != nil {
			return err
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO console_links (token_hash, technician, key_fingerprint, created, expires)
			VALUES (?,?,?,?,?)`, l.TokenHash, l.Technician, l.KeyFingerprint, nanos(l.Created), nanos(l.Expires)); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM console_links WHERE technician=? AND n NOT IN
			(SELECT n FROM console_links WHERE technician=? ORDER BY n DESC LIMIT ?)`, l.Technician, l.Technician, max)
		return err
	})
	if err != nil {
		return fmt.Errorf("store a sign-in link: %w", err)
	}
	return nil
}

const linkColumns = `token_hash, technician, key_fingerprint, created, expires`

func scanLink(row scanner) (broker.ConsoleLink, error) {
	var l broker.ConsoleLink
	var created, expires int64
	if err := row.Scan(&l.TokenHash, &l.Technician, &l.KeyFingerprint, &created, &expires); err != nil {
		return l, err
	}
	l.Created, l.Expires = fromNanos(created), fromNanos(expires)
	return l, nil
}

// PeekConsoleLink returns a valid link without using it.
func (s *Store) PeekConsoleLink(ctx context.Context, tokenHash string, now time.Time) (broker.ConsoleLink, error) {
	l, err := scanLink(s.db.QueryRowContext(ctx, `SELECT `+linkColumns+` FROM console_links WHERE token_hash=?`, tokenHash))
	return validLink(l, err, now)
}

// TakeConsoleLink deletes a link and returns it if it was valid: of two
// deletes of one row, one returns it.
func (s *Store) TakeConsoleLink(ctx context.Context, tokenHash string, now time.Time) (broker.ConsoleLink, error) {
	l, err := scanLink(s.db.QueryRowContext(ctx, `DELETE FROM console_links WHERE token_hash=? RETURNING `+linkColumns, tokenHash))
	return validLink(l, err, now)
}

func validLink(l broker.ConsoleLink, err error, now time.Time) (broker.ConsoleLink, error) {
	if errors.Is(err, sql.ErrNoRows) || err == nil && !l.Valid(now) {
		return broker.ConsoleLink{}, fmt.Errorf("sign-in link: %w", broker.ErrNotFound)
	}
	if err != nil {
		return broker.ConsoleLink{}, fmt.Errorf("sign-in link: %w", err)
	}
	return l, nil
}

// PutConsoleSession stores a browser session and applies the cap in one
// write transaction.
func (s *Store) PutConsoleSession(ctx context.Context, bs broker.ConsoleSession, max int, now time.Time) error {
	err := s.immediate(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `DELETE FROM console_sessions WHERE idle_until < ?1 OR expires < ?1`, nanos(now)); err != nil {
			return err
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO console_sessions
			(token_hash, technician, key_fingerprint, csrf, created, seen, idle_until, expires, via, issuer, subject, roles, id_token)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			bs.TokenHash, bs.Technician, bs.KeyFingerprint, bs.CSRF, nanos(bs.Created), nanos(bs.Seen),
			nanos(bs.Seen.Add(bs.IdleTimeout)), nanos(bs.Expires), bs.Via, bs.Issuer, bs.Subject,
			strings.Join(bs.Roles, ","), bs.IDToken); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, `DELETE FROM console_sessions WHERE technician=? AND n NOT IN
			(SELECT n FROM console_sessions WHERE technician=? ORDER BY n DESC LIMIT ?)`, bs.Technician, bs.Technician, max)
		return err
	})
	if err != nil {
		return fmt.Errorf("store a browser session: %w", err)
	}
	return nil
}

// ConsoleSession returns a browser session, in force or not.
func (s *Store) ConsoleSession(ctx context.Context, tokenHash string) (broker.ConsoleSession, error) {
	var bs broker.ConsoleSession
	var created, seen, idleUntil, expires int64
	var roles string
	err := s.db.QueryRowContext(ctx, `SELECT token_hash, technician, key_fingerprint, csrf, created, seen, idle_until, expires,
		via, issuer, subject, roles, id_token
		FROM console_sessions WHERE token_hash=?`, tokenHash).Scan(&bs.TokenHash, &bs.Technician, &bs.KeyFingerprint, &bs.CSRF,
		&created, &seen, &idleUntil, &expires, &bs.Via, &bs.Issuer, &bs.Subject, &roles, &bs.IDToken)
	if errors.Is(err, sql.ErrNoRows) {
		return bs, fmt.Errorf("browser session: %w", broker.ErrNotFound)
	}
	if err != nil {
		return bs, fmt.Errorf("browser session: %w", err)
	}
	bs.Created, bs.Seen, bs.Expires = fromNanos(created), fromNanos(seen), fromNanos(expires)
	bs.IdleTimeout = time.Duration(idleUntil - seen)
	bs.Roles = broker.SplitRoles(roles)
	return bs, nil
}

// TouchConsoleSession moves Seen and the idle end forward together.
func (s *Store) TouchConsoleSession(ctx context.Context, tokenHash string, seen time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE console_sessions SET idle_until = ?1 + (idle_until - seen), seen = ?1
		WHERE token_hash = ?2 AND seen < ?1`, nanos(seen), tokenHash); err != nil {
		return fmt.Errorf("touch a browser session: %w", err)
	}
	return nil
}

// DeleteConsoleSession signs a browser out.
func (s *Store) DeleteConsoleSession(ctx context.Context, tokenHash string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM console_sessions WHERE token_hash=?`, tokenHash); err != nil {
		return fmt.Errorf("delete a browser session: %w", err)
	}
	return nil
}

// PutOIDCLogin stores a sign-on under way and drops the expired ones.
func (s *Store) PutOIDCLogin(ctx context.Context, l broker.OIDCLogin, now time.Time) error {
	err := s.immediate(ctx, func(conn *sql.Conn) error {
		if _, err := conn.ExecContext(ctx, `DELETE FROM oidc_logins WHERE expires < ?`, nanos(now)); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, `INSERT INTO oidc_logins (state_hash, browser_hash, nonce, verifier, next, created, expires)
			VALUES (?,?,?,?,?,?,?)`, l.StateHash, l.BrowserHash, l.Nonce, l.Verifier, l.Next, nanos(l.Created), nanos(l.Expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store a single sign-on: %w", err)
	}
	return nil
}

// TakeOIDCLogin deletes a sign-on and returns it if it was valid: of two
// deletes of one row, one returns it.
func (s *Store) TakeOIDCLogin(ctx context.Context, stateHash string, now time.Time) (broker.OIDCLogin, error) {
	var l broker.OIDCLogin
	var created, expires int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM oidc_logins WHERE state_hash=?
		RETURNING state_hash, browser_hash, nonce, verifier, next, created, expires`, stateHash).Scan(
		&l.StateHash, &l.BrowserHash, &l.Nonce, &l.Verifier, &l.Next, &created, &expires)
	l.Created, l.Expires = fromNanos(created), fromNanos(expires)
	if errors.Is(err, sql.ErrNoRows) || err == nil && now.After(l.Expires) {
		return broker.OIDCLogin{}, fmt.Errorf("single sign-on: %w", broker.ErrNotFound)
	}
	if err != nil {
		return broker.OIDCLogin{}, fmt.Errorf("single sign-on: %w", err)
	}
	return l, nil
}
