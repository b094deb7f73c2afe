package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/sekisho/sekisho/internal/node"
)

// cmdDB runs sekisho db migrate and sekisho db copy.
func cmdDB(ctx context.Context, args []string) error {
	sub, rest := subcommand(args)
	switch sub {
	case "migrate":
		return cmdDBMigrate(ctx, rest)
	case "copy":
		return cmdDBCopy(ctx, rest)
	}
	return usageError{msg: "db: the subcommands are migrate and copy"}
}

// cmdDBMigrate applies the schema migrations the config's PostgreSQL
// database lacks, for operators who set database.migrations: manual.
func cmdDBMigrate(ctx context.Context, args []string) error {
	cfg, _, err := parseWithConfig("db migrate", args, nil)
	if err != nil {
		return err
	}
	done, err := node.MigrateDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	if len(done) == 0 {
		fmt.Println("the database schema is up to date")
		return nil
	}
	for _, m := range done {
		fmt.Println("applied", m)
	}
	return nil
}

// cmdDBCopy moves a node's SQLite state into the config's PostgreSQL
// database, which must be empty.
func cmdDBCopy(ctx context.Context, args []string) error {
	var from string
	cfg, _, err := parseWithConfig("db copy", args, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "from", "", "the SQLite state file to copy (the state: of the old config); stop its node first")
	})
	if err != nil {
		return err
	}
	if from == "" {
		return usageError{msg: "db copy: --from SQLITE-FILE is required"}
	}
	counts, err := node.CopyFromSQLite(ctx, cfg, from)
	if err != nil {
		return fmt.Errorf("db copy: %w", err)
	}
	fmt.Printf("copied %s from %s\n", counts, from)
	return nil
}
