package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// pgVariant starts a node whose state is in dsn.
func pgVariant(t *testing.T, dsn string) *variant {
	t.Helper()
	return startVariant(t, func(cfg string) string {
		return regexp.MustCompile(`(?m)^state: .*$`).ReplaceAllString(cfg, "database:\n  url: "+dsn+"\nnode_name: pg1")
	})
}

// PostgreSQL restarted while a node serves: the live session goes on,
// a login while it is down is refused with a short message, logins
// resume once it is back, and the session that lived through it is in
// the register, ended, with a recording that verifies and holds what was
// typed before, during and after.
func TestPostgreSQLRestartUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dsn, err := pg.Database(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := pgVariant(t, dsn)

	// A session that echoes each line it is sent.
	cmd := v.ssh(ctx, "aiko", "aiko+db-jp-01", "while read l; do echo got-$l; done")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(out)
	echo := func(word string) {
		t.Helper()
		io.WriteString(in, word+"\n")
		got := make(chan string, 1)
		go func() { l, _ := lines.ReadString('\n'); got <- l }()
		select {
		case l := <-got:
			if l != "got-"+word+"\n" {
				t.Fatalf("sent %s, the session answered %q (stderr %q)", word, l, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("sent %s, no answer within 30s (stderr %q)", word, stderr.String())
		}
	}
	echo("before")
	// A second session, which ends while PostgreSQL is down.
	short := v.ssh(ctx, "aiko", "aiko+db-jp-01", "read l; echo bye-$l")
	shortIn, _ := short.StdinPipe()
	shortOut := &syncBuffer{}
	short.Stdout, short.Stderr = shortOut, &syncBuffer{}
	if err := short.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the second session to be registered", func() bool {
		list, _ := v.cli(t, "sessions", "--json", "--technician", "aiko")
		return strings.Count(list, `"id"`) == 2
	})

	if err := pg.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	echo("during")
	io.WriteString(shortIn, "outage\n")
	if err := short.Wait(); err != nil || shortOut.String() != "bye-outage\n" {
		t.Errorf("a session ending while PostgreSQL is down: %v, %q", err, shortOut.String())
	}
	down := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo during-outage"), nil)
	if down.code != 255 || strings.Contains(down.stdout, "during-outage") || !strings.Contains(down.stderr, "sekisho:") ||
		strings.Contains(down.stderr, "127.0.0.1:"+strings.Split(strings.TrimPrefix(dsn, "postgres://sekisho@127.0.0.1:"), "/")[0]) {
		t.Errorf("a login while PostgreSQL is down: exit %d, stdout %q, stderr %q; want a short refusal without internals", down.code, down.stdout, down.stderr)
	}
	t.Logf("a login while PostgreSQL is down was told: %q", strings.TrimSpace(down.stderr))
	refused := regexp.MustCompile(`\(session ([0-9a-f-]{36})\)`).FindStringSubmatch(down.stderr)

	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitUntil(t, 30*time.Second, "logins to resume after PostgreSQL is back", func() bool {
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo after-outage"), nil)
		return r.code == 0 && r.stdout == "after-outage\n"
	})
	resumed := time.Since(back)
	t.Logf("logins resumed %s after PostgreSQL came back", resumed.Round(time.Millisecond))
	echo("after")
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the session that lived through the outage: %v (stderr %q)", err, stderr.String())
	}

	// What happened while it was down reached the register and the audit
	// log once it was back: the refused login, the end of the session that
	// ended meanwhile.
	waitUntil(t, 30*time.Second, "the writes kept during the outage to reach PostgreSQL: no session left live", func() bool {
		out, _ := v.cli(t, "sessions", "--json", "--technician", "aiko")
		return strings.Count(out, `"id"`) == 3 && strings.Count(out, `"ended_at"`) == 3
	})
	if refused == nil {
		t.Errorf("the refusal names no session: %q", down.stderr)
	} else {
		found := false
		for _, e := range v.audit(t) {
			found = found || e["session"] == refused[1]
		}
		if !found {
			t.Errorf("the login refused during the outage (session %s) is not in the audit log", refused[1])
		}
	}

	// The register knows it ended, and its recording verifies.
	var id string
	waitUntil(t, 30*time.Second, "the session to be ended in the register", func() bool {
		out, _ := v.cli(t, "sessions", "--json", "--technician", "aiko")
		var list []struct {
			ID        string `json:"id"`
			Ended     string `json:"ended_at"`
			EndReason string `json:"end_reason"`
		}
		json.Unmarshal([]byte(out), &list)
		for _, s := range list {
			if s.Ended == "" || s.EndReason != "client closed" {
				continue
			}
			if r, _ := v.cli(t, "replay", "--instant", s.ID); strings.Contains(r, "got-during") {
				id = s.ID
				return true
			}
		}
		return false
	})
	if out, err := v.cli(t, "verify", id); err != nil || !strings.Contains(out, id+": OK, complete") {
		t.Errorf("verify the session that lived through the outage: %v\n%s", err, out)
	}
	if r, _ := v.cli(t, "replay", "--instant", id); !strings.Contains(r, "got-before") || !strings.Contains(r, "got-after") {
		t.Errorf("the recording lacks what was sent before or after the outage:\n%s", r)
	}
	hardening.Report(t, "33", "PostgreSQL stopped and started under a live session: the session went on, a login meanwhile was refused and audited once it was back, a session that ended meanwhile is ended in the register, logins resumed %d ms after it came back", resumed.Milliseconds())
}

// A node whose PostgreSQL does not answer at start says so and exits.
func TestPostgreSQLDownAtStart(t *testing.T) {
	t.Parallel()
	dsn := "postgres://sekisho@127.0.0.1:" + freePort(t) + "/sekisho?connect_timeout=3"
	b, err := os.ReadFile(env.state.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`(?m)^state: .*$`).ReplaceAllString(string(b), "database:\n  url: "+dsn)
	cfg = regexp.MustCompile(`(?m)^listen: .*$`).ReplaceAllString(cfg, "listen: 127.0.0.1:"+freePort(t))
	cfg = regexp.MustCompile(`(?m)^web:\n(  .*\n)*`).ReplaceAllString(cfg, "")
	path := filepath.Join(env.dir, "pgdown-"+randHex(t)+".yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	defer os.Remove(path)
	o, err := exec.CommandContext(ctxT(t), env.sekisho, "serve", "--config", path).CombinedOutput()
	out := string(o)
	if err == nil || !strings.Contains(out, "does not answer") || !strings.Contains(out, "state store: PostgreSQL at 127.0.0.1:") {
		t.Errorf("sekisho serve with PostgreSQL down: %v\n%s", err, out)
	}
}
