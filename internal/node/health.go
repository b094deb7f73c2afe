package node

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// Health endpoints, on the console's listener and on the metrics
// listener, for load balancers and orchestrators:
//
//	/healthz  200 while the process serves HTTP (liveness);
//	/readyz   200 while the node can serve a session: Vault answers and
//	          is unsealed, the state store takes a write, the recording
//	          directory takes a write, and the node neither stands back
//	          (it lost the shared database) nor stops. 503 otherwise.
//
// Both answer without signing in and audit nothing: a balancer asks every
// second or so. What they say is short ("vault": "unreachable"); the
// reasons go to the log, once per change.

// Readiness check names, as /readyz reports them.
const (
	checkVault      = "vault"
	checkStore      = "store"
	checkRecordings = "recordings"
	checkNode       = "node"
)

// readyTimeout bounds one round of checks; readyFresh is how long a
// round's answer is given again, so that several balancers asking at once
// cost one round.
const (
	readyTimeout = 3 * time.Second
	readyFresh   = time.Second
)

// health answers /healthz and /readyz.
type health struct {
	node     string
	vault    func(context.Context) error
	store    func(context.Context) error
	recDir   func() error
	standing func() bool // the node stands back: its door is closed
	stopping atomic.Bool
	recBusy  atomic.Bool // a write probe of the recording directory runs
	log      *slog.Logger

	mu      sync.Mutex // held for a round of checks
	last    readiness
	lastAt  time.Time
	lastLog string // the failures last logged, "" when ready
}

// readiness is /readyz's answer.
type readiness struct {
	Status string            `json:"status"` // "ready" or "not ready"
	Checks map[string]string `json:"checks"` // check name → "ok" or what fails
}

func (r readiness) ready() bool { return r.Status == "ready" }

// check runs a round of checks, or gives the last one if it is fresh.
func (h *health) check(ctx context.Context) readiness {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastAt.IsZero() && time.Since(h.lastAt) < readyFresh {
		return h.last
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()

	type result struct {
		name, says string
		err        error
	}
	results := make(chan result, 3)
	go func() {
		err := h.vault(ctx)
		says := "ok"
		if err != nil {
			says = "unreachable"
			if errors.Is(err, broker.ErrVaultSealed) {
				says = "sealed"
			}
		}
		results <- result{checkVault, says, err}
	}()
	go func() {
		err := h.store(ctx)
		results <- result{checkStore, okOr(err, "not writable"), err}
	}()
	// A write to a disk that hangs (a stalled network mount) cannot be
	// cancelled: one probe at a time waits for it, and the rounds meanwhile
	// say the directory does not answer.
	if h.recBusy.CompareAndSwap(false, true) {
		go func() {
			defer h.recBusy.Store(false)
			err := h.recDir()
			results <- result{checkRecordings, okOr(err, "not writable"), err}
		}()
	} else {
		results <- result{checkRecordings, "no answer from the last probe yet", errors.New("the last write probe has not returned")}
	}

	r := readiness{Checks: map[string]string{checkNode: "ok"}}
	failed := map[string]string{}
	switch {
	case h.stopping.Load():
		r.Checks[checkNode] = "stopping"
	case h.standing():
		r.Checks[checkNode] = "standing back: it lost the shared database"
	}
	for range 3 {
		select {
		case res := <-results:
			r.Checks[res.name] = res.says
			if res.err != nil {
				failed[res.name] = res.err.Error()
			}
		case <-ctx.Done():
		}
	}
	for _, name := range []string{checkVault, checkStore, checkRecordings} {
		if _, ok := r.Checks[name]; !ok {
			r.Checks[name] = "no answer in " + readyTimeout.String()
			failed[name] = "no answer"
		}
	}
	if r.Checks[checkNode] != "ok" {
		failed[checkNode] = r.Checks[checkNode]
	}
	r.Status = "ready"
	if len(failed) > 0 {
		r.Status = "not ready"
	}
	h.logChange(failed)
	h.last, h.lastAt = r, time.Now()
	return r
}

func okOr(err error, says string) string {
	if err != nil {
		return says
	}
	return "ok"
}

// logChange logs when the node becomes not ready, when what fails
// changes, and when it is ready again: not at every probe.
func (h *health) logChange(failed map[string]string) {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(failed)) {
		b.WriteString(name + ": " + failed[name] + "; ")
	}
	now := b.String()
	if now == h.lastLog {
		return
	}
	if now == "" {
		h.log.Info("ready again: Vault, the state store and the recording directory answer")
	} else {
		h.log.Warn("not ready: balancers' /readyz checks fail", "node", h.node, "failing", strings.TrimSuffix(now, "; "))
	}
	h.lastLog = now
}

// serve answers /healthz and /readyz, and reports whether r was one of
// them.
func (h *health) serve(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz":
	default:
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "GET or HEAD only", http.StatusMethodNotAllowed)
		return true
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/healthz" {
		w.Write([]byte(`{"status":"alive"}` + "\n"))
		return true
	}
	res := h.check(r.Context())
	if !res.ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	b, _ := json.Marshal(res)
	w.Write(append(b, '\n'))
	return true
}

// wrap serves the health endpoints before next.
func (h *health) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.serve(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}
