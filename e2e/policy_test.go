package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/geotest"
	"github.com/sekisho/sekisho/internal/hardening"
)

func TestCrossBorderPIIRefusedWithRuleNamed(t *testing.T) {
	t.Parallel()
	r := run(t, sshCmd(ctxT(t), "li", "li+db-jp-01", "echo should-not-run"), nil)
	if r.code != 255 {
		t.Fatalf("exit %d, want 255 (refused)", r.code)
	}
	if strings.Contains(r.stdout, "should-not-run") {
		t.Fatal("the command ran on the target")
	}
	for _, want := range []string{`denied by rule "pii-stays-in-residency"`, "resident in JP", "ops-cn is in CN"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal message lacks %q:\n%s", want, r.stderr)
		}
	}
	// The refusal is audited with its trace.
	found := false
	for _, line := range strings.Split(sekishoCLI(t, "audit", "--limit", "10000"), "\n") {
		var e struct{ Kind, Technician, Target, Detail string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Kind == "decision" && e.Technician == "li" && e.Target == "db-jp-01" &&
			strings.Contains(e.Detail, `"effect":"deny"`) && strings.Contains(e.Detail, `"rule":"pii-stays-in-residency"`) &&
			strings.Contains(e.Detail, `"trace":[`) {
			found = true
		}
	}
	if !found {
		t.Error("no audited deny decision for li to db-jp-01")
	}
}

func TestForeignAffiliateReachesNonPersonalTarget(t *testing.T) {
	t.Parallel()
	r := run(t, sshCmd(ctxT(t), "li", "li+web-sg-01", "echo li-on-web"), nil)
	if r.code != 0 || r.stdout != "li-on-web\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	s, _ := endedSession(t, "li", "web-sg-01", "li-on-web")
	if !s.CrossBorder || s.Affiliate != "ops-cn" || s.Rule != "any-affiliate-to-web" || s.SourceCountry != "JP" {
		t.Errorf("session register: %+v", s)
	}
	// The cross-border listing has it; it has no domestic session.
	var list []session
	json.Unmarshal([]byte(sekishoCLI(t, "sessions", "--cross-border", "--json", "--limit", "1000")), &list)
	found := false
	for _, x := range list {
		found = found || x.ID == s.ID
		if !x.CrossBorder {
			t.Errorf("sessions --cross-border lists domestic session %s", x.ID)
		}
	}
	if !found {
		t.Errorf("sessions --cross-border does not list %s", s.ID)
	}
}

