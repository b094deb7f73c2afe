package e2e

import (
	"strings"
	"testing"
)

// A rule that wants its sessions watched by a moderator: until moderators
// can be seated, its sessions are refused, with why, and audited; none
// runs unwatched.
func TestModeratedRuleRefusesUnwatchedSessions(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "  - name: any-affiliate-to-web\n    effect: allow\n",
			"  - name: any-affiliate-to-web\n    effect: allow\n    moderation:\n      from: [approvers]\n      grace: 30s\n", 1)
	})
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo served"), nil)
	if r.code == 0 || strings.Contains(r.stdout, "served") {
		t.Fatalf("a session its rule wants moderated ran unwatched: exit %d, stdout %q", r.code, r.stdout)
	}
	const want = `access to web-sg-01 under rule "any-affiliate-to-web" needs 1 moderator(s) watching (from approvers)`
	if !strings.Contains(r.stderr, want) {
		t.Errorf("the technician was told %q; want it to say %q", r.stderr, want)
	}
	found := false
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && e["technician"] == "aiko" && strings.Contains(e["detail"], "needs 1 moderator(s)") {
			found = true
		}
	}
	if !found {
		t.Error("the refusal was not audited")
	}
}
