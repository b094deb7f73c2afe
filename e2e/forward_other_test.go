package e2e

import (
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestForwardToAnotherTargetRefusedAndAudited: a rule that allows
// forwarding only to named destinations does not let a session on one
// target reach another configured target with ssh -W; the refusal is
// audited with the destination.
func TestForwardToAnotherTargetRefusedAndAudited(t *testing.T) {
	other := targetNamed(t, "web-sg-01").Address
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    when: '\"pii\" in target.data && !cross_border'\n",
			"    when: '\"pii\" in target.data && !cross_border'\n    channels: [exec, port_forward]\n    forward_to: [\"127.0.0.1:1\"]\n", 1)
	})
	cmd := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01")
	n := len(cmd.Args)
	cmd.Args = append(append(append([]string{}, cmd.Args[:n-1]...), "-W", other), cmd.Args[n-1])
	r := run(t, cmd, nil)
	if r.code == 0 || strings.Contains(r.stdout, "SSH-2.0-") || !strings.Contains(r.stderr, "sekisho") {
		t.Fatalf("ssh -W %s through a session on db-jp-01: exit %d, stdout %q, stderr %q; want sekisho's refusal", other, r.code, r.stdout, r.stderr)
	}
	var audited bool
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && strings.Contains(e["detail"], other) {
			audited = true
		}
	}
	if !audited {
		t.Fatalf("no refused event naming %s in the audit log", other)
	}
	hardening.Report(t, "8", "ssh -W from a session on db-jp-01 to another configured target's sshd (web-sg-01): refused by sekisho (ssh exit %d), no banner relayed, audited with the destination", r.code)
}