func TestUnknownTechnicianAndWrongKeyLookAlike(t *testing.T) {
	t.Parallel()
	unknown := run(t, sshCmd(ctxT(t), "aiko", "mallory+db-jp-01", "true"), nil)
	wrongKey := run(t, sshCmd(ctxT(t), "li", "aiko+db-jp-01", "true"), nil)
	for name, r := range map[string]result{"unknown technician": unknown, "wrong key": wrongKey} {
		if r.code != 255 || !strings.Contains(r.stderr, "Permission denied (publickey)") {
			t.Errorf("%s: exit %d, stderr %q", name, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "sekisho:") {
			t.Errorf("%s: the answer says more than permission denied: %q", name, r.stderr)
		}
	}
	norm := func(s string) string { return strings.NewReplacer("mallory", "X", "aiko", "X").Replace(s) }
	if norm(unknown.stderr) != norm(wrongKey.stderr) {
		t.Errorf("answers differ:\nunknown:   %q\nwrong key: %q", unknown.stderr, wrongKey.stderr)
	}
	// Both refusals are audited.
	audit := sekishoCLI(t, "audit", "--limit", "10000")
	for _, login := range []string{"mallory+db-jp-01", "aiko+db-jp-01"} {
		if !strings.Contains(audit, `"kind":"auth.failed"`) || !strings.Contains(audit, `\"login\":\"`+login+`\"`) {
			t.Errorf("no auth.failed audit event for %s", login)
		}
	}
	hardening.Report(t, "1", "an unknown technician and a known login with another technician's key: both refused with ssh exit %d and the same Permission denied answer apart from the name, both audited as auth.failed", unknown.code)
}

func TestBadLoginNamesExplained(t *testing.T) {
	t.Parallel()
	for login, want := range map[string]string{
		"aiko+DB-JP-01":     `target name "DB-JP-01": character 'D'`,
		"aiko+db~1":         `character '~'`,
		"aiko+no-such-host": `no target called "no-such-host"`,
	} {
		r := run(t, sshCmd(ctxT(t), "aiko", login, "true"), nil)
		if r.code != 255 || !strings.Contains(r.stderr, want) {
			t.Errorf("login %q: exit %d, stderr %q; want a refusal containing %q", login, r.code, r.stderr, want)
		}
	}
	// A login without a target runs sekisho's own commands.
	r := run(t, sshCmd(ctxT(t), "aiko", "aiko", "true"), nil)
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "true"`) || !strings.Contains(r.stderr, "log in as aiko+TARGET") {
		t.Errorf("login aiko: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "12", "3 bad logins (aiko+DB-JP-01 in upper case, aiko+db~1, an unknown target): all refused with ssh exit 255 and a message naming the offending character or name")
	hardening.Report(t, "9", "a login without a target asking to run true on the bastion: refused as an unknown sekisho command (exit %d), pointing to aiko+TARGET", r.code)
}

func TestForwardingRefused(t *testing.T) {
	t.Parallel()
	// ssh -W opens a direct-tcpip channel at once.
	args := append(sshOpts("aiko"), "-p", env.port, "-W", env.state.Targets[0].Address, "aiko+db-jp-01@"+env.host)
	r := run(t, exec.CommandContext(ctxT(t), "ssh", args...), nil)
	if r.code == 0 || !strings.Contains(r.stderr, `port forwarding is not allowed to db-jp-01 under rule "pii-in-residency"`) {
		t.Errorf("ssh -W: exit %d, stderr %q", r.code, r.stderr)
	}
	// Remote forwarding is a global request; ExitOnForwardFailure makes
	// the client say so.
	args = append(sshOpts("aiko"), "-p", env.port, "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:22",
		"aiko+db-jp-01@"+env.host, "echo forwarded")
	r = run(t, exec.CommandContext(ctxT(t), "ssh", args...), nil)
	if r.code == 0 || strings.Contains(r.stdout, "forwarded") {
		t.Errorf("ssh -R: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Agent forwarding is refused: with a real agent offered, the target
	// still sees no agent socket.
	sock := filepath.Join(t.TempDir(), "agent")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	waitUntil(t, 10*time.Second, "ssh-agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	cmd := sshCmd(ctxT(t), "aiko", "aiko+db-jp-01", `echo "agent=[$SSH_AUTH_SOCK]"`)
	cmd.Args = append(cmd.Args[:1], append([]string{"-o", "IdentityAgent=" + sock, "-o", "ForwardAgent=yes"}, cmd.Args[1:]...)...)
	r = run(t, cmd, nil)
	if r.code != 0 || r.stdout != "agent=[]\n" {
		t.Errorf("ssh -A: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "8", "ssh -W to a target's address under a rule without forward_to: refused naming the rule; ssh -R: refused, the client exits")
	hardening.Report(t, "16", "ssh -R 127.0.0.1:0:127.0.0.1:22: refused, the command never runs; ssh -A with a real ssh-agent offered: the target sees SSH_AUTH_SOCK empty")
}

func TestSourceCountryFromGeoIPDatabase(t *testing.T) {
	t.Parallel()
	// The GeoIP database places loopback in CN; the config's networks no
	// longer cover 127.0.0.1, so the database answers for it.
	db := geotest.Write(t, map[string]string{"127.0.0.0/8": "CN"})
	v := startVariant(t, func(cfg string) string {
		cfg = strings.Replace(cfg, `cidrs: [127.0.0.0/8, "::1/128"]`, `cidrs: [127.0.0.2/32]`, 1)
		return strings.Replace(cfg, "\nnetworks:", "\ngeoip: "+db+"\nnetworks:", 1)
	})
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo should-not-run"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, `denied by rule "pii-stays-in-residency"`) || !strings.Contains(r.stderr, "connecting from CN") {
		t.Errorf("aiko from a CN address: exit %d, stderr %q", r.code, r.stderr)
	}
	out, err := v.cli(t, "policy", "test", "--technician", "aiko", "--target", "db-jp-01", "--from", "127.0.0.2")
	if err != nil || !strings.Contains(out, "decision  ALLOW") || !strings.Contains(out, "(country JP, network demo-office)") {
		t.Errorf("from the office network: %v\n%s", err, out)
	}
}

func TestDenyBeatsAnEarlierAllow(t *testing.T) {
	t.Parallel()
	// The deny rule moved after an allow that matches too: it still wins.
	v := startVariant(t, func(cfg string) string {
		i := strings.Index(cfg, "\nrules:\n")
		return cfg[:i+1] + `rules:
  - name: everyone-everywhere
    effect: allow
  - name: pii-stays-in-residency
    effect: deny
    when: '"pii" in target.data && cross_border'
`
	})
	r := run(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo should-not-run"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, `denied by rule "pii-stays-in-residency"`) {
		t.Errorf("li to db-jp-01: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo allowed"), nil); r.code != 0 || r.stdout != "allowed\n" {
		t.Errorf("li to web-sg-01: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}

func TestConditionErrorNamesRuleAndPosition(t *testing.T) {
	t.Parallel()
	b, _ := os.ReadFile(env.state.Config)
	bad := strings.Replace(string(b), `when: '"pii" in target.data && cross_border'`, `when: '"pii" in target.data && crossborder'`, 1)
	line := strings.Count(bad[:strings.Index(bad, "crossborder")], "\n") + 1
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(bad), 0o600)
	out, err := exec.Command(env.sekisho, "serve", "--config", path).CombinedOutput()
	want := fmt.Sprintf("%s:%d: rule pii-stays-in-residency: condition: ERROR: <input>:1:25: undeclared reference to 'crossborder'", path, line)
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("sekisho serve with a bad condition: %v\n%s\nwant %q", err, out, want)
	}
}
