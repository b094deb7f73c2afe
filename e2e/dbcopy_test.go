package e2e

import (
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/sekisho/sekisho/internal/pgtest"
)

// An operator who outgrows one node: stop it, point its config at an
// empty PostgreSQL database, copy the SQLite state with one command, and
// start it again: the sessions, their recordings and the audit log are
// all there, and a new session joins them.
func TestMoveFromSQLiteToPostgreSQL(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	marker := "before-the-move-" + randHex(t)
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo "+marker), nil); r.code != 0 {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	if out, err := v.cli(t, "lock", "--technician", "wei", "--reason", "INC-9 on leave"); err != nil {
		t.Fatalf("lock: %v\n%s", err, out)
	}
	before, _ := v.cli(t, "sessions", "--json")
	id := regexp.MustCompile(`"id": "([0-9a-f-]{36})"`).FindStringSubmatch(before)
	if id == nil {
		t.Fatalf("no session before the move:\n%s", before)
	}
	v.kill(t, syscall.SIGTERM)

	b, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewDatabase(t)
	sqlite := regexp.MustCompile(`(?m)^state: (.*)$`).FindStringSubmatch(string(b))
	cfg := regexp.MustCompile(`(?m)^state: .*$`).ReplaceAllString(string(b), "database:\n  url: "+dsn+"\nnode_name: moved")
	if err := os.WriteFile(v.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := v.cli(t, "db", "copy", "--from", v.dir+"/"+sqlite[1])
	if err != nil || !regexp.MustCompile(`copied sessions 1, audit events \d+, access requests 0, locks 1, legal holds 0, second factors \d+, indexed texts \d+ from `).MatchString(out) {
		t.Fatalf("db copy: %v\n%s", err, out)
	}
	if out, err := v.cli(t, "db", "copy", "--from", v.dir+"/"+sqlite[1]); err == nil || !strings.Contains(out, "already holds") {
		t.Errorf("a second copy: %v\n%s", err, out)
	}
	v.start(t)

	if r, _ := v.cli(t, "replay", "--instant", id[1]); !strings.Contains(r, marker) {
		t.Errorf("the session from SQLite does not replay on PostgreSQL:\n%s", r)
	}
	if out, _ := v.cli(t, "locks"); !strings.Contains(out, "INC-9 on leave") {
		t.Errorf("the lock did not move:\n%s", out)
	}
	if r := run(t, v.ssh(ctxT(t), "wei", "wei+db-jp-01", "echo x"), nil); r.code != 255 || !strings.Contains(r.stderr, "technician wei is locked") {
		t.Errorf("the moved lock does not hold: exit %d, %q", r.code, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo after-the-move"), nil); r.code != 0 {
		t.Fatalf("after the move: exit %d, %q", r.code, r.stderr)
	}
	after, _ := v.cli(t, "sessions")
	if !strings.Contains(after, "NODE") || strings.Count(after, "aiko") < 2 {
		t.Errorf("sessions after the move:\n%s", after)
	}
	audit, _ := v.cli(t, "audit", "--kind", "session.start", "--limit", "10")
	if strings.Count(audit, "session.start") != 2 {
		t.Errorf("the audit log after the move holds %d session starts, want the one from before and the one after:\n%s", strings.Count(audit, "session.start"), audit)
	}
}
