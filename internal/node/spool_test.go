package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// flaky is a store that an outage can take down.
type flaky struct {
	broker.Store
	down    atomic.Bool
	writeOf atomic.Pointer[error] // when set, audit writes fail with it
}

var errOutage = errors.New("connection refused")

func (f *flaky) Audit(ctx context.Context, e broker.AuditEvent) error {
	if f.down.Load() {
		return errOutage
	}
	if err := f.writeOf.Load(); err != nil {
		return *err
	}
	return f.Store.Audit(ctx, e)
}

func (f *flaky) EndSession(ctx context.Context, id string, e broker.SessionEnd) error {
	if f.down.Load() {
		return errOutage
	}
	return f.Store.EndSession(ctx, id, e)
}

func (f *flaky) Locks(ctx context.Context, now time.Time) ([]broker.Lock, error) {
	if f.down.Load() {
		return nil, errOutage
	}
	return f.Store.Locks(ctx, now)
}

func TestWriteSpoolKeepsWritesThroughAnOutage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := &flaky{Store: st}
	path := filepath.Join(dir, "register-spool.jsonl")
	w := newWriteSpool(f, path, slog.New(slog.DiscardHandler))
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	if err := st.StartSession(ctx, &broker.SessionRecord{ID: "s1", StartedAt: at, Recording: "s1"}); err != nil {
		t.Fatal(err)
	}
	w.Audit(ctx, broker.AuditEvent{At: at, Kind: "before"})
	f.down.Store(true)
	for _, k := range []broker.EventKind{"during-1", "during-2"} {
		if err := w.Audit(ctx, broker.AuditEvent{At: at, Kind: k}); err != nil {
			t.Fatalf("an audit event during the outage: %v", err)
		}
	}
	if err := w.EndSession(ctx, "s1", broker.SessionEnd{At: at.Add(time.Minute), Reason: "client closed"}); err != nil {
		t.Fatalf("a session end during the outage: %v", err)
	}
	w.flush(ctx) // still down: nothing moves
	if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") != 3 {
		t.Fatalf("the spool holds %q, want 3 writes", b)
	}
	f.down.Store(false)
	// Written after the outage but before the flush: it waits its turn.
	w.Audit(ctx, broker.AuditEvent{At: at, Kind: "after"})
	w.flush(ctx)
	events, _ := st.AuditEvents(ctx, 10)
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, string(e.Kind))
	}
	if got := strings.Join(kinds, " "); got != "before during-1 during-2 after" {
		t.Errorf("audit log %q, want the outage's events in order", got)
	}
	if s, _ := st.Session(ctx, "s1"); s.EndReason != "client closed" {
		t.Errorf("the session that ended during the outage: %+v", s)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spool is still there after the flush: %v", err)
	}
	// A standby that reads but refuses writes (a failover) is an outage:
	// the events wait; a write refused for what it holds does not.
	var readOnly error = &pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}
	f.writeOf.Store(&readOnly)
	w.Audit(ctx, broker.AuditEvent{At: at, Kind: "failover"})
	w.flush(ctx)
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "failover") {
		t.Errorf("an audit event refused by a read-only standby was dropped: spool %q", b)
	}
	var constraint error = &pgconn.PgError{Code: "23505", Message: "duplicate key"}
	f.writeOf.Store(&constraint)
	w.flush(ctx)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a write refused for ever blocks the spool: %v", err)
	}
	f.writeOf.Store(nil)

	// A write the store refuses while it answers is not kept for ever.
	f.down.Store(true)
	w.EndSession(ctx, "s1", broker.SessionEnd{At: at.Add(time.Minute), Reason: "x"})
	f.down.Store(false)
	os.WriteFile(path, []byte("{\"op\":\"mystery\"}\n"), 0o600)
	w.flush(ctx)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a write refused for ever blocks the spool: %v", err)
	}
}
