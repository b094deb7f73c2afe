package node

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sekisho/sekisho/broker"
)

// Events that do not add up (an end without a start, a start audited
// twice, a detail that is not JSON) never make a gauge wrong or negative.
func TestMetricsObserveOddEvents(t *testing.T) {
	m := newBastionMetrics(prometheus.NewRegistry())
	start := broker.AuditEvent{Kind: broker.EventSessionStart, Session: "s1",
		Detail: `{"affiliate":"ops-cn","residency":"SG","cross_border":true}`}
	m.observe(start)
	m.observe(start)
	m.observe(broker.AuditEvent{Kind: broker.EventSessionEnd, Session: "unknown", Detail: `{"bytes_in":5,"bytes_out":7}`})
	m.observe(broker.AuditEvent{Kind: broker.EventSessionStart, Session: "s2", Detail: "not json"})
	m.observe(broker.AuditEvent{Kind: broker.EventDecision, Detail: "{"})
	m.observe(broker.AuditEvent{Kind: broker.EventSessionEnd, Session: "s1", Detail: `{"bytes_in":-1,"bytes_out":10}`})

	if n := testutil.ToFloat64(m.active.WithLabelValues("ops-cn", "SG", "true")); n != 0 {
		t.Errorf("active sessions %v after s1 started and ended, want 0", n)
	}
	if n := testutil.ToFloat64(m.started.WithLabelValues("ops-cn", "SG", "true")); n != 2 {
		t.Errorf("started %v, want 2 (each audit event counts)", n)
	}
	if n := testutil.ToFloat64(m.bytes.WithLabelValues("out")); n != 17 {
		t.Errorf("bytes out %v, want 17", n)
	}
	if n := testutil.ToFloat64(m.bytes.WithLabelValues("in")); n != 5 {
		t.Errorf("bytes in %v, want 5 (a negative count adds nothing)", n)
	}
	if n := testutil.ToFloat64(m.events.WithLabelValues(string(broker.EventSessionStart))); n != 3 {
		t.Errorf("session.start events %v, want 3", n)
	}
}
