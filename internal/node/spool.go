package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sekisho/sekisho/broker"
)

// writeSpool keeps the register's writes that cannot wait, audit events,
// session ends and recording seals, when the store does not take them
// (PostgreSQL restarting, a network cut): each goes to a local file,
// synced, and is written to the store, in order, once it answers again.
// Nothing audited is lost to an outage of the database, and a session
// that ended during one is not left live in the register.
//
// A write that reaches the store and then the file before the file is
// cleared (a crash in between) is written again at the next start: an
// audit event may then appear twice; ends and seals are the same twice.
type writeSpool struct {
	broker.Store
	path string
	log  *slog.Logger

	mu      sync.Mutex
	pending bool          // the file may hold writes not yet in the store
	kick    chan struct{} // wakes the flusher
}

// spooledWrite is one line of the spool file.
type spooledWrite struct {
	Op    string             `json:"op"` // audit, end, seal
	Event *broker.AuditEvent `json:"event,omitempty"`
	ID    string             `json:"id,omitempty"`
	End   *broker.SessionEnd `json:"end,omitempty"`
	Head  string             `json:"head,omitempty"`
	N     int                `json:"chunks,omitempty"`
	Done  bool               `json:"complete,omitempty"`
}

func newWriteSpool(st broker.Store, path string, log *slog.Logger) *writeSpool {
	w := &writeSpool{Store: st, path: path, log: log, kick: make(chan struct{}, 1)}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		w.pending = true
	}
	return w
}

// Audit writes e to the store, or to the spool if the store does not take
// it or older writes still wait there (the log keeps its order).
func (w *writeSpool) Audit(ctx context.Context, e broker.AuditEvent) error {
	return w.write(ctx, spooledWrite{Op: "audit", Event: &e}, func() error { return w.Store.Audit(ctx, e) })
}

// EndSession is the store's, spooled likewise; a session the register
// does not know is no outage.
func (w *writeSpool) EndSession(ctx context.Context, id string, end broker.SessionEnd) error {
	return w.write(ctx, spooledWrite{Op: "end", ID: id, End: &end}, func() error { return w.Store.EndSession(ctx, id, end) })
}

// SetRecordingSeal is the store's, spooled likewise.
func (w *writeSpool) SetRecordingSeal(ctx context.Context, id, head string, chunks int, complete bool) error {
	return w.write(ctx, spooledWrite{Op: "seal", ID: id, Head: head, N: chunks, Done: complete},
		func() error { return w.Store.SetRecordingSeal(ctx, id, head, chunks, complete) })
}

func (w *writeSpool) write(ctx context.Context, sw spooledWrite, direct func() error) error {
	w.mu.Lock()
	pending := w.pending
	w.mu.Unlock()
	if !pending {
		err := direct()
		if settled(err) {
			return err
		}
		w.log.Error("the state store does not take a write; it is kept in the local spool until it does", "op", sw.Op, "spool", w.path, "err", err)
	}
	if err := w.append(sw); err != nil {
		return fmt.Errorf("the state store is unavailable and the local spool too: %w", err)
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return nil
}

func (w *writeSpool) append(sw spooledWrite) error {
	line, err := json.Marshal(sw)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	w.pending = true
	return f.Close()
}

// run writes what the spool holds to the store every interval, and at
// once when something is spooled, until ctx ends.
func (w *writeSpool) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		w.flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// flush writes the spooled writes to the store in order, and removes
// from the file those that are in. A write the store refuses while it
// answers otherwise (it would be refused for ever) is logged and
// dropped; one refused for an outage stops the flush until the next try.
// The lock is not held while the store is written to, so that writes
// spooled meanwhile never wait on it: they are appended after what was
// read, which is the part removed.
func (w *writeSpool) flush(ctx context.Context) {
	w.mu.Lock()
	if !w.pending {
		w.mu.Unlock()
		return
	}
	b, err := os.ReadFile(w.path)
	w.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Error("the local spool of register writes cannot be read", "spool", w.path, "err", err)
		return
	}
	done, n := 0, 0
	for len(b[done:]) > 0 {
		line, _, ok := bytes.Cut(b[done:], []byte("\n"))
		if !ok {
			break // a line being appended: the next flush has it whole
		}
		var sw spooledWrite
		if err := json.Unmarshal(line, &sw); err != nil {
			w.log.Error("a line of the local spool of register writes is not one; dropped", "spool", w.path, "err", err)
		} else if err := w.apply(ctx, sw); !settled(err) {
			if !refusedForEver(err) {
				break // an outage: this write and the ones after it wait
			}
			w.log.Error("the state store refuses a spooled write for what it holds; dropped", "op", sw.Op, "session", sw.ID, "err", err)
		}
		done += len(line) + 1
		n++
	}
	if done == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, err := os.ReadFile(w.path)
	if err != nil || len(cur) < done {
		w.log.Error("the local spool of register writes changed under its flush", "spool", w.path, "err", err)
		return
	}
	if rest := cur[done:]; len(rest) > 0 {
		if err := writeFileAtomic(w.path, rest); err != nil {
			w.log.Error("the local spool of register writes cannot be rewritten", "spool", w.path, "err", err)
		}
		return
	}
	if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Error("the local spool of register writes cannot be emptied", "spool", w.path, "err", err)
		return
	}
	w.pending = false
	w.log.Info("the state store took the writes kept while it was unavailable", "writes", n)
}

// settled reports whether a write needs no more trying: it is in, its
// session is unknown, or a survivor took its session over.
func settled(err error) bool {
	return err == nil || errors.Is(err, broker.ErrNotFound) || errors.Is(err, broker.ErrTakenOver)
}

// refusedForEver reports whether the store refused a write for what it
// holds (a data or constraint error), which no retry changes. Anything
// else (a connection refused, a timeout, a read-only standby during a
// failover) is an outage: the write waits.
func refusedForEver(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23")
	}
	return errors.Is(err, errUnknownWrite)
}

var errUnknownWrite = errors.New("unknown spooled write")

func (w *writeSpool) apply(ctx context.Context, sw spooledWrite) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch sw.Op {
	case "audit":
		if sw.Event != nil {
			return w.Store.Audit(ctx, *sw.Event)
		}
	case "end":
		if sw.End != nil {
			return w.Store.EndSession(ctx, sw.ID, *sw.End)
		}
	case "seal":
		return w.Store.SetRecordingSeal(ctx, sw.ID, sw.Head, sw.N, sw.Done)
	}
	return fmt.Errorf("%w %q", errUnknownWrite, sw.Op)
}
