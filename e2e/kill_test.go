package e2e

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestKillIsForAdminsOnly: a technician who is not an admin cannot end
// sessions, whether the session exists or not (the answer does not say),
// and the refusal is audited.
func TestKillIsForAdminsOnly(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	r := run(t, sshCmd(ctxT(t), "li", "li", "kill", id, "--reason", "not mine"), nil)
	if r.code != 1 || !strings.Contains(r.stderr, "kill is for admins only") {
		t.Fatalf("li kill: exit %d, stderr %q; want exit 1 and the refusal", r.code, r.stderr)
	}
	audit := sekishoCLI(t, "audit", "--limit", "10000")
	if !strings.Contains(audit, `command \"kill\" refused: admins only`) {
		t.Fatal("the refused kill is not in the audit log")
	}
	hardening.Report(t, "13", "a non-admin's kill of a session: refused (exit %d) without saying whether the session exists, the refusal audited", r.code)
}
