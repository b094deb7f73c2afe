package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestCrossBorderSessionsReachSecurityAtOnce: a webhook (a security team's
// Slack) hears of li's cross-border session as it starts, with where from,
// to what and under which rule, and again as it ends; aiko's session at
// home is not told.
func TestCrossBorderSessionsReachSecurityAtOnce(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies []map[string]any
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
	}))
	defer recv.Close()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", `
notifications:
  webhooks:
    - name: security-team
      url: `+recv.URL+`/hook
      events: [session.cross_border, session.cross_border_ended]
rules:
`, 1)
	})
	received := func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]any(nil), bodies...)
	}

	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo at-home"), nil); r.code != 0 {
		t.Fatalf("aiko at home: exit %d, %s", r.code, r.stderr)
	}
	li := startLive(t, v, "li", "li+web-sg-01")
	var started map[string]any
	waitUntil(t, 30*time.Second, "the webhook to hear of li's cross-border session", func() bool {
		for _, b := range received() {
			if b["event"] == "session.cross_border" {
				started = b
				return true
			}
		}
		return false
	})
	s, _ := started["session"].(map[string]any)
	text, _ := started["text"].(string)
	if s["technician"] != "li" || s["affiliate"] != "ops-cn" || s["target"] != "web-sg-01" || s["residency"] != "SG" || s["rule"] == "" ||
		!strings.Contains(text, "li (ops-cn, CN) started a cross-border session on web-sg-01 (SG)") {
		t.Errorf("the start event: %v", started)
	}
	li.cmd.Process.Kill() // li's client goes away
	li.endsWithin(t, 30*time.Second, "after its client was killed")
	waitUntil(t, 30*time.Second, "the webhook to hear that it ended", func() bool {
		for _, b := range received() {
			if b["event"] == "session.cross_border_ended" {
				e, _ := b["session"].(map[string]any)
				return e["id"] == s["id"] && e["end_reason"] != ""
			}
		}
		return false
	})
	for _, b := range received() {
		if e, _ := b["session"].(map[string]any); e["technician"] == "aiko" {
			t.Errorf("aiko's session at home was told: %v", b)
		}
	}
	// The reviewer's question on the command line finds the same session.
	out, err := v.cli(t, "sessions", "--affiliate", "ops-cn", "--cross-border", "--since", "1h", "--json")
	if err != nil || !strings.Contains(out, fmt.Sprint(s["id"])) || strings.Contains(out, `"technician": "aiko"`) {
		t.Errorf("sekisho sessions --affiliate ops-cn --cross-border --since 1h: %v\n%s", err, out)
	}
	hardening.Report(t, "11", "a webhook heard of li's cross-border session (ops-cn to SG) as it started, with affiliate, source, target, residency and rule, and again as it ended; aiko's session at home was not told")
}
