package pgstore_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// appliedVersions lists schema_migrations, oldest first.
func appliedVersions(t *testing.T, dsn string) []int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version, applied_at`)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func allVersions() []int {
	var want []int
	for v := 1; v <= pgstore.SchemaVersion(); v++ {
		want = append(want, v)
	}
	return want
}

// Nodes starting together on a new database all come up: one migrates
// under the advisory lock, the others wait and find nothing to do.
func TestOpenConcurrentlyMigratesOnce(t *testing.T) {
	t.Parallel()
	if pgstore.SchemaVersion() < 1 {
		t.Fatalf("SchemaVersion() = %d: the migrations are not embedded", pgstore.SchemaVersion())
	}
	dsn := pgtest.NewDatabase(t)
	const nodes = 4
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: Open: %v", i, err)
		}
	}
	got, want := appliedVersions(t, dsn), allVersions()
	if !slices.Equal(got, want) {
		t.Errorf("schema_migrations = %v, want %v, each once", got, want)
	}
	// And a node started later applies nothing again.
	open(t, dsn)
	if got := appliedVersions(t, dsn); !slices.Equal(got, want) {
		t.Errorf("schema_migrations after another Open = %v, want %v", got, want)
	}
}

// With manual migrations, a database that lacks some is refused with what
// to run, and left as it was.
func TestManualMigrationsRefuseAFreshDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	s, err := pgstore.Open(ctx, dsn, pgstore.Options{ManualMigrations: true})
	if err == nil {
		s.Close()
		t.Fatal("Open with ManualMigrations on a fresh database succeeded")
	}
	if !errors.Is(err, pgstore.ErrSchemaBehind) {
		t.Errorf("Open err = %v, want ErrSchemaBehind", err)
	}
	if !strings.Contains(err.Error(), "sekisho db migrate") {
		t.Errorf("Open err = %q, want it to name sekisho db migrate", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname='public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("the refused database has %d tables, want none", tables)
	}

	// Migrated (as sekisho db migrate does), it opens.
	migrated := open(t, dsn)
	if _, err := pgstore.Migrate(ctx, migrated.Pool()); err != nil {
		t.Errorf("Migrate of a current database: %v", err)
	}
	s, err = pgstore.Open(ctx, dsn, pgstore.Options{ManualMigrations: true})
	if err != nil {
		t.Fatalf("Open with ManualMigrations on a current database: %v", err)
	}
	s.Close()
}

// A database migrated by a newer sekisho is refused, automatic migration
// or not: this one would write a schema it does not know.
func TestNewerSchemaIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	s := open(t, dsn)
	newer := pgstore.SchemaVersion() + 1
	if _, err := s.Pool().Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
		newer, strconv.Itoa(newer)+"_from_the_future.sql"); err != nil {
		t.Fatal(err)
	}
	for _, opt := range []pgstore.Options{{}, {ManualMigrations: true}} {
		s, err := pgstore.Open(ctx, dsn, opt)
		if err == nil {
			s.Close()
			t.Errorf("Open(%+v) of a database at version %d succeeded", opt, newer)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"version " + strconv.Itoa(newer), "newer than this sekisho", strconv.Itoa(pgstore.SchemaVersion())} {
			if !strings.Contains(msg, want) {
				t.Errorf("Open(%+v) err = %q, want it to say %q", opt, msg, want)
			}
		}
		if errors.Is(err, pgstore.ErrSchemaBehind) {
			t.Errorf("Open(%+v) err = %v says the schema is behind", opt, err)
		}
	}
	if got := appliedVersions(t, dsn); !slices.Equal(got, append(allVersions(), newer)) {
		t.Errorf("schema_migrations = %v after the refusals, want it untouched", got)
	}
}
