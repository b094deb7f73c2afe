package session

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// grantClock ends a session when its grant ends, warning the technician
// before (Config.GrantWarnings). A grant cut short while the session
// runs (a reload that lowered its rule's max_grant) moves the clock
// earlier, never later: the session then ends at the grant's new end,
// with the same warnings before it.
type grantClock struct {
	c  *conn
	id int64 // the request whose grant it is

	mu      sync.Mutex
	until   time.Time
	timers  []*time.Timer
	stopped bool
}

// grantTimers starts the clock of grant g and returns a function that
// stops it.
func (c *conn) grantTimers(g *broker.Grant) func() {
	k := &grantClock{c: c, id: g.RequestID}
	k.mu.Lock()
	k.arm(g.Until)
	k.mu.Unlock()
	c.grant.Store(k)
	return k.stop
}

// arm sets the timers for a grant ending at until, in place of any set
// before. k.mu is held.
func (k *grantClock) arm(until time.Time) {
	for _, t := range k.timers {
		t.Stop()
	}
	k.timers = k.timers[:0]
	k.until = until
	c, id := k.c, k.id
	left := time.Until(until)
	for _, before := range c.srv.cfg.GrantWarnings {
		if before >= left {
			continue
		}
		k.timers = append(k.timers, time.AfterFunc(left-before, func() {
			c.warn(fmt.Sprintf("the grant of request %d ends in %s (at %s); the session will end then",
				id, time.Until(until).Round(time.Second), until.UTC().Format("15:04:05 UTC")))
		}))
	}
	k.timers = append(k.timers, time.AfterFunc(left, func() {
		c.terminate(fmt.Sprintf("the grant of request %d ended at %s", id, until.UTC().Format("15:04:05 UTC")))
	}))
}

// cut moves the end of the grant to until when that is earlier than the
// end the clock keeps, and reports whether it did.
func (k *grantClock) cut(until time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped || !until.Before(k.until) {
		return false
	}
	k.arm(until)
	return true
}

func (k *grantClock) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	for _, t := range k.timers {
		t.Stop()
	}
}

// grantReadTimeout bounds reading a live session's grant.
const grantReadTimeout = 5 * time.Second

// followGrant moves the session's end to its grant's end as the store
// has it now, when the grant was cut short since the session started,
// and tells the technician why and when the session ends. A grant that
// has already ended, or was revoked, is StillAllowed's to end the
// session for.
func (c *conn) followGrant() {
	k, a := c.grant.Load(), c.srv.cfg.Access
	if k == nil || a == nil || c.ending.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grantReadTimeout)
	defer cancel()
	r, err := a.Request(ctx, k.id)
	if err != nil || r.State != broker.RequestApproved || !time.Now().Before(r.GrantEnd) || !k.cut(r.GrantEnd) {
		return
	}
	why := r.Revised
	if why == "" {
		why = "it ends earlier than when the session started"
	}
	c.srv.log.Warn("grant cut short: the session ends earlier", append(c.logArgs(), "request", r.ID, "until", r.GrantEnd, "why", why)...)
	c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventSessionGrantCut, Technician: c.id.tech.Name, Target: c.id.target.Name,
		Source: c.source, Session: c.sessionID, Detail: broker.JSONDetail(struct {
			Request int64     `json:"request"`
			Until   time.Time `json:"until"`
			Why     string    `json:"why"`
		}{r.ID, r.GrantEnd.UTC(), why})})
	c.warn(fmt.Sprintf("the grant of request %d was cut: %s; the session ends at %s (in %s)",
		r.ID, why, r.GrantEnd.UTC().Format("15:04:05 UTC"), time.Until(r.GrantEnd).Round(time.Second)))
}
