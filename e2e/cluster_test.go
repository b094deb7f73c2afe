package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// cluster is several sekisho nodes sharing one PostgreSQL database, one
// object store for recordings, and one host key and recording key, as
// nodes behind a load balancer do; each node is a variant with a console.
type cluster struct {
	nodes []*variant
	web   []string // each node's console port
	dsn   string
	minio *minioServer
}

// startCluster starts n nodes on approvalRules, named n1, n2, …, one
// after the other (the first makes the shared keys and the schema).
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with edit applied to each node's
// config.
func startClusterWith(t *testing.T, n int, edit func(string) string) *cluster {
	t.Helper()
	c := &cluster{dsn: pgtest.NewDatabase(t), minio: startMinIO(t, "", "")}
	if err := c.minio.client.MakeBucket(context.Background(), "sekisho-cluster", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(minioUser+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(minioPassword+"\n"), 0o600)
	for i := range n {
		port := freePort(t)
		name := fmt.Sprintf("n%d", i+1)
		c.web = append(c.web, port)
		v := approvalVariant(t, "15m", withWeb(port, func(cfg string) string {
			cfg = regexp.MustCompile(`(?m)^state: .*$`).ReplaceAllString(cfg,
				"database:\n  url: "+c.dsn+"\nnode_name: "+name)
			cfg = regexp.MustCompile(`(?m)^host_key: .*$`).ReplaceAllString(cfg, "host_key: "+filepath.Join(keys, "host_key"))
			cfg = withClusterListen(cfg, freePort(t))
			cfg = strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
recording_stores:
  - name: cluster-store
    residency: [JP, SG]
    s3:
      endpoint: %s
      bucket: sekisho-cluster
      access_key_file: %s/access
      secret_key_file: %s/secret
      insecure: true
      stall_timeout: 2s
rules:
`, c.minio.addr, keys, keys), 1)
			if edit != nil {
				cfg = edit(cfg)
			}
			return cfg
		}))
		c.nodes = append(c.nodes, v)
	}
	return c
}

// clusterSessions is `sekisho sessions --json` through node v.
func clusterSessions(t *testing.T, v *variant) []struct {
	ID, Technician, Target, Node, EndReason string
	Ended                                   string `json:"ended_at"`
} {
	t.Helper()
	out, err := v.cli(t, "sessions", "--json")
	if err != nil {
		t.Fatalf("sessions: %v\n%s", err, out)
	}
	var list []struct {
		ID, Technician, Target, Node, EndReason string
		Ended                                   string `json:"ended_at"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	return list
}

// Three nodes on one PostgreSQL database act as one bastion: what one
// node serves every node lists, replays and verifies; a lock made
// through one ends a live session on another; an approval through one
// lets in a technician waiting on another; a console sign-in link
// printed by one signs in through another.
func TestClusterOfThreeNodes(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)

	// A session through each node.
	markers := map[string]string{}
	for i, v := range c.nodes {
		marker := fmt.Sprintf("served-by-n%d-%s", i+1, randHex(t))
		if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo "+marker), nil); r.code != 0 || r.stdout != marker+"\n" {
			t.Fatalf("through n%d: exit %d, %q, %q", i+1, r.code, r.stdout, r.stderr)
		}
		markers[fmt.Sprintf("n%d", i+1)] = marker
	}
	// ssh is back once the client has its exit status; the node that
	// served the session registers its end a moment later.
	var ids map[string]string // node: session
	waitUntil(t, 30*time.Second, "node 3 to list aiko's ended sessions of n1, n2 and n3", func() bool {
		ids = map[string]string{}
		for _, s := range clusterSessions(t, c.nodes[2]) {
			if s.Technician == "aiko" && s.Ended != "" {
				ids[s.Node] = s.ID
			}
		}
		return len(ids) == 3
	})
	// Replayed and verified through a node other than the one that served it.
	for node, id := range ids {
		other := c.nodes[(int(node[1]-'0'))%3]
		waitUntil(t, 30*time.Second, "the recording of "+id+" to be verified through another node", func() bool {
			out, err := other.cli(t, "verify", id)
			return err == nil && strings.Contains(out, id+": OK, complete")
		})
		out, err := other.cli(t, "replay", "--instant", id)
		if err != nil || !strings.Contains(out, markers[node]) {
			t.Errorf("replay of %s (served by %s) through another node: %v\n%s", id, node, err, out)
		}
	}
	if out, _ := c.nodes[0].cli(t, "sessions"); !strings.Contains(out, "NODE") || !strings.Contains(out, " n2 ") {
		t.Errorf("sessions does not say which node served each session:\n%s", out)
	}

	// A lock of web-sg-01 through node 2 ends aiko's live session to it
	// on node 3, and leaves the one to db-jp-01 running.
	other := startLive(t, c.nodes[2], "aiko", "aiko+db-jp-01")
	t.Run("lock", func(t *testing.T) {
		live := startLive(t, c.nodes[2], "aiko", "aiko+web-sg-01")
		locked := time.Now()
		out, err := c.nodes[1].cli(t, "lock", "--target", "web-sg-01", "--reason", "INC-77 host compromised")
		if err != nil || !strings.Contains(out, "locked") {
			t.Fatalf("lock through node 2: %v\n%s", err, out)
		}
		stderr := live.endsWithin(t, 10*time.Second, "on node 3 after a lock made through node 2")
		took := time.Since(locked)
		if !strings.Contains(stderr, "target web-sg-01 is locked") || !strings.Contains(stderr, "INC-77 host compromised") {
			t.Errorf("the technician on node 3 was not told why: %q", stderr)
		}
		t.Logf("a lock made through node 2 ended a live session on node 3 %s after the command started", took.Round(time.Millisecond))
		hardening.Report(t, "33", "three nodes on one PostgreSQL database: a lock made through node 2 ended a live session on node 3 %d ms after the command started", took.Milliseconds())
		if out, err := c.nodes[0].cli(t, "unlock", "1"); err != nil {
			t.Fatalf("unlock through node 1: %v\n%s", err, out)
		}
	})

	// li waits on node 1; kenji approves through node 2.
	t.Run("approval", func(t *testing.T) {
		id := fileRequest(t, c.nodes[0], "wei", "db-jp-01")
		_, _, done := startWaiting(t, c.nodes[0].ssh(ctxT(t), "wei", "wei+db-jp-01", "echo approved-elsewhere"))
		r := c.nodes[1].command(t, "kenji", "approve", id)
		approved := time.Now()
		if r.code != 0 || !strings.Contains(r.stdout, "granted until") {
			t.Fatalf("approve through node 2: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
		w := waitResult(t, done)
		took := time.Since(approved)
		if w.code != 0 || w.stdout != "approved-elsewhere\n" {
			t.Fatalf("waiting on node 1 after an approval through node 2: exit %d, %q, %q", w.code, w.stdout, w.stderr)
		}
		t.Logf("an approval through node 2 let in the technician waiting on node 1 %s later", took.Round(time.Millisecond))
	})

	// A console link printed by node 1 signs in through node 2.
	t.Run("console", func(t *testing.T) {
		one := variantConsole(c.nodes[0], c.web[0])
		two := "http://127.0.0.1:" + c.web[1]
		link := one.link(t, "kenji")
		b := startBrowser(t)
		b.Go(strings.Replace(link, one.url, two, 1))
		b.WaitText("#link-technician", "kenji")
		b.Find("#continue").Click()
		b.WaitText("#me-name", "kenji")
		// The same link does not work again, on any node.
		b.Go(link)
		b.WaitText("#signin-error", "unknown, used or expired")
	})

	// A verification code used through node 1 is refused through node 2.
	t.Run("code", func(t *testing.T) {
		l := c.nodes[0].logins(t)
		code := l.freshCode(t, "kenji")
		askpass := filepath.Join(t.TempDir(), "askpass")
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+code+"'\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		withCode := func(v *variant) result {
			cmd := v.ssh(ctxT(t), "kenji", "kenji", "requests")
			cmd.Args = append(cmd.Args[:1], append([]string{"-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1"}, cmd.Args[1:]...)...)
			cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
			return run(t, cmd, nil)
		}
		if r := withCode(c.nodes[0]); r.code != 0 {
			t.Fatalf("kenji's code through node 1: exit %d, %q", r.code, r.stderr)
		}
		r := withCode(c.nodes[1])
		if r.code != 255 || !strings.Contains(r.stderr, "that verification code was already used") {
			t.Fatalf("the same code through node 2: exit %d, stderr %q; want it refused as used", r.code, r.stderr)
		}
		hardening.Report(t, "33", "a verification code used through node 1 refused through node 2: %q", "that verification code was already used")
	})

	if !other.running() {
		t.Errorf("aiko's session to db-jp-01 on node 3 ended though nothing stopped it: %q", other.stderr.String())
	}
}
