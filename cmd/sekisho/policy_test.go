package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

const officeNetwork = `networks:
  - name: tokyo-office
    country: JP
    cidrs: [198.51.100.0/24]

affiliates:`

func TestPolicyTestExplainsDecision(t *testing.T) {
	path := nodetest.WriteConfig(t, func(c string) string { return strings.Replace(c, "affiliates:", officeNetwork, 1) })
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--technician", "li", "--target", "db-jp-01", "--from", "203.0.113.7", "--at", "2026-12-01T03:00:00+09:00"}, []string{
			"decision  DENY", "rule      pii-stays-in-residency",
			`denied by rule "pii-stays-in-residency" (db-jp-01 is resident in JP; affiliate ops-cn is in CN; connecting from an address of unknown country)`,
			"source        203.0.113.7 (country -, network -)", "now           2026-11-30T18:00:00Z", "cross_border  true",
			"1.  pii-stays-in-residency  deny   MATCH", "2.  pii-in-residency        allow  no", "3.  any-affiliate-to-web    allow  no",
		}},
		{[]string{"--technician", "aiko", "--target", "db-jp-01", "--from", "198.51.100.9"}, []string{
			"decision  ALLOW", "rule      pii-in-residency", "login     dbadmin",
			"source        198.51.100.9 (country JP, network tokyo-office)", "cross_border  false",
		}},
		{[]string{"--technician", "aiko", "--target", "db-jp-01", "--from", "203.0.113.7"}, []string{
			"decision  DENY", "connecting from an address of unknown country", "cross_border  true",
		}},
		{[]string{"--technician", "li", "--target", "web-sg-01", "--from", "203.0.113.7"}, []string{
			"decision  ALLOW", "rule      any-affiliate-to-web", "login     deploy",
		}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := cmdPolicyTest(&out, append([]string{"--config", path}, tt.args...)); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out.String())
			}
		}
	}
	var out bytes.Buffer
	err := cmdPolicyTest(&out, []string{"--config", path, "--technician", "mallory", "--target", "db-jp-01", "--from", "192.0.2.1"})
	if err == nil || !strings.Contains(err.Error(), `no technician "mallory"`) || !strings.Contains(err.Error(), "aiko, li") {
		t.Errorf("unknown technician: %v", err)
	}
	err = cmdPolicyTest(&out, []string{"--config", path, "--technician", "li", "--target", "db-jp-01", "--from", "192.0.2.1", "--at", "tomorrow"})
	if err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("bad --at: %v", err)
	}
}

func TestPolicyCheck(t *testing.T) {
	var out bytes.Buffer
	if err := cmdPolicyCheck(&out, []string{"--config", nodetest.WriteConfig(t, nil)}); err != nil {
		t.Fatalf("the valid config has findings: %v\n%s", err, out.String())
	}
	path := nodetest.WriteConfig(t, func(c string) string {
		c = strings.Replace(c, `  - name: pii-stays-in-residency
    effect: deny
    data: [pii]
    cross_border: true`, `  - name: pii-stays-in-residency
    effect: deny
    data: [pii]
    cross_border: true
    technicians: [aiko]`, 1)
		return c + `  - name: web-again
    effect: allow
    targets: [web-sg-01]
  - name: payroll-prod
    effect: allow
    when: 'target.labels["tier"] == "gold" && "payroll" in target.data'
  - name: cn-pii
    effect: allow
    affiliates: [ops-cn]
    when: '"pii" in target.data'
`
	})
	out.Reset()
	err := cmdPolicyCheck(&out, []string{"--config", path})
	if err == nil || !strings.Contains(err.Error(), "5 finding(s)") {
		t.Errorf("error %v, want 5 findings", err)
	}
	for _, w := range []string{
		"rule web-again: never decides: the earlier rule any-affiliate-to-web matches wherever it does",
		"rule payroll-prod: never matches any configured technician and target",
		"rule payroll-prod: no target carries the label(s) tier",
		"rule payroll-prod: no target holds the data class(es) payroll",
		"rule cn-pii: allows personal data (pii) across borders without approval, e.g. li to db-jp-01 from CN",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("policy check output lacks %q:\n%s", w, out.String())
		}
	}
}

func TestConfigRefusesAKeyOfTwoTechnicians(t *testing.T) {
	cfg, _ := nodetest.Config(t)
	// li gets aiko's key line as well.
	start := strings.Index(cfg, "  - name: aiko")
	keyLine := cfg[strings.Index(cfg[start:], "      - ssh-")+start:]
	keyLine = keyLine[:strings.Index(keyLine, "\n")]
	liStart := strings.Index(cfg, "  - name: li")
	liKeys := strings.Index(cfg[liStart:], "    keys:\n") + liStart + len("    keys:\n")
	cfg = cfg[:liKeys] + keyLine + "\n" + cfg[liKeys:]
	_, err := node.ParseConfig(strings.NewReader(cfg), "dup.yaml")
	if err == nil || !strings.Contains(err.Error(), "is also registered for aiko; each key must belong to one technician") {
		t.Errorf("error %v", err)
	}
}
