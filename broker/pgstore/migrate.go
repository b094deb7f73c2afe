package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered SQL file of migrations/, applied once, in
// order, in a transaction of its own.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: the name must start with its number and _", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want number %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion is the schema this sekisho writes and reads: the number of
// its newest migration.
func SchemaVersion() int {
	m, err := migrations()
	if err != nil || len(m) == 0 {
		return 0
	}
	return m[len(m)-1].version
}

// migrateLock is the advisory lock under which nodes migrate: the first to
// start applies what is missing, the others wait for it and find nothing
// left to do.
const migrateLock = 0x5e_15_80_01

// ErrSchemaBehind is returned by Open when the database needs migrations
// and automatic migration is off.
var ErrSchemaBehind = errors.New("the database schema is older than this sekisho")

// applied returns the versions applied. A database without the table
// that records them has none; create makes the table then. The table is
// looked for before it is made: CREATE TABLE IF NOT EXISTS needs the
// right to create in the schema even when the table exists, which the
// role of nodes whose operators migrate by hand does not have.
func applied(ctx context.Context, tx pgx.Tx, create bool) (map[int]bool, error) {
	out := map[int]bool{}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		if !create {
			return out, nil
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return nil, err
		}
	}
	rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		out[v] = true
	}
	return out, nil
}

// Migrate applies the migrations the database lacks, under an advisory
// lock so that nodes starting together do not race, and returns the names
// of those it applied. It refuses a database migrated by a newer sekisho.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	return migrate(ctx, pool, true)
}

// pending reports the migrations the database lacks without applying them.
func pending(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	return migrate(ctx, pool, false)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, apply bool) ([]string, error) {
	all, err := migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLock)); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLock))

	var done []string
	for _, m := range all {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return done, err
		}
		have, err := applied(ctx, tx, apply)
		if err != nil {
			tx.Rollback(ctx)
			return done, fmt.Errorf("read the applied migrations: %w", err)
		}
		for v := range have {
			if v > len(all) {
				tx.Rollback(ctx)
				return done, fmt.Errorf("the database schema is at version %d, newer than this sekisho's %d: run a sekisho at least as new as the one that migrated it", v, len(all))
			}
		}
		if have[m.version] {
			tx.Rollback(ctx)
			continue
		}
		if !apply {
			tx.Rollback(ctx)
			done = append(done, m.name)
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			tx.Rollback(ctx)
			return done, fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			tx.Rollback(ctx)
			return done, fmt.Errorf("migration %s: %w", m.name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return done, fmt.Errorf("migration %s: %w", m.name, err)
		}
		done = append(done, m.name)
	}
	return done, nil
}
