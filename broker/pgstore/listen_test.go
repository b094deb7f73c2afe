package pgstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// listen runs s.Listen until the test ends and returns its changes.
func listen(t *testing.T, s *pgstore.Store) <-chan pgstore.Change {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan pgstore.Change, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.Listen(ctx, 10*time.Millisecond, func(c pgstore.Change) {
			select {
			case changes <- c:
			default:
				t.Errorf("listener's buffer full, change %+v dropped", c)
			}
		})
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return changes
}

// await returns the first change that match accepts, failing the test
// if none comes within a second.
func await(t *testing.T, changes <-chan pgstore.Change, what string, match func(pgstore.Change) bool) {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		select {
		case c := <-changes:
			if match(c) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s notified within a second", what)
		}
	}
}

// Another node's lock and request changes reach a listener at once.
func TestListen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	listener, writer := open(t, dsn), open(t, dsn)
	changes := listen(t, listener)
	// The first call says the listener is connected: anything may have
	// changed before.
	await(t, changes, "connection", func(c pgstore.Change) bool { return c == pgstore.Change{} })

	at := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	lock, err := writer.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "db-jp-01", Reason: "incident", By: "op", Created: at})
	if err != nil {
		t.Fatal(err)
	}
	await(t, changes, "lock added", func(c pgstore.Change) bool { return c.Kind == "lock" })
	if err := writer.RemoveLock(ctx, lock.ID); err != nil {
		t.Fatal(err)
	}
	await(t, changes, "lock removed", func(c pgstore.Change) bool { return c.Kind == "lock" })

	// Two requests, so that the ID is seen to be the one changed.
	for range 2 {
		if _, err := writer.CreateRequest(ctx, broker.AccessRequest{Technician: "li", Target: "db-jp-01", Reason: "INC-1",
			Duration: time.Hour, State: broker.RequestPending, Needed: 1, Created: at}); err != nil {
			t.Fatal(err)
		}
	}
	await(t, changes, "request 2 created", func(c pgstore.Change) bool { return c == pgstore.Change{Kind: "request", Request: 2} })
	if _, err := writer.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error { r.State = broker.RequestDenied; return nil }); err != nil {
		t.Fatal(err)
	}
	await(t, changes, "request 1 updated", func(c pgstore.Change) bool { return c == pgstore.Change{Kind: "request", Request: 1} })

	// An update that fn refuses changes nothing, and tells no one.
	refused := func(*broker.AccessRequest) error { return broker.ErrNotFound }
	if _, err := writer.UpdateRequest(ctx, 2, refused); err == nil {
		t.Fatal("UpdateRequest with a refusing fn succeeded")
	}
	if _, err := writer.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "marker", Created: at}); err != nil {
		t.Fatal(err)
	}
	// Notifications arrive in commit order: the marker lock comes after
	// any notification of the refused update.
	for {
		c := <-changes
		if c.Kind == "lock" {
			break
		}
		if c.Kind == "request" && c.Request == 2 {
			t.Errorf("a refused update of request 2 was notified")
		}
	}
}

// A listener whose connection is lost connects again, says that anything
// may have changed meanwhile, and hears changes again.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	listener, writer := open(t, dsn), open(t, dsn)
	changes := listen(t, listener)
	await(t, changes, "connection", func(c pgstore.Change) bool { return c == pgstore.Change{} })

	// The server ends the listener's session, as a restart or a failover
	// would.
	var ended int
	if err := writer.Pool().QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN '||$1`, pgstore.Channel).Scan(&ended); err != nil {
		t.Fatal(err)
	}
	if ended != 1 {
		t.Fatalf("ended %d listening sessions, want 1", ended)
	}
	await(t, changes, "reconnection", func(c pgstore.Change) bool { return c == pgstore.Change{} })
	if _, err := writer.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "db-jp-01", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	await(t, changes, "lock added after the reconnection", func(c pgstore.Change) bool { return c.Kind == "lock" })
}
