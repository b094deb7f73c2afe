package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/broker/storecopy"
	"github.com/sekisho/sekisho/web"
)

// Store is what a node keeps its state in: the broker's register and
// audit log, the console's text index of recordings, and Close. Every
// backend OpenStore can choose gives all of it.
type Store interface {
	web.Store
	// Close releases the store; the node calls it last when it stops.
	Close() error
}

// OpenStore opens the state store cfg names: PostgreSQL at
// cfg.Database.URL, bringing its schema up to date unless migrations are
// manual, or the SQLite file at cfg.State, creating it if there is none.
// It is the one place that chooses the store's backend, for a node and
// for the commands that read or change its state.
func OpenStore(ctx context.Context, cfg *Config) (Store, error) {
	if cfg.Postgres() {
		opt, err := postgresOptions(cfg)
		if err != nil {
			return nil, err
		}
		return pgstore.Open(ctx, cfg.Database.URL, opt)
	}
	path := cfg.Path(cfg.State)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// postgresOptions are the options of cfg's database section, its
// password read from its file.
func postgresOptions(cfg *Config) (pgstore.Options, error) {
	d := cfg.Database
	opt := pgstore.Options{ManualMigrations: d.Migrations == "manual", MaxConns: int32(d.MaxConnections)}
	if d.PasswordFile != "" {
		path := cfg.Path(d.PasswordFile)
		fi, err := os.Stat(path)
		if err != nil {
			return opt, fmt.Errorf("database.password_file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return opt, fmt.Errorf("database.password_file %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return opt, fmt.Errorf("database.password_file: %w", err)
		}
		opt.Password = strings.TrimRight(string(b), "\r\n")
	}
	return opt, nil
}

// MigrateDatabase applies the schema migrations cfg's PostgreSQL database
// lacks and returns their names: what sekisho db migrate does for
// operators who migrate by hand.
func MigrateDatabase(ctx context.Context, cfg *Config) ([]string, error) {
	if !cfg.Postgres() {
		return nil, fmt.Errorf("%s has no database.url: the SQLite state file is migrated by the node itself", cfg.File())
	}
	opt, err := postgresOptions(cfg)
	if err != nil {
		return nil, err
	}
	opt.ManualMigrations = true
	opt.OnlyConnect = true
	s, err := pgstore.Open(ctx, cfg.Database.URL, opt)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return pgstore.Migrate(ctx, s.Pool())
}

// CopyFromSQLite moves everything in the SQLite state file from into
// cfg's PostgreSQL database, migrating its schema first; the database
// must hold no state yet. It is sekisho db copy.
func CopyFromSQLite(ctx context.Context, cfg *Config, from string) (storecopy.Counts, error) {
	if !cfg.Postgres() {
		return nil, fmt.Errorf("%s has no database.url: db copy moves state into the PostgreSQL database it names", cfg.File())
	}
	if _, err := os.Stat(from); err != nil {
		return nil, err
	}
	opt, err := postgresOptions(cfg)
	if err != nil {
		return nil, err
	}
	opt.ManualMigrations = false
	s, err := pgstore.Open(ctx, cfg.Database.URL, opt)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return storecopy.SQLiteToPostgres(ctx, from, s.Pool())
}
