package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestWebhookOverPlainHTTPOffLoopback: a webhook over plain http to
// another host is refused by config check, naming the host and the way
// out, never the URL (it may hold a secret); loopback, https and the
// explicit opt-in are accepted.
func TestWebhookOverPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	hook := func(url, extra string) func(string) string {
		return func(c string) string {
			return c + "\nnotifications:\n  webhooks:\n    - name: approvers-chat\n      url: " + url + "\n" + extra
		}
	}
	refused := []struct{ url, host string }{
		{"http://10.0.0.5/services/T0SECRET", "10.0.0.5"},
		{"http://hooks.example.com:8080/services/T0SECRET", "hooks.example.com"},
		{"http://127.0.0.1.example.net/services/T0SECRET", "127.0.0.1.example.net"},
		{"http://0.0.0.0:9000/services/T0SECRET", "0.0.0.0"},
		{"http://[2001:db8::5]/services/T0SECRET", "2001:db8::5"},
	}
	for _, c := range refused {
		path := writeConfig(t, hook(c.url, ""))
		text, _ := os.ReadFile(path)
		_, err := LoadConfig(path)
		wantErr(t, err, path, lineOf(t, string(text), "- name: approvers-chat"), "webhook approvers-chat: url is plain http:// to "+c.host+", which is not this host",
			"use https://, or, where that network is trusted with it, set plain_http_off_loopback: true on the entry")
		if err != nil && strings.Contains(err.Error(), "T0SECRET") {
			t.Errorf("%s: the error quotes the URL: %v", c.url, err)
		}
	}
	accepted := []struct{ url, extra string }{
		{"http://127.0.0.1:9000/hook", ""},
		{"http://127.0.0.2/hook", ""},
		{"http://localhost:9000/hook", ""},
		{"http://[::1]:9000/hook", ""},
		{"https://hooks.example.com/services/T0SECRET", ""},
		{"http://10.0.0.5/hook", "      plain_http_off_loopback: true\n"},
	}
	for _, c := range accepted {
		if _, err := LoadConfig(writeConfig(t, hook(c.url, c.extra))); err != nil {
			t.Errorf("%s %s: %v", c.url, strings.TrimSpace(c.extra), err)
		}
	}
	hardening.Report(t, "29", "%d webhooks over plain http to a host off loopback (a private address, a name, a name that starts like loopback, 0.0.0.0, an IPv6 address) refused by config check, naming the host, never the URL; loopback, localhost, https and plain_http_off_loopback: true accepted (%d)", len(refused), len(accepted))
}

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
		path := writeConfig(t, func(s string) string { return approverGroup(s) + "powers_without_mfa: " + c.list + "\n" })
		_, err := LoadConfig(path)
		wantErr(t, err, path, 0, c.want)
	}

	var out bytes.Buffer
	if err := cmdPolicyCheck(&out, []string{"--config", writeConfig(t, approverGroup)}); err != nil {
		t.Errorf("approvers asked for a code: policy check %v\n%s", err, out.String())
	}
	path := writeConfig(t, func(s string) string { return approverGroup(s) + "powers_without_mfa: [approvers]\n" })
	out.Reset()
	err := cmdPolicyCheck(&out, []string{"--config", path})
	want := "warning: powers_without_mfa: group approvers uses its powers (approver) with the SSH key alone: a stolen key of aiko is enough to use them"
	if err == nil || !strings.Contains(err.Error(), "1 finding(s)") || !strings.Contains(out.String(), want) {
		t.Errorf("policy check with powers_without_mfa: [approvers]: %v\n%s\nwant 1 finding: %s", err, out.String(), want)
	}
	// aiko an admin as well: asked for the code anyway, so no warning.
	path = writeConfig(t, func(s string) string {
		s = approverGroup(s)
		s = strings.Replace(s, "    groups: [dba, approvers]\n", "    groups: [dba, approvers, admins]\n", 1)
		return s + "powers_without_mfa: [approvers]\n"
	})
	out.Reset()
	if err := cmdPolicyCheck(&out, []string{"--config", path}); err != nil {
		t.Errorf("an exempt group whose only member is asked through another: %v\n%s", err, out.String())
	}
}
