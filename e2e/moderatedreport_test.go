package e2e

import (
	"encoding/csv"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The register keeps whether a session's rule asked for moderators, and
// the cross-border report counts it: aiko's session to web-sg-01 waits
// for kenji to moderate it and counts as moderated, wei's, under a rule
// that asks for none, as unmoderated.
func TestReportCountsModeratedSessions(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "  - name: any-affiliate-to-web\n",
			"  - name: aiko-to-web-moderated\n    effect: allow\n    technicians: [aiko]\n    targets: [web-sg-01]\n"+
				"    moderation:\n      from: [approvers]\n      grace: 30s\n"+
				"  - name: any-affiliate-to-web\n", 1)
	})
	if r := run(t, v.ssh(ctxT(t), "wei", "wei+web-sg-01", "echo", "unmoderated-$((6*7))"), nil); r.code != 0 || !strings.Contains(r.stdout, "unmoderated-42") {
		t.Fatalf("wei's session: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	tech := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "moderated-$((6*7))")
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	tech.Stdout, tech.Stderr = stdout, stderr
	if err := tech.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tech.Wait() }()
	waitingFor := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`)
	waitUntil(t, 30*time.Second, "aiko's session to wait for a moderator", func() bool {
		return waitingFor.MatchString(stderr.String())
	})
	id := waitingFor.FindStringSubmatch(stderr.String())[1]

	mod := v.logins(t).mustCmd(t, "kenji", "moderate", id)
	mt := terminal(t, mod, "moderate")
	mt.waitScreen("moderating session " + id)
	select {
	case err := <-done:
		if err != nil || !strings.Contains(stdout.String(), "moderated-42") {
			t.Fatalf("aiko's moderated session: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("aiko's session did not end within 60 s of kenji moderating it; stderr %q", stderr.String())
	}

	out, err := v.cli(t, "report", "cross-border", "--format", "csv")
	if err != nil {
		t.Fatalf("report --format csv: %v\n%s", err, out)
	}
	records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(records) != 3 {
		t.Fatalf("the CSV report: %v, want a header and 2 sessions in\n%s", err, out)
	}
	header := records[0]
	if header[len(header)-1] != "moderated" {
		t.Fatalf("the CSV header ends with %q, want moderated: %q", header[len(header)-1], header)
	}
	moderated := map[string]string{}
	for _, r := range records[1:] {
		moderated[r[1]] = r[len(r)-1] // technician: moderated
		if r[1] == "aiko" && r[0] != id {
			t.Errorf("aiko's row is of session %s, want %s", r[0], id)
		}
	}
	if moderated["aiko"] != "true" || moderated["wei"] != "false" {
		t.Errorf("moderated by technician %v, want aiko true and wei false, in\n%s", moderated, out)
	}
	out, err = v.cli(t, "report", "cross-border")
	if err != nil || !strings.Contains(out, "moderated: 1, unmoderated: 1\n") {
		t.Errorf("the report's table: %v\n%s\nwant it to count 1 moderated and 1 unmoderated session", err, out)
	}
}
