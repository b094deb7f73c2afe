package session

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// authAuditor writes failed authentications to the audit log, at most one
// event per login name and source address per window, with the count of
// failures it stands for, so that a flood of bad logins cannot fill the
// store (and each pair of who and where is still on record).
type authAuditor struct {
	audit  func(context.Context, broker.AuditEvent)
	window time.Duration
	max    int // pairs tracked at once; beyond, failures are only logged

	mu    sync.Mutex
	pairs map[string]*authPair
}

type authPair struct {
	first time.Time
	count int
}

func newAuthAuditor(audit func(context.Context, broker.AuditEvent)) *authAuditor {
	return &authAuditor{audit: audit, window: time.Minute, max: 10000, pairs: map[string]*authPair{}}
}

// failed records one failed authentication of user from source.
func (a *authAuditor) failed(user, source, method string, now time.Time) {
	host := source
	if h, _, err := net.SplitHostPort(source); err == nil {
		host = h
	}
	key := user + "\x00" + host
	a.mu.Lock()
	for k, p := range a.pairs {
		if now.Sub(p.first) > a.window {
			delete(a.pairs, k)
		}
	}
	p, ok := a.pairs[key]
	switch {
	case ok:
		p.count++
		a.mu.Unlock()
		return
	case len(a.pairs) >= a.max:
		a.mu.Unlock()
		return
	}
	a.pairs[key] = &authPair{first: now, count: 1}
	a.mu.Unlock()
	a.audit(context.Background(), broker.AuditEvent{Kind: broker.EventAuthFailed, Source: source,
		Detail: fmt.Sprintf(`{"login":%q,"method":%q,"note":"further failures of this login from this address within %s are not recorded one by one"}`,
			user, method, a.window)})
}
