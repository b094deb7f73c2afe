package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The demo ships rules that express the residency policies; the other
// tests run on rules of their own (see useTestRules).
func TestDemoShippedRules(t *testing.T) {
	t.Parallel()
	shipped := filepath.Join(env.dir, "sekisho.shipped.yaml")
	policy := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(env.sekisho, append([]string{"policy", "test", "--config", shipped}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("policy test %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out, err := exec.Command(env.sekisho, "policy", "check", "--config", shipped).CombinedOutput(); err != nil {
		t.Errorf("policy check of the shipped rules: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		// JP personal data from a CN affiliate: only with approval, then
		// no shell, no downloads, and a second factor.
		{[]string{"--technician", "wei", "--target", "db-jp-01", "--from", "127.0.0.1"}, []string{
			"decision  APPROVAL", "rule      pii-cross-border-needs-approval",
			"limits    channels sftp,scp; files upload_only into /tmp (sftp only, forced by the certificate); forward_to -; max_duration 1h0m0s; mfa true"}},
		// A DBA from the CN affiliate: a shell, once approved.
		{[]string{"--technician", "li", "--target", "db-jp-01", "--from", "127.0.0.1"}, []string{
			"decision  APPROVAL", "rule      pii-cross-border-dba-needs-approval",
			"limits    channels shell,exec,sftp,scp; files both; forward_to -; max_duration 1h0m0s; mfa true"}},
		// From a JP affiliate in JP: allowed, forwarding only to the named destination.
		{[]string{"--technician", "aiko", "--target", "db-jp-01", "--from", "127.0.0.1"}, []string{
			"decision  ALLOW", "limits    channels shell,exec,sftp,scp,port_forward; files both; forward_to localhost:5432; max_duration none; mfa false"}},
		// The same technician from an unknown place: cross-border, approval.
		{[]string{"--technician", "aiko", "--target", "db-jp-01", "--from", "203.0.113.9"}, []string{"decision  APPROVAL"}},
		// Cross-border sessions need a second factor.
		{[]string{"--technician", "li", "--target", "web-sg-01", "--from", "127.0.0.1"}, []string{"decision  ALLOW", "mfa true"}},
	} {
		out := policy(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}

	// And in force, through OpenSSH.
	v := startVariantOf(t, shipped, nil)
	r := run(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo no-code"), nil)
	if r.code != 255 || strings.Contains(r.stdout, "no-code") || !strings.Contains(r.stderr, "a second factor is required") {
		t.Errorf("li to db-jp-01 without a second factor: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo no-code"), nil)
	if r.code != 255 || strings.Contains(r.stdout, "no-code") || !strings.Contains(r.stderr, "a second factor is required") {
		t.Errorf("li to web-sg-01 without a second factor: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo domestic"), nil); r.code != 0 || r.stdout != "domestic\n" {
		t.Errorf("aiko to db-jp-01: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// The demo enrolled its technicians and tells their current code.
	code := exec.Command(env.sekisho, "demo", "code", "--dir", env.dir, "li")
	var stderr bytes.Buffer
	code.Stderr = &stderr
	out, err := code.Output()
	if err != nil || !regexp.MustCompile(`^\d{6}\n$`).Match(out) || !regexp.MustCompile(`^\(valid for \d+s; each code works once\)\n$`).Match(stderr.Bytes()) {
		t.Errorf("sekisho demo code: %v, stdout %q, stderr %q", err, out, stderr.String())
	}
}

// `sekisho reload` finds the demo by its pid file and reloads it, as it
// does a `sekisho serve`.
func TestReloadReachesTheDemo(t *testing.T) {
	out := sekishoCLI(t, "reload")
	if !strings.Contains(out, fmt.Sprintf("asked sekisho (pid %d) to reload", env.state.PID)) {
		t.Errorf("sekisho reload against the demo said:\n%s", out)
	}
}
