package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sekisho/sekisho/broker/sqlitestore"
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

// OpenStore opens the state store cfg names, creating it if there is
// none. It is the one place that chooses the store's backend, for a node
// and for the commands that read or change its state: today the SQLite
// file at cfg.State.
func OpenStore(ctx context.Context, cfg *Config) (Store, error) {
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
