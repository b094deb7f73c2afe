package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
)

// lockKeys takes a transaction advisory lock on each of keys, in sorted
// order so that two transactions locking some of the same keys cannot
// deadlock. Every writer that checks a count or a cap before it writes
// takes the lock of what it counts first: read committed alone would let
// two nodes both see room and both write.
func lockKeys(ctx context.Context, tx pgx.Tx, keys ...string) error {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, text(k)); err != nil {
			return fmt.Errorf("lock %s: %w", k, err)
		}
	}
	return nil
}

// BeginAttempt counts an attempt under every key, unless one is at its
// limit, holding the advisory lock of each key meanwhile.
func (s *Store) BeginAttempt(ctx context.Context, limits []broker.FailureLimit, now time.Time, window time.Duration) (bool, error) {
	var subjects, locks []string
	for _, l := range limits {
		subjects = append(subjects, text(l.Key))
		locks = append(locks, "sekisho.failed_attempts:"+l.Key)
	}
	since := now.Add(-window).UTC()
	counted := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockKeys(ctx, tx, locks...); err != nil {
			return err
		}
		// Old failures of every key go: they no longer count anywhere.
		if _, err := tx.Exec(ctx, `DELETE FROM failed_attempts WHERE at < $1`, since); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT subject, count(*) FROM failed_attempts WHERE subject = ANY($1) AND at >= $2 GROUP BY subject`, subjects, since)
		if err != nil {
			return err
		}
		counts := map[string]int{}
		for rows.Next() {
			var subject string
			var n int
			if err := rows.Scan(&subject, &n); err != nil {
				rows.Close()
				return err
			}
			counts[subject] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, l := range limits {
			if counts[text(l.Key)] >= l.Max {
				return nil
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO failed_attempts (subject, at) SELECT unnest($1::text[]), $2`, subjects, now.UTC()); err != nil {
			return err
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
		if _, err := s.pool.Exec(ctx, `DELETE FROM failed_attempts WHERE n =
			(SELECT n FROM failed_attempts WHERE subject=$1 AND at=$2 ORDER BY n DESC LIMIT 1)`, text(k), at.UTC()); err != nil {
			return fmt.Errorf("forgive a failed attempt: %w", err)
		}
	}
	return nil
}

// PutConsoleLink stores a link and applies the cap under the advisory
// lock of the technician's links.
func (s *Store) PutConsoleLink(ctx context.Context, l broker.ConsoleLink, max int, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockKeys(ctx, tx, "sekisho.console_links:"+l.Technician); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM console_links WHERE expires < $1`, now.UTC()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO console_links (token_hash, technician, key_fingerprint, created, expires)
			VALUES ($1,$2,$3,$4,$5)`, args(l.TokenHash, l.Technician, l.KeyFingerprint, l.Created.UTC(), l.Expires.UTC())...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM console_links WHERE technician=$1 AND n NOT IN
			(SELECT n FROM console_links WHERE technician=$1 ORDER BY n DESC LIMIT $2)`, text(l.Technician), max)
		return err
	})
	if err != nil {
		return fmt.Errorf("store a sign-in link: %w", err)
	}
	return nil
}

const linkColumns = `token_hash, technician, key_fingerprint, created, expires`

func scanLink(row pgx.Row) (broker.ConsoleLink, error) {
	var l broker.ConsoleLink
	if err := row.Scan(&l.TokenHash, &l.Technician, &l.KeyFingerprint, &l.Created, &l.Expires); err != nil {
		return l, err
	}
	l.Created, l.Expires = l.Created.UTC(), l.Expires.UTC()
	return l, nil
}

// PeekConsoleLink returns a valid link without using it.
func (s *Store) PeekConsoleLink(ctx context.Context, tokenHash string, now time.Time) (broker.ConsoleLink, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `SELECT `+linkColumns+` FROM console_links WHERE token_hash=$1`, text(tokenHash)))
	return validLink(l, err, now)
}

// TakeConsoleLink deletes a link and returns it if it was valid: of
// deletes of one row on any nodes, one returns it.
func (s *Store) TakeConsoleLink(ctx context.Context, tokenHash string, now time.Time) (broker.ConsoleLink, error) {
	l, err := scanLink(s.pool.QueryRow(ctx, `DELETE FROM console_links WHERE token_hash=$1 RETURNING `+linkColumns, text(tokenHash)))
	return validLink(l, err, now)
}

func validLink(l broker.ConsoleLink, err error, now time.Time) (broker.ConsoleLink, error) {
	if errors.Is(err, pgx.ErrNoRows) || err == nil && !l.Valid(now) {
		return broker.ConsoleLink{}, fmt.Errorf("sign-in link: %w", broker.ErrNotFound)
	}
	if err != nil {
		return broker.ConsoleLink{}, fmt.Errorf("sign-in link: %w", err)
	}
	return l, nil
}

// PutConsoleSession stores a browser session and applies the cap under
// the advisory lock of the technician's sessions.
func (s *Store) PutConsoleSession(ctx context.Context, bs broker.ConsoleSession, max int, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockKeys(ctx, tx, "sekisho.console_sessions:"+bs.Technician); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE idle_until < $1 OR expires < $1`, now.UTC()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO console_sessions
			(token_hash, technician, key_fingerprint, csrf, created, seen, idle_until, expires, via, issuer, subject, roles, id_token)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)`,
			args(bs.TokenHash, bs.Technician, bs.KeyFingerprint, bs.CSRF, bs.Created.UTC(), bs.Seen.UTC(),
				bs.Seen.Add(bs.IdleTimeout).UTC(), bs.Expires.UTC(), bs.Via, bs.Issuer, bs.Subject,
				strings.Join(bs.Roles, ","), bs.IDToken)...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM console_sessions WHERE technician=$1 AND n NOT IN
			(SELECT n FROM console_sessions WHERE technician=$1 ORDER BY n DESC LIMIT $2)`, text(bs.Technician), max)
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
	var idleUntil time.Time
	var roles string
	err := s.pool.QueryRow(ctx, `SELECT token_hash, technician, key_fingerprint, csrf, created, seen, idle_until, expires,
		via, issuer, subject, roles, id_token
		FROM console_sessions WHERE token_hash=$1`, text(tokenHash)).Scan(&bs.TokenHash, &bs.Technician, &bs.KeyFingerprint, &bs.CSRF,
		&bs.Created, &bs.Seen, &idleUntil, &bs.Expires, &bs.Via, &bs.Issuer, &bs.Subject, &roles, &bs.IDToken)
	if errors.Is(err, pgx.ErrNoRows) {
		return bs, fmt.Errorf("browser session: %w", broker.ErrNotFound)
	}
	if err != nil {
		return bs, fmt.Errorf("browser session: %w", err)
	}
	bs.Created, bs.Seen, bs.Expires = bs.Created.UTC(), bs.Seen.UTC(), bs.Expires.UTC()
	bs.IdleTimeout = idleUntil.Sub(bs.Seen)
	bs.Roles = broker.SplitRoles(roles)
	return bs, nil
}

