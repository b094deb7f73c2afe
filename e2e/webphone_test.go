package e2e

import (
	"strings"
	"testing"
)

// TestWebApproveFromAPhone: an approver on a phone-sized screen reads a
// request and approves it; no page needs sideways scrolling.
func TestWebApproveFromAPhone(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := approvalVariant(t, "15m", withWeb(port, nil))
	c := variantConsole(v, port)
	reason := "INC-8080 replica lag on db-jp-01, rebuild the index from the standby"
	if r := v.command(t, "li", "request", "db-jp-01", "--reason", "'"+reason+"'"); r.code != 0 {
		t.Fatalf("li's request: exit %d, %q", r.code, r.stderr)
	}

	b := startBrowser(t)
	b.Resize(390, 844)
	c.signIn(t, b, "kenji")
	if w := b.Exec(`return window.innerWidth;`); w != float64(390) {
		t.Fatalf("viewport width %v, want 390", w)
	}
	// The whole page fits the screen's width: nothing to scroll sideways to.
	fits := func(page string) {
		t.Helper()
		if got := b.Exec(`return document.documentElement.scrollWidth - document.documentElement.clientWidth;`); got != float64(0) {
			t.Errorf("%s on a 390 px screen: %v px wider than the screen", page, got)
		}
	}
	b.WaitText("#pending-requests", "INC-8080")
	b.Go(c.url + "/requests")
	b.WaitText(".request-reason", reason)
	fits("requests")
	screenshot(t, b, "requests-phone")
	b.Find("input.comment").Type("ok from my phone")
	b.Find("button.approve").Click()
	b.WaitText("#recent-requests", "approved by kenji")
	fits("requests after approving")
	if r := v.command(t, "li", "requests"); !strings.Contains(r.stdout, "granted until") {
		t.Errorf("li's requests after the approval from the phone:\n%s", r.stdout)
	}
	noSevere(t, b, "requests on a phone")
}
