package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// withClusterListen opens a node of a cluster to the other nodes on
// 127.0.0.1:port (cluster.listen), in the cluster section if the config
// has one.
func withClusterListen(cfg, port string) string {
	line := "  listen: 127.0.0.1:" + port + "\n"
	if strings.Contains(cfg, "\ncluster:\n") {
		return strings.Replace(cfg, "\ncluster:\n", "\ncluster:\n"+line, 1)
	}
	return cfg + "\ncluster:\n" + line
}

var clusterListenRe = regexp.MustCompile(`(?m)^cluster:\n(?:  .*\n)*?  listen: 127\.0\.0\.1:(\d+)$`)

// clusterPort is the port node v takes other nodes' connections on.
func clusterPort(t *testing.T, v *variant) string {
	t.Helper()
	b, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	m := clusterListenRe.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no cluster.listen", v.config)
	}
	return string(m[1])
}

// A live session on node 1 is followed through node 2: `sekisho watch`
// with node 2's config and node 2's console relay it from node 1 over the
// node-to-node link, and both are audited with the node that served the
// stream. The link admits only the cluster's host key: a technician's key
// is refused there, and the refusal audited.
func TestClusterWatchAcrossNodes(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3)
	one, two := c.nodes[0], c.nodes[1]
	m := randHex(t)
	tm := shellSession(t, one.ssh(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	tm.send("echo before-"+m+"-$((6*7))", "Enter")
	tm.waitScreen("before-" + m + "-42")
	var id string
	for _, s := range clusterSessions(t, two) {
		if s.Technician == "aiko" && s.Ended == "" && s.Node == "n1" {
			id = s.ID
		}
	}
	if id == "" {
		t.Fatalf("node 2 lists no live session of aiko's on n1: %+v", clusterSessions(t, two))
	}

	// `sekisho watch` on node 2.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	watch := exec.CommandContext(ctx, env.sekisho, "watch", "--config", two.config, id)
	var out syncBuffer
	watch.Stdout, watch.Stderr = &out, &out
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- watch.Wait() }()
	waitUntil(t, 30*time.Second, "the watch through node 2 to join at the live point", func() bool {
		return strings.Contains(out.String(), "before-"+m+"-42")
	})
	tm.send("echo typed-"+m+"-$((6*8))", "Enter")
	waitUntil(t, 10*time.Second, "the watch through node 2 to show what is typed on node 1", func() bool {
		return strings.Contains(out.String(), "typed-"+m+"-48")
	})

	// Node 2's console.
	b := startBrowser(t)
	con := variantConsole(two, c.web[1])
	con.signIn(t, b, "kenji")
	b.Go(con.url + "/sessions/" + id + "/live")
	waitPlayerText(t, b, "typed-"+m+"-48")
	tm.send("echo browser-"+m+"-$((6*9))", "Enter")
	waitPlayerText(t, b, "browser-"+m+"-54")
	if cols := playerCols(b); cols != 120 {
		t.Errorf("node 2's player shows %d columns; the technician's terminal on node 1 has 120", cols)
	}
	noSevere(t, b, "live through node 2")

	// Over SSH, as a reviewer would: `ssh kenji@bastion watch ID` landing
	// on node 3.
	sshWatch := c.nodes[2].logins(t).mustCmd(t, "kenji", "watch", id)
	var sshOut syncBuffer
	sshWatch.Stdout, sshWatch.Stderr = &sshOut, &sshOut
	if err := sshWatch.Start(); err != nil {
		t.Fatal(err)
	}
	sshExited := make(chan error, 1)
	go func() { sshExited <- sshWatch.Wait() }()
	waitUntil(t, 30*time.Second, "ssh … watch on node 3 to join", func() bool {
		return strings.Contains(sshOut.String(), "browser-"+m+"-54")
	})
	tm.send("echo ssh-"+m+"-$((6*10))", "Enter")
	waitUntil(t, 10*time.Second, "ssh … watch on node 3 to show what is typed on node 1", func() bool {
		return strings.Contains(sshOut.String(), "ssh-"+m+"-60")
	})

	// The session ends on node 1: the watches through nodes 2 and 3 end
	// with it.
	tm.send("exit", "Enter")
	select {
	case err := <-sshExited:
		if err != nil || !strings.Contains(sshOut.String(), "[sekisho: session ended") {
			t.Errorf("ssh … watch on node 3: %v\n%s", err, sshOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ssh … watch on node 3 went on after the session ended on node 1:\n%s", sshOut.String())
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("sekisho watch: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("sekisho watch on node 2 went on after the session ended on node 1:\n%s", out.String())
	}
	if s := out.String(); !strings.Contains(s, "browser-"+m+"-54") || !strings.Contains(s, "[sekisho: session ended") {
		t.Errorf("the watch through node 2 showed:\n%s", s)
	}
	audit, err := c.nodes[2].cli(t, "audit", "--kind", "session.watched", "--session", id)
	if err != nil || !strings.Contains(audit, `served by node n1`) || !strings.Contains(audit, `\"served_by\":\"n1\"`) {
		t.Errorf("the watches through node 2 are not audited with the node that served them: %v\n%s", err, audit)
	}

	// A technician's key on node 1's node-to-node port: refused, audited.
	ssh := one.ssh(ctxT(t), "aiko", "n2", "watch", id)
	for i, a := range ssh.Args {
		if a == "-p" {
			ssh.Args[i+1] = clusterPort(t, one)
		}
	}
	if r := run(t, ssh, nil); r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
		t.Fatalf("aiko's key on the node-to-node port: exit %d, stdout %q, stderr %q; want refused", r.code, r.stdout, r.stderr)
	}
	waitUntil(t, 10*time.Second, "the refusal to be audited", func() bool {
		out, err := c.nodes[2].cli(t, "audit", "--kind", "cluster.refused")
		return err == nil && strings.Contains(out, "is not the cluster's host key")
	})
}
