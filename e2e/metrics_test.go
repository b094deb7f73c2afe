package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// scrape returns what sekisho's /metrics on port shows now.
func scrape(t *testing.T, port string) string {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitMetrics waits until /metrics shows every line of want.
func waitMetrics(t *testing.T, port string, want ...string) {
	t.Helper()
	var got string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = scrape(t, port)
		missing := ""
		for _, w := range want {
			if !strings.Contains(got, w+"\n") {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q after 30s:\n%s", missing, grepLines(got, "sekisho_"))
		}
		time.Sleep(20 * time.Millisecond) // polling the metrics for a condition, with a deadline
	}
}

// TestMetricsFollowSessions: what an operator's dashboard and alerts read
// from /metrics follows what happens: a cross-border session from ops-cn
// to SG is active while it runs, Vault's login and signature are counted
// and timed, a lock is counted in force and ends the session, and the
// audit events are counted by kind.
func TestMetricsFollowSessions(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", "\nmetrics:\n  listen: 127.0.0.1:"+port+"\nrules:\n", 1)
	})
	waitMetrics(t, port, "sekisho_locks_in_force 0", "sekisho_requests_pending 0")

	li := startLive(t, v, "li", "li+web-sg-01")
	cn := `{affiliate="ops-cn",cross_border="true",residency="SG"}`
	waitMetrics(t, port,
		"sekisho_sessions_active"+cn+" 1",
		"sekisho_sessions_started_total"+cn+" 1",
		`sekisho_decisions_total{effect="allow"} 1`,
		`sekisho_vault_requests_total{op="sign",result="ok"} 1`,
		`sekisho_vault_request_seconds_count{op="sign"} 1`,
		`sekisho_vault_requests_total{op="login",result="ok"} 1`,
		`sekisho_audit_events_total{kind="cert.issued"} 1`,
	)

	if out, err := v.cli(t, "lock", "--affiliate", "ops-cn", "--reason", "metrics test"); err != nil {
		t.Fatalf("lock: %v\n%s", err, out)
	}
	select {
	case <-li.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the locked affiliate's session did not end")
	}
	waitMetrics(t, port,
		"sekisho_locks_in_force 1",
		"sekisho_sessions_active"+cn+" 0",
		`sekisho_audit_events_total{kind="session.end"} 1`,
	)
	if got := scrape(t, port); !strings.Contains(got, `sekisho_relayed_bytes_total{direction="out"} `) || strings.Contains(got, `sekisho_relayed_bytes_total{direction="out"} 0`+"\n") {
		t.Errorf("no bytes counted for the ended session:\n%s", grepLines(got, "sekisho_relayed"))
	}
	hardening.Report(t, "11", "/metrics: a cross-border session from ops-cn to SG counted active (1) while it ran and 0 after the lock ended it; the lock counted in force; decisions, Vault calls (login, sign) with their times, and audit events by kind counted")
}
