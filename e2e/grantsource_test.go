package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// connectFrom makes cmd (ssh) connect from the loopback address addr.
func connectFrom(cmd *exec.Cmd, addr string) *exec.Cmd {
	cmd.Args = append([]string{cmd.Args[0], "-b", addr}, cmd.Args[1:]...)
	return cmd
}

// TestGrantIsUsedFromTheSourceCountryApproved: li's request is filed,
// and approved, from an office in CN (127.0.0.1); from the SG office
// (127.0.0.2) the grant does not let him in, he is told why, files a new
// request there, and the approvers see where each comes from.
func TestGrantIsUsedFromTheSourceCountryApproved(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", func(cfg string) string {
		const office = "  - name: demo-office\n    country: JP\n    cidrs: [127.0.0.0/8, \"::1/128\"]\n"
		if !strings.Contains(cfg, office) {
			t.Fatalf("the demo config has no demo-office network:\n%s", cfg)
		}
		return strings.Replace(cfg, office, "  - name: cn-office\n    country: CN\n    cidrs: [127.0.0.1/32]\n"+
			"  - name: sg-office\n    country: SG\n    cidrs: [127.0.0.2/32]\n", 1)
	})
	fromSG := func(ctx context.Context, tech, login string, remote ...string) *exec.Cmd {
		return connectFrom(v.ssh(ctx, tech, login, remote...), "127.0.0.2")
	}
	m := randHex(t)

	cn := fileRequest(t, v, "li", "db-jp-01")
	if r := v.command(t, "kenji", "approve", cn); r.code != 0 {
		t.Fatalf("kenji approve %s: exit %d, %q", cn, r.code, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo from-cn-"+m), nil); r.code != 0 || r.stdout != "from-cn-"+m+"\n" {
		t.Fatalf("li from CN under the grant: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r := run(t, fromSG(ctxT(t), "li", "li+db-jp-01", "echo from-sg-"+m), nil)
	want := "request " + cn + " was approved for connections from CN; you are connecting from SG: file a new request"
	if r.code == 0 || strings.Contains(r.stdout, "from-sg-"+m) || !strings.Contains(r.stderr, want) {
		t.Fatalf("li from SG under the grant for CN: exit %d, stdout %q, stderr %q; want refused with %q", r.code, r.stdout, r.stderr, want)
	}

	// From SG, a new request (li, an approver too, gives a code); the
	// approvers see where each comes from.
	r = run(t, v.logins(t).withCode(t, "li", fromSG(ctxT(t), "li", "li", "request", "db-jp-01", "--reason", "INC-4712 from the Singapore office")), nil)
	sg := requestNumber.FindStringSubmatch(r.stdout)
	if r.code != 0 || sg == nil || sg[1] == cn || !strings.Contains(r.stdout, "filed") {
		t.Fatalf("li's request from SG: exit %d, stdout %q, stderr %q; want a new request filed", r.code, r.stdout, r.stderr)
	}
	r = v.command(t, "kenji", "requests")
	if r.code != 0 || !regexp.MustCompile(`(?m)^`+sg[1]+`\s+li \(ops-cn\)\s+db-jp-01\s.*pending.*SG \(127\.0\.0\.2\)\s*$`).MatchString(r.stdout) {
		t.Errorf("kenji's requests: exit %d\n%s\nwant request %s pending, from SG (127.0.0.2)", r.code, r.stdout, sg[1])
	}
	r = v.command(t, "kenji", "grants")
	if r.code != 0 || !regexp.MustCompile(`(?m)^`+cn+`\s+li \(ops-cn\)\s+db-jp-01\s.*granted until.*CN \(127\.0\.0\.1\)\s*$`).MatchString(r.stdout) {
		t.Errorf("kenji's grants: exit %d\n%s\nwant request %s from CN (127.0.0.1)", r.code, r.stdout, cn)
	}
	if r := v.command(t, "kenji", "approve", sg[1]); r.code != 0 {
		t.Fatalf("kenji approve %s: exit %d, %q", sg[1], r.code, r.stderr)
	}
	if r := run(t, fromSG(ctxT(t), "li", "li+db-jp-01", "echo from-sg-"+m), nil); r.code != 0 || r.stdout != "from-sg-"+m+"\n" {
		t.Fatalf("li from SG under the SG grant: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// The register says which grant each session ran under.
	out, err := v.cli(t, "sessions", "--json")
	var list []struct {
		Source        string `json:"source"`
		SourceCountry string `json:"source_country"`
		Request       json.Number
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	for _, s := range list {
		if want := map[string]string{"CN": cn, "SG": sg[1]}[s.SourceCountry]; want == "" || s.Request.String() != want {
			t.Errorf("session from %s (%s) ran under request %s, want %s", s.Source, s.SourceCountry, s.Request, want)
		}
	}
}
