package storetest

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// store is what the node and the console ask of a state store.
type store interface {
	broker.Store
	IndexSessionText(ctx context.Context, id string, t broker.SessionText) error
	SessionsToIndex(ctx context.Context, limit int) ([]string, error)
	TextSnippets(ctx context.Context, query string, ids []string) (map[string]string, error)
	Close() error
}

// backend is a kind of state store.
type backend struct {
	name string
	// tick is the finest step of time the backend keeps: a nanosecond on
	// SQLite, a microsecond on PostgreSQL. Tests set times apart by ticks,
	// so that each backend is checked at its own precision.
	tick time.Duration
	// base is a fixed instant, to the tick, in a zone other than UTC, so
	// that round trips are checked to the tick and for the zone.
	base time.Time
	new  func(t *testing.T, b backend) env
}

// env is one test's data on one backend, empty at the start.
type env struct {
	backend
	// open opens a handle on the data: the first is the test's store,
	// others are another process on the SQLite file, or another node on
	// the PostgreSQL database. Each is closed when the test ends.
	open func(t *testing.T) store
	// typed returns the typed text of a session as the text index holds
	// it, read from the database directly.
	typed func(t *testing.T, id string) string
}

// base has a nanosecond part; PostgreSQL's base is it cut to microseconds.
var base = time.Date(2025, 3, 1, 18, 0, 0, 123456789, time.FixedZone("JST", 9*3600))

var backends = []backend{
	{name: "sqlite", tick: time.Nanosecond, base: base, new: newSQLite},
	{name: "postgres", tick: time.Microsecond, base: base.Truncate(time.Microsecond), new: newPostgres},
}

func newSQLite(t *testing.T, b backend) env {
	path := filepath.Join(t.TempDir(), "sekisho.db")
	return env{
		backend: b,
		open: func(t *testing.T) store {
			t.Helper()
			s, err := sqlitestore.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		typed: func(t *testing.T, id string) string {
			t.Helper()
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var typed string
			if err := db.QueryRow(`SELECT typed FROM session_fts JOIN session_text ON session_text.n=session_fts.rowid
				WHERE session_text.id=?`, id).Scan(&typed); err != nil {
				t.Fatal(err)
			}
			return typed
		},
	}
}

func newPostgres(t *testing.T, b backend) env {
	dsn := pgtest.NewDatabase(t)
	return env{
		backend: b,
		open: func(t *testing.T) store {
			t.Helper()
			s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		typed: func(t *testing.T, id string) string {
			t.Helper()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var typed string
			if err := conn.QueryRow(ctx, `SELECT typed FROM session_text WHERE id=$1`, id).Scan(&typed); err != nil {
				t.Fatal(err)
			}
			return typed
		},
	}
}

// forEachBackend runs test as a subtest per backend, each with data of
// its own, in parallel with each other and with the other tests.
func forEachBackend(t *testing.T, test func(t *testing.T, e env)) {
	t.Helper()
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b.new(t, b))
		})
	}
}
