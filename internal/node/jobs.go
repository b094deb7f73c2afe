package node

import (
	"context"
	"crypto/ed25519"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// retentionJob is what the retention job needs of the config at start.
type retentionJob struct {
	cfg    *Config
	recDir string
	routes *recording.Routes
	key    ed25519.PublicKey
}

// runRetention deletes recordings past their zone's retention every
// interval (default 1h), keeping those under a legal hold, and audits
// every deletion. The node's own spool is its own to clear; the object
// stores are shared, and cleared once per interval for the whole cluster,
// by whichever node takes the job first.
func (n *Node) runRetention(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.expireRecordings(ctx, false)
		// A little less than the interval: the nodes' tickers drift.
		_, err := n.store.RunJob(ctx, "retention", interval-interval/10, func(ctx context.Context) error {
			n.expireRecordings(ctx, true)
			return nil
		})
		if err != nil && ctx.Err() == nil {
			n.log.Error("retention of the recording stores not run", "err", err)
		}
	}
}

// expireRecordings deletes the recordings past retention in the node's
// spool, or (stores) in the object stores.
func (n *Node) expireRecordings(ctx context.Context, stores bool) {
	j := n.retention
	holds, err := n.store.Holds(ctx)
	if err != nil {
		n.log.Error("legal holds unreadable: no recording is deleted", "err", err)
		return
	}
	held := map[string]bool{}
	for _, h := range holds {
		held[h.Session] = true
	}
	p := recording.RetentionPolicy{For: j.cfg.retentionFor, Held: func(id string) bool { return held[id] }, Key: j.key}
	now := time.Now()
	var (
		deleted []recording.Meta
		errs    []error
	)
	if !stores {
		deleted, errs = recording.ExpireLocal(j.recDir, p, now)
	}
	if stores {
		for _, st := range j.routes.ObjectStores() {
			d, e := st.Expire(ctx, p, now)
			deleted, errs = append(deleted, d...), append(errs, e...)
		}
	}
	for _, err := range errs {
		n.log.Error("retention: recording not deleted", "err", err)
	}
	for _, m := range deleted {
		n.brk.Audit(ctx, broker.AuditEvent{Kind: broker.EventRecordingDeleted, Technician: m.Technician, Target: m.Target, Session: m.ID,
			Detail: broker.JSONDetail(struct {
				Residency string `json:"residency"`
				Ended     string `json:"ended"`
				Retention string `json:"retention"`
			}{m.Residency, m.End.Format(time.RFC3339), j.cfg.retentionFor(m.Residency).String()})})
		n.log.Info("retention: recording deleted", "session", m.ID, "residency", m.Residency)
	}
}

// lockPoll is how often the store is asked for locks: a lock added by
// `sekisho lock` ends matching sessions within about this long.
const lockPoll = 250 * time.Millisecond

// watchLocks refreshes the locks in force and re-checks live sessions
// whenever they change, until ctx ends.
func (n *Node) watchLocks(ctx context.Context) {
	defer close(n.watcher)
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	// Rules can depend on the time (hours, days, now): live sessions are
	// re-checked every minute too.
	minute := time.NewTicker(time.Minute)
	defer minute.Stop()
	// Pending access requests expire on time even with nobody waiting.
	second := time.NewTicker(time.Second)
	defer second.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-second.C:
			// Once for the cluster: the node that holds the job's lock
			// expires every node's requests.
			// Bounded: this loop also applies locks, which must not wait
			// on a slow database.
			jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := n.store.RunJob(jctx, "request-expiry", 0, func(ctx context.Context) error {
				_, err := n.brk.ExpireRequests(ctx)
				return err
			})
			cancel()
			if err != nil && ctx.Err() == nil {
				n.log.Error("pending access requests cannot be expired", "err", err)
			}
			// Grants revoked elsewhere (another node) end sessions here:
			// each node re-checks its own live sessions.
			if ended := n.srv.RevalidateGrants(); ended > 0 {
				n.log.Warn("grants no longer in force: live sessions ended", "sessions", ended)
			}
			continue
		case <-minute.C:
			if ended := n.srv.Revalidate(); ended > 0 {
				n.log.Warn("rules no longer allow live sessions: ended", "sessions", ended)
			}
			continue
		case <-t.C:
		case <-n.lockKick:
		}
		changed, err := n.brk.RefreshLocks(ctx)
		if err != nil {
			if !failing && ctx.Err() == nil {
				n.log.Error("locks cannot be read; the last known locks stay in force", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if changed {
			if ended := n.srv.Revalidate(); ended > 0 {
				n.log.Warn("locks changed: live sessions ended", "sessions", ended)
			}
		}
	}
}
