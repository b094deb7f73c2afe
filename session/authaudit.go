package session

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// authAuditor writes failed authentications to the audit log, at most one
// event per login name and source address per window (the log has every
// one), so that a flood of bad logins cannot fill the store while each
// pair of who and where is still on record.
type authAuditor struct {
	audit  func(context.Context, broker.AuditEvent)
	window time.Duration
	max    int // pairs tracked at once; beyond, failures are only logged

	mu    sync.Mutex
	pairs map[string]time.Time // login and address → first failure in the window
}

func newAuthAuditor(audit func(context.Context, broker.AuditEvent)) *authAuditor {
	return &authAuditor{audit: audit, window: time.Minute, max: 10000, pairs: map[string]time.Time{}}
}

// failed records one failed authentication of user from source, with the
// fingerprint of the public key refused, if one was.
func (a *authAuditor) failed(user, source, method, key string, now time.Time) {
	pair := user + "\x00" + sourceHost(source)
	a.mu.Lock()
	for k, first := range a.pairs {
		if now.Sub(first) > a.window {
			delete(a.pairs, k)
		}
	}
	_, seen := a.pairs[pair]
	if seen || len(a.pairs) >= a.max {
		a.mu.Unlock()
		return
	}
	a.pairs[pair] = now
	a.mu.Unlock()
	a.audit(context.Background(), broker.AuditEvent{Kind: broker.EventAuthFailed, Source: source,
		Detail: broker.JSONDetail(struct {
			Login  string `json:"login"`
			Method string `json:"method"`
			Key    string `json:"key"`
			Note   string `json:"note"`
		}{user, method, key, fmt.Sprintf("further failures of this login from this address within %s are in the log only", a.window)})})
}
