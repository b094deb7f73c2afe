package node

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sekisho/sekisho/broker"
)

// A sealed secret that no longer opens has a metric of its own, whose
// help says what to do, besides its count among the audit events.
func TestMetricsUnopenableSecret(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newBastionMetrics(reg)
	m.observe(broker.AuditEvent{Kind: broker.EventMFAFailed, Technician: "li"})
	m.observe(broker.AuditEvent{Kind: broker.EventMFAUnopenable, Technician: "li"})
	m.observe(broker.AuditEvent{Kind: broker.EventMFAUnopenable, Technician: "wei"})
	if n := testutil.ToFloat64(m.unopenable); n != 2 {
		t.Errorf("sekisho_mfa_unopenable_total %v, want 2", n)
	}
	if n := testutil.ToFloat64(m.events.WithLabelValues(string(broker.EventMFAUnopenable))); n != 2 {
		t.Errorf("audit events of kind mfa.unopenable %v, want 2", n)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "sekisho_mfa_unopenable_total" {
			if !strings.Contains(f.GetHelp(), "sekisho technician enroll-totp NAME") {
				t.Errorf("help %q does not say what to do", f.GetHelp())
			}
			return
		}
	}
	t.Error("sekisho_mfa_unopenable_total is not registered")
}
