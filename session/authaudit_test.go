package session

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

func TestFailedAuthenticationsAreAuditedWithoutFlooding(t *testing.T) {
	var events []broker.AuditEvent
	a := newAuthAuditor(func(_ context.Context, e broker.AuditEvent) { events = append(events, e) })
	a.max = 3
	now := time.Now()
	for i := 0; i < 100; i++ {
		a.failed("mallory+db", "192.0.2.1:4000", "publickey", "SHA256:x", now)
	}
	a.failed("mallory+db", "192.0.2.2:4000", "publickey", "SHA256:x", now)
	a.failed("eve+db", "192.0.2.1:4001", "publickey", "SHA256:x", now)
	a.failed("x+db", "192.0.2.9:1", "publickey", "SHA256:x", now) // beyond the pairs tracked
	if len(events) != 3 {
		t.Fatalf("%d audit events, want 3 (one per login and address)", len(events))
	}
	if events[0].Kind != broker.EventAuthFailed || !strings.Contains(events[0].Detail, `"login":"mallory+db"`) {
		t.Errorf("event %+v", events[0])
	}
	// After the window, the same pair is recorded again.
	a.failed("mallory+db", "192.0.2.1:4000", "publickey", "SHA256:x", now.Add(2*time.Minute))
	if len(events) != 4 {
		t.Errorf("%d audit events after the window, want 4", len(events))
	}
	hardening.Report(t, "24", "103 failed authentications (100 from one login and address, 3 from other pairs, the last beyond the %d pairs tracked), then one more after the window: %d audit events, one per login and address per window", a.max, len(events))
}
