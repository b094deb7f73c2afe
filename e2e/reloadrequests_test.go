package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// reloadWith rewrites v's config with edit and has the server reload it,
// returning once it has.
func reloadWith(t *testing.T, v *variant, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := edit(string(b))
	if cfg == string(b) {
		t.Fatal("the edit changes nothing in the config")
	}
	if err := os.WriteFile(v.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(v.out.String(), `"msg":"config reloaded`)
	if out, err := v.cli(t, "reload"); err != nil {
		t.Fatalf("sekisho reload: %v\n%s", err, out)
	}
	waitUntil(t, 30*time.Second, "the server to reload", func() bool {
		return strings.Count(v.out.String(), `"msg":"config reloaded`) > before
	})
}

// grantEnd is when li's grant of request id ends, as sekisho says.
func grantEnd(t *testing.T, v *variant, id string) time.Time {
	t.Helper()
	r := v.command(t, "li", "requests", "--json")
	var list []struct {
		ID       json.Number `json:"id"`
		GrantEnd time.Time   `json:"grant_end"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("requests --json: %v %q", err, r.stdout)
	}
	for _, x := range list {
		if x.ID.String() == id {
			return x.GrantEnd
		}
	}
	t.Fatalf("request %s not listed: %q", id, r.stdout)
	return time.Time{}
}

// A technician in a live session under a 4h grant: a reload cutting the
// rule's max_grant to 2m tells them at once why and when the session
// ends, warns them a minute before as for any grant, and ends it then.
func TestReloadCutsTheGrantOfALiveSession(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", func(cfg string) string {
		return strings.Replace(cfg, "      max_grant: 2h\n", "      max_grant: 4h\n", 1)
	})
	r := v.command(t, "li", "request", "db-jp-01", "--reason", "INC-4711 long reindex", "--duration", "4h")
	m := requestNumber.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("request: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	id := m[1]
	if r := v.command(t, "kenji", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("approve: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	was := grantEnd(t, v, id)
	li := startLive(t, v, "li", "li+db-jp-01")

	reloadWith(t, v, func(cfg string) string {
		return strings.Replace(cfg, "      max_grant: 4h\n", "      max_grant: 2m\n", 1)
	})
	end := grantEnd(t, v, id)
	if d := was.Sub(end); d < 3*time.Hour {
		t.Fatalf("the grant ends at %v after the reload, %v before: not cut to 2m", end, was)
	}
	told := `sekisho: the grant of request ` + id + ` was cut: rule "db-needs-approval" now grants at most 2m0s from the grant's start`
	waitUntil(t, 5*time.Second, "the technician to be told of the cut", func() bool {
		return strings.Contains(li.stderr.String(), told)
	})
	if !strings.Contains(li.stderr.String(), "the session ends at "+end.UTC().Format("15:04:05 UTC")) {
		t.Errorf("the technician was not told when the session ends: %q", li.stderr.String())
	}
	stderr := li.endsWithin(t, time.Until(end)+10*time.Second, "past its grant's new end")
	ended := time.Now()
	if ended.Before(end) {
		t.Errorf("the session ended at %v, before the grant's new end %v", ended, end)
	}
	for _, want := range []string{
		"the grant of request " + id + " ends in",
		"the session will end then",
		"sekisho: session ended: the grant of request " + id + " ended at " + end.UTC().Format("15:04:05 UTC"),
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the technician was not told %q: %q", want, stderr)
		}
	}
	kinds := auditKinds(t, v)
	for _, k := range []string{"request.revised", "session.grant_cut", "session.revoked"} {
		if !strings.Contains(kinds, k) {
			t.Errorf("audit lacks %s: %s", k, kinds)
		}
	}
	hardening.Report(t, "11", "a live session under a 4h grant, its rule's max_grant cut to 2m by a reload: the technician told why and when at once, warned a minute before, and the session ended %d ms after the grant's new end",
		ended.Sub(end).Milliseconds())
}

// A technician waiting in ssh on a request under a rule raised by a
// reload from 1 approval to 2: told so, and still waiting after one
// approval; the second lets the command run.
func TestReloadRaisesTheCountWhileTheTechnicianWaits(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "db-jp-01")
	_, stderr, done := startWaiting(t, v.ssh(ctxT(t), "li", "li+db-jp-01", "echo ran-after-two"))

	reloadWith(t, v, func(cfg string) string {
		return strings.Replace(cfg, "      max_grant: 2h\n", "      max_grant: 2h\n      approvals: 2\n", 1)
	})
	waitUntil(t, 10*time.Second, "the waiting technician to be told", func() bool {
		return strings.Contains(stderr.String(), "request "+id+` changed: rule "db-needs-approval" now needs 2 approval(s)`)
	})
	r := v.command(t, "kenji", "approve", id)
	if r.code != 0 || !strings.Contains(r.stdout, "pending, 1 of 2 approvals") {
		t.Fatalf("kenji's approval: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 10*time.Second, "the waiting session to show 1 of 2", func() bool {
		return strings.Contains(stderr.String(), "1 of 2 approvals (kenji)")
	})
	select {
	case w := <-done:
		t.Fatalf("went through on one approval under a rule that now needs two: %+v", w)
	default:
	}
	if r := v.command(t, "aiko", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("aiko's approval: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if w := waitResult(t, done); w.code != 0 || w.stdout != "ran-after-two\n" {
		t.Errorf("after two approvals: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
	if !strings.Contains(auditKinds(t, v), "request.revised") {
		t.Error("no request.revised audit event")
	}
	hardening.Report(t, "11", "a technician waiting in ssh on a request under a rule a reload raised from 1 to 2 approvals: told so, still waiting after one approval, through after the second")
}
