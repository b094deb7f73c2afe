package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

// approverGroup makes aiko an approver under an approval rule.
func approverGroup(c string) string {
	c = strings.Replace(c, "    groups: [dba]\n", "    groups: [dba, approvers]\n", 1)
	return c + `  - name: li-needs-approval
    effect: approval
    technicians: [li]
    approval:
      from: [approvers]
`
}

// TestPowersWithoutMFA: powers_without_mfa names groups that give a
// power, or the config is refused; each group named there is a warning of
// policy check, naming the people who would use their powers with the key
// alone.
func TestPowersWithoutMFA(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ list, want string }{
		{"[dba]", `powers_without_mfa: group "dba" gives no power`},
		{"[approver]", `group "approver" gives no power: it is in neither admin_groups, reviewer_groups nor any approval rule's approval.from`},
	} {
		path := nodetest.WriteConfig(t, func(s string) string { return approverGroup(s) + "powers_without_mfa: " + c.list + "\n" })
		_, err := node.LoadConfig(path)
		nodetest.WantErr(t, err, path, 0, c.want)
	}

	var out bytes.Buffer
	if err := cmdPolicyCheck(&out, []string{"--config", nodetest.WriteConfig(t, approverGroup)}); err != nil {
		t.Errorf("approvers asked for a code: policy check %v\n%s", err, out.String())
	}
	path := nodetest.WriteConfig(t, func(s string) string { return approverGroup(s) + "powers_without_mfa: [approvers]\n" })
	out.Reset()
	err := cmdPolicyCheck(&out, []string{"--config", path})
	want := "warning: powers_without_mfa: group approvers uses its powers (approver) with the SSH key alone: a stolen key of aiko is enough to use them"
	if err == nil || !strings.Contains(err.Error(), "1 finding(s)") || !strings.Contains(out.String(), want) {
		t.Errorf("policy check with powers_without_mfa: [approvers]: %v\n%s\nwant 1 finding: %s", err, out.String(), want)
	}
	// aiko an admin as well: asked for the code anyway, so no warning.
	path = nodetest.WriteConfig(t, func(s string) string {
		s = approverGroup(s)
		s = strings.Replace(s, "    groups: [dba, approvers]\n", "    groups: [dba, approvers, admins]\n", 1)
		return s + "powers_without_mfa: [approvers]\n"
	})
	out.Reset()
	if err := cmdPolicyCheck(&out, []string{"--config", path}); err != nil {
		t.Errorf("an exempt group whose only member is asked through another: %v\n%s", err, out.String())
	}
}
