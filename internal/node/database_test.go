package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

func TestDatabaseSection(t *testing.T) {
	valid, _ := nodetest.Config(t)
	noState := strings.Replace(valid, "state: state/sekisho.db\n", "", 1)
	for _, tc := range []struct {
		name, cfg, err string
		postgres       bool
	}{
		{name: "sqlite", cfg: valid},
		{name: "postgres", cfg: noState + "\ndatabase:\n  url: postgres://sekisho@db.example.com:5432/sekisho?sslmode=verify-full\n", postgres: true},
		{name: "manual", cfg: noState + "\ndatabase:\n  url: postgresql://sekisho@db:5432/s\n  migrations: manual\n  password_file: pw\n  max_connections: 20\n", postgres: true},
		{name: "neither", cfg: noState, err: "state is required (path of the SQLite state file), or database.url"},
		{name: "both", cfg: valid + "\ndatabase:\n  url: postgres://sekisho@db:5432/s\n", err: "state and database.url are both set"},
		{name: "password in url", cfg: noState + "\ndatabase:\n  url: postgres://sekisho:hunter2@db:5432/s\n", err: "holds a password: put it in database.password_file"},
		{name: "not postgres", cfg: noState + "\ndatabase:\n  url: mysql://db/s\n", err: "want postgres://user@host:port/database"},
		{name: "migrations", cfg: noState + "\ndatabase:\n  url: postgres://sekisho@db/s\n  migrations: sometimes\n", err: `database.migrations "sometimes": use auto or manual`},
		{name: "options without url", cfg: valid + "\ndatabase:\n  migrations: manual\n", err: "database: url is required"},
		{name: "node name", cfg: valid + "\nnode_name: Node 1\n", err: `node_name "Node 1"`},
		{name: "too few connections", cfg: noState + "\ndatabase:\n  url: postgres://sekisho@db/s\n  max_connections: 2\n", err: "database.max_connections 2: use at least 4"},
	} {
		cfg, err := ParseConfig(strings.NewReader(tc.cfg), "sekisho.yaml")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v; want an error saying %q", tc.name, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == "" && cfg.Postgres() != tc.postgres:
			t.Errorf("%s: on PostgreSQL %v, want %v", tc.name, cfg.Postgres(), tc.postgres)
		case tc.err == "" && cfg.NodeName == "":
			t.Errorf("%s: no node name by default", tc.name)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the password: %v", tc.name, err)
		}
	}
}

// The password file must be the operator's alone, and a database that
// does not answer is named in a clear error.
func TestOpenStorePostgresErrors(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o644)
	path := nodetest.WriteConfig(t, func(c string) string {
		return strings.Replace(c, "state: state/sekisho.db\n", "", 1) +
			"\ndatabase:\n  url: postgres://sekisho@127.0.0.1:1/sekisho?connect_timeout=2\n  password_file: " + pw + "\n"
	})
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("a password file readable by others: %v", err)
	}
	os.Chmod(pw, 0o600)
	_, err = OpenStore(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL at 127.0.0.1:1/sekisho does not answer") || strings.Contains(err.Error(), "secret") {
		t.Errorf("PostgreSQL down: %v; want it named, without the password", err)
	}
	if _, err := MigrateDatabase(context.Background(), cfg); err == nil || errors.Is(err, pgstore.ErrSchemaBehind) {
		t.Errorf("db migrate with PostgreSQL down: %v", err)
	}
}

// On PostgreSQL a zone kept in the local spool is named: other nodes
// cannot replay its recordings.
func TestStoreTableWarnsOfLocalZonesOnPostgres(t *testing.T) {
	valid, _ := nodetest.Config(t)
	for _, tc := range []struct {
		cfg  string
		warn bool
	}{
		{valid, false},
		{strings.Replace(valid, "state: state/sekisho.db\n", "", 1) + "\ndatabase:\n  url: postgres://sekisho@db/s\n", true},
	} {
		cfg, err := ParseConfig(strings.NewReader(tc.cfg), "sekisho.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := cfg.WriteStoreTable(&b); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(b.String(), "stay on the disk of the node that made them"); got != tc.warn {
			t.Errorf("postgres %v: warning %v, want %v:\n%s", cfg.Postgres(), got, tc.warn, b.String())
		}
	}
}
