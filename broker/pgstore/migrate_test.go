package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
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

// Operators who migrate by hand run nodes as a role that may read and
// write the tables but not create any: such a node opens a current
// database, and is told what to run on one that lacks migrations.
func TestManualMigrationsWithoutCreatePrivilege(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	owner := open(t, dsn)
	// The role's name is the database's, so that parallel tests do not
	// share one (roles are the server's, not the database's).
	var db string
	if err := owner.Pool().QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	role := "node_" + db
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ` + role,
	} {
		if _, err := owner.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	nodeDSN := strings.Replace(dsn, "//sekisho@", "//"+role+"@", 1)
	node, err := pgstore.Open(ctx, nodeDSN, pgstore.Options{ManualMigrations: true})
	if err != nil {
		t.Fatalf("Open as a role without CREATE of a current database: %v", err)
	}
	defer node.Close()
	if _, err := node.CreateRequest(ctx, broker.AccessRequest{Technician: "li", Target: "db-jp-01", State: broker.RequestPending,
		Needed: 1, Duration: time.Hour, Created: time.Now()}); err != nil {
		t.Errorf("CreateRequest as the node's role: %v", err)
	}

	// A database this sekisho has not migrated yet (another fresh one,
	// where the role may not create either).
	fresh := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `REVOKE CREATE ON SCHEMA public FROM PUBLIC`); err != nil {
		t.Fatal(err)
	}
	_, err = pgstore.Open(ctx, strings.Replace(fresh, "//sekisho@", "//"+role+"@", 1), pgstore.Options{ManualMigrations: true})
	if !errors.Is(err, pgstore.ErrSchemaBehind) || !strings.Contains(fmt.Sprint(err), "sekisho db migrate") {
		t.Errorf("Open as a role without CREATE of a fresh database: %v; want ErrSchemaBehind and what to run", err)
	}
}

// A database of the schema before sessions said whether they were
// moderated (migration 0007) gets the column on open; its sessions read
// as unmoderated, and new ones keep what they were.
func TestMigrationAddsModeratedToOlderSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	// A database at version 6, with a session: the current schema taken
	// back to it.
	before := open(t, dsn)
	if _, err := before.Pool().Exec(ctx, `ALTER TABLE sessions DROP COLUMN moderated;
		DELETE FROM schema_migrations WHERE version = 7;
		INSERT INTO sessions (id, technician, affiliate, affiliate_country, source, target, target_address, residency, login,
			cross_border, rule, trace, cert_serial, cert_key_id, started_at, recording)
		VALUES ('old', 'li', 'ops-cn', 'CN', '203.0.113.5:4000', 'db-jp-01', '10.0.0.1:22', 'JP', 'ops',
			true, 'r', '[]', '1', 'k', '2026-12-01T09:00:00Z', 'old')`); err != nil {
		t.Fatal(err)
	}

	s := open(t, dsn)
	if got, want := appliedVersions(t, dsn), allVersions(); !slices.Equal(got, want) {
		t.Errorf("schema_migrations = %v, want %v", got, want)
	}
	old, err := s.Session(ctx, "old")
	if err != nil || old.Moderated || old.Technician != "li" || !old.CrossBorder {
		t.Errorf("the older session: %+v, %v; want it read, unmoderated", old, err)
	}
	r := &broker.SessionRecord{ID: "new", Technician: "li", CrossBorder: true, Moderated: true, StartedAt: time.Now()}
	if err := s.StartSession(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Session(ctx, "new"); err != nil || !got.Moderated {
		t.Errorf("a moderated session after the migration: %+v, %v", got, err)
	}
}
