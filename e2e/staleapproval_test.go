package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// An approval by someone who may no longer decide does not count: aiko
// approves li's request under a two-approval rule, then is locked; kenji's
// approval leaves it at 1 of 2, and li, waiting in ssh, keeps waiting.
// Once aiko is unlocked, her approval (given again) completes it.
func TestApprovalOfALockedApproverNoLongerCounts(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "web-sg-01")
	_, stderr, done := startWaiting(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo ran-after-two"))
	if r := v.command(t, "aiko", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "pending, 1 of 2 approvals") {
		t.Fatalf("aiko's approval: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	out, err := v.cli(t, "lock", "--technician", "aiko", "--reason", "INC-78 approver key leaked")
	if err != nil {
		t.Fatalf("lock: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "aiko's commands to be refused", func() bool {
		return v.command(t, "aiko", "grants").code == 255
	})
	r := v.command(t, "kenji", "approve", id)
	if r.code != 0 || !strings.Contains(r.stdout, "pending, 1 of 2 approvals") {
		t.Errorf("kenji's approval after aiko's lock: exit %d, stdout %q, stderr %q; want 1 of 2 (aiko's no longer counts)", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 10*time.Second, "the waiting session to show 1 of 2", func() bool {
		return strings.Contains(stderr.String(), "1 of 2 approvals (kenji)")
	})
	select {
	case w := <-done:
		t.Fatalf("li went through on a locked approver's approval: %+v", w)
	default:
	}
	dropped := false
	for _, e := range v.audit(t) {
		if strings.HasPrefix(e["kind"], "request.") && strings.Contains(e["detail"], "aiko") && strings.Contains(e["detail"], "locked") {
			dropped = true
		}
	}
	if !dropped {
		t.Error("no audit event says aiko's approval was dropped because she is locked")
	}

	if out, err := v.cli(t, "unlock", "1"); err != nil || !strings.Contains(out, "lock 1 removed") {
		t.Fatalf("unlock: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "aiko's commands to be served again", func() bool {
		return v.command(t, "aiko", "grants").code == 0
	})
	if r := v.command(t, "aiko", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("aiko's approval again: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if w := waitResult(t, done); w.code != 0 || w.stdout != "ran-after-two\n" {
		t.Errorf("after two approvals that count: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
	hardening.Report(t, "11", "an approver locked after approving a two-approval request: the next approval left it at 1 of 2 and the technician refused, the drop audited; unlocked and approving again, the request was granted")
}