// TouchConsoleSession moves Seen and the idle end forward together.
func (s *Store) TouchConsoleSession(ctx context.Context, tokenHash string, seen time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE console_sessions SET idle_until = $1::timestamptz + (idle_until - seen), seen = $1
		WHERE token_hash = $2 AND seen < $1`, seen.UTC(), text(tokenHash)); err != nil {
		return fmt.Errorf("touch a browser session: %w", err)
	}
	return nil
}

// DeleteConsoleSession signs a browser out on every node.
func (s *Store) DeleteConsoleSession(ctx context.Context, tokenHash string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE token_hash=$1`, text(tokenHash)); err != nil {
		return fmt.Errorf("delete a browser session: %w", err)
	}
	return nil
}

// PutOIDCLogin stores a sign-on under way and drops the expired ones.
func (s *Store) PutOIDCLogin(ctx context.Context, l broker.OIDCLogin, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM oidc_logins WHERE expires < $1`, now.UTC()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO oidc_logins (state_hash, browser_hash, nonce, verifier, next, created, expires)
			VALUES ($1,$2,$3,$4,$5,$6,$7)`, args(l.StateHash, l.BrowserHash, l.Nonce, l.Verifier, l.Next, l.Created.UTC(), l.Expires.UTC())...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store a single sign-on: %w", err)
	}
	return nil
}

// TakeOIDCLogin deletes a sign-on and returns it if it was valid: of
// deletes of one row on any nodes, one returns it.
func (s *Store) TakeOIDCLogin(ctx context.Context, stateHash string, now time.Time) (broker.OIDCLogin, error) {
	var l broker.OIDCLogin
	err := s.pool.QueryRow(ctx, `DELETE FROM oidc_logins WHERE state_hash=$1
		RETURNING state_hash, browser_hash, nonce, verifier, next, created, expires`, text(stateHash)).Scan(
		&l.StateHash, &l.BrowserHash, &l.Nonce, &l.Verifier, &l.Next, &l.Created, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && now.After(l.Expires) {
		return broker.OIDCLogin{}, fmt.Errorf("single sign-on: %w", broker.ErrNotFound)
	}
	if err != nil {
		return broker.OIDCLogin{}, fmt.Errorf("single sign-on: %w", err)
	}
	l.Created, l.Expires = l.Created.UTC(), l.Expires.UTC()
	return l, nil
}
