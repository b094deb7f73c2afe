package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// moderatedWeb makes the rule to web-sg-01 ask for a moderator from the
// approvers, with the grace period given.
func moderatedWeb(grace string) func(string) string {
	return func(cfg string) string {
		return strings.Replace(cfg, "  - name: any-affiliate-to-web\n    effect: allow\n",
			"  - name: any-affiliate-to-web\n    effect: allow\n    moderation:\n      from: [approvers]\n      grace: "+grace+"\n", 1)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shellLine is cmd's arguments as one shell command line.
func shellLine(args []string) string {
	var out []string
	for _, a := range args {
		out = append(out, shellQuote(a))
	}
	return strings.Join(out, " ")
}

// terminal runs cmd as ssh -tt in tmux; the pane stays after ssh
// exits, showing "NAME-exited-STATUS".
func terminal(t *testing.T, cmd *exec.Cmd, name string) *tmux {
	t.Helper()
	args := append([]string{cmd.Args[0], "-tt"}, cmd.Args[1:]...)
	return newTmux(t, 160, 40, "sh -c "+shellQuote(shellLine(args)+"; echo "+name+"-exited-$?; sleep 3600"))
}

// A session whose rule asks for a moderator waits in plain ssh, nothing
// reaching the target, until one watches; the technician, someone of
// their affiliate and a locked moderator cannot moderate; once kenji
// watches (over SSH, in a terminal) the shell
// starts and he sees what is typed; when he leaves the technician's
// input is held at once and, after the grace period, the session ends.
func TestModeratedSessionWaitsHoldsAndEnds(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		// wei moves to aiko's affiliate, in the moderators' group.
		return strings.Replace(moderatedWeb("8s")(cfg), "  - name: wei\n    affiliate: ops-cn\n", "  - name: wei\n    affiliate: ops-jp\n    groups: [approvers]\n", 1)
	})
	tech := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01")
	tm := terminal(t, tech, "ssh")
	tm.waitScreen("this session needs 1 moderator(s) watching")
	m := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`).FindStringSubmatch(tm.screen())
	if m == nil {
		t.Fatalf("the waiting technician is not told the session ID:\n%s", tm.screen())
	}
	id := m[1]

	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko", "moderate", id), nil); r.code != 1 || !strings.Contains(r.stderr, "cannot moderate their own session") {
		t.Errorf("aiko moderating her own session: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := v.command(t, "wei", "moderate", id); r.code != 1 || !strings.Contains(r.stderr, "the technician's own affiliate") {
		t.Errorf("wei, of aiko's affiliate, moderating: exit %d, stderr %q", r.code, r.stderr)
	}
	// A locked moderator cannot moderate; unlocked, he can.
	if out, err := v.cli(t, "lock", "--technician", "kenji", "--reason", "INC-9 moderator away"); err != nil {
		t.Fatalf("lock: %v %s", err, out)
	}
	waitUntil(t, 90*time.Second, "kenji's moderation to be refused while he is locked", func() bool {
		r := v.command(t, "kenji", "moderate", id)
		return r.code != 0 && strings.Contains(r.stderr, "INC-9 moderator away")
	})
	if out, err := v.cli(t, "unlock", "1"); err != nil || !strings.Contains(out, "lock 1 removed") {
		t.Fatalf("unlock: %v %s", err, out)
	}
	screen := tm.screen()
	if strings.Contains(screen, "watched by") {
		t.Fatalf("the session started with no moderator watching:\n%s", screen)
	}

	var mod *exec.Cmd
	waitUntil(t, 90*time.Second, "kenji's command login to be let in again after the unlock (a fresh code step may take 30 s)", func() bool {
		c, refused := v.logins(t).cmd(t, "kenji", "moderate", id)
		mod = c
		return refused == nil
	})
	// He first moderates over a connection of its own (not the command
	// connection above), which the test can cut.
	own := v.logins(t).withCode(t, "kenji", v.ssh(ctxT(t), "kenji", "kenji", "moderate", id))
	own.Args = append(own.Args[:1], append([]string{"-tt"}, own.Args[1:]...)...)
	envs := ""
	for _, e := range own.Env {
		if strings.HasPrefix(e, "SSH_ASKPASS") || strings.HasPrefix(e, "DISPLAY=") {
			envs += shellQuote(e) + " "
		}
	}
	mt := newTmux(t, 160, 40, "env "+envs+shellLine(own.Args))
	mt.waitScreen("moderating session " + id)
	tm.waitScreen("watched by kenji; connecting to web-sg-01")
	tm.send("echo mod-marker-$((6*7))", "Enter")
	tm.waitScreen("mod-marker-42")
	mt.waitScreen("mod-marker-42")

	// The moderator's client dies (no Ctrl-C, no goodbye): his seat is
	// empty at once, while the technician's shell sits idle.
	if err := exec.Command("pkill", "-KILL", "-f", "^ssh .*moderate "+id+"$").Run(); err != nil {
		t.Fatalf("kill the moderator's ssh: %v", err)
	}
	tm.waitScreen("the moderators left: your input is held")
	tm.send("echo held-$((40+2))", "Enter")
	// He comes back within the grace period: the input goes through again.
	mt2 := terminal(t, mod, "moderate")
	mt2.waitScreen("moderating session " + id)
	tm.waitScreen("watched again by kenji: your input goes through")
	tm.send("echo again-$((40+3))", "Enter")
	tm.waitScreen("again-43")
	mt2.waitScreen("again-43")
	if strings.Contains(tm.screen(), "held-42") {
		t.Errorf("input typed while held reached the target:\n%s", tm.screen())
	}

	// He leaves with Ctrl-C; nobody comes: the session ends after the grace.
	mt2.send("C-c")
	mt2.waitScreen("moderate-exited-0")
	tm.waitScreen("your input is held; the session ends in 8s")
	tm.send("echo held-$((40+2))", "Enter")
	tm.waitScreen("no moderator watched for 8s")
	tm.waitScreen("ssh-exited-")
	if strings.Contains(tm.screen(), "held-42") {
		t.Errorf("input typed while held reached the target:\n%s", tm.screen())
	}
	kinds := map[string]bool{}
	waitUntil(t, 10*time.Second, "the session's end to be audited", func() bool {
		for _, e := range v.audit(t) {
			if e["session"] == id {
				kinds[e["kind"]] = true
			}
		}
		return kinds["session.revoked"]
	})
	for _, k := range []string{"moderation.waiting", "moderation.joined", "moderation.left", "session.revoked"} {
		if !kinds[k] {
			t.Errorf("no %s audited for the session (got %v)", k, kinds)
		}
	}
}

// A moderator, watching over SSH, sends the technician a line, holds and
// releases their input, and ends the session with a reason, from the
// command line Ctrl-] opens; each lands on the replay's timeline and in
// the audit log. A command (no terminal) under the moderated rule waits
// for a moderator the same way.
func TestModeratorSaysHoldsAndEnds(t *testing.T) {
	t.Parallel()
	v := startVariant(t, moderatedWeb("30s"))

	// A command waits too, told why on stderr, and runs once watched.
	execDone := make(chan result, 1)
	go func() { execDone <- run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "exec-ran-$((6*7))"), nil) }()
	var execID string
	waitUntil(t, 30*time.Second, "the command's session to wait for a moderator", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "moderation.waiting" {
				execID = e["session"]
			}
		}
		return execID != ""
	})
	var mod *exec.Cmd
	waitUntil(t, 90*time.Second, "kenji's command login (a fresh code step may take 30 s)", func() bool {
		c, refused := v.logins(t).cmd(t, "kenji", "moderate", execID)
		mod = c
		return refused == nil
	})
	mt := terminal(t, mod, "moderate")
	mt.waitScreen("moderating session " + execID)
	r := <-execDone
	if r.code != 0 || !strings.Contains(r.stdout, "exec-ran-42") || !strings.Contains(r.stderr, "needs 1 moderator(s) watching") {
		t.Fatalf("the moderated command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	mt.waitScreen("moderate-exited-0")

	// A file transfer waits the same way: the file arrives once watched.
	src := filepath.Join(t.TempDir(), "upload")
	content := "moderated upload " + randHex(t) + "\n"
	if err := os.WriteFile(src, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := "/tmp/sekisho-moderated-" + randHex(t)
	t.Cleanup(func() { os.Remove(dst) })
	scpDone := make(chan result, 1)
	go func() {
		scpDone <- run(t, exec.CommandContext(ctxT(t), "scp", append(scpOpts(t, v, "aiko"), src, "aiko+web-sg-01@127.0.0.1:"+dst)...), nil)
	}()
	var scpID string
	waitUntil(t, 30*time.Second, "the transfer's session to wait for a moderator", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "moderation.waiting" && e["session"] != execID {
				scpID = e["session"]
			}
		}
		return scpID != ""
	})
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("the file arrived before a moderator watched")
	}
	mod = v.logins(t).mustCmd(t, "kenji", "moderate", scpID)
	mt = terminal(t, mod, "moderate")
	if r := <-scpDone; r.code != 0 {
		t.Fatalf("the moderated scp: exit %d, stderr %q", r.code, r.stderr)
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != content {
		t.Fatalf("the moderated upload arrived as %q (%v)", got, err)
	}
	mt.waitScreen("moderate-exited-0")

	tech := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01")
	tm := terminal(t, tech, "ssh")
	tm.waitScreen("this session needs 1 moderator(s) watching")
	m := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`).FindStringSubmatch(tm.screen())
	if m == nil {
		t.Fatalf("the waiting technician is not told the session ID:\n%s", tm.screen())
	}
	id := m[1]
	mod = v.logins(t).mustCmd(t, "kenji", "moderate", id)
	mt = terminal(t, mod, "moderate")
	mt.waitScreen("moderating session " + id)
	tm.waitScreen("watched by kenji; connecting to web-sg-01")
	tm.send("echo ready-$((1+1))", "Enter")
	tm.waitScreen("ready-2")

	command := func(line string) {
		t.Helper()
		mt.send("C-]")
		mt.waitScreen("moderate>")
		mt.send(line, "Enter")
	}
	command("say check the backup first")
	mt.waitScreen("[sekisho: sent to aiko]")
	tm.waitScreen("moderator kenji says: check the backup first")

	command("hold")
	mt.waitScreen("aiko's input is held")
	tm.waitScreen("moderator kenji holds your input")
	tm.send("echo held-$((40+2))", "Enter")
	tm.send("~B") // OpenSSH's escape: a break request, input too
	command("release")
	mt.waitScreen("aiko's input goes through")
	tm.waitScreen("moderator kenji released your input")
	tm.send("echo released-$((40+3))", "Enter")
	tm.waitScreen("released-43")
	mt.waitScreen("released-43")
	if strings.Contains(tm.screen(), "held-42") {
		t.Errorf("input typed while held reached the target:\n%s", tm.screen())
	}
	command("hold")
	command("hold")
	mt.waitScreen("the input is already held by kenji")
	command("end ") // not "end": tmux would send the End key
	mt.waitScreen("give a reason")
	command("end wrong table")
	tm.waitScreen("session ended: ended by moderator kenji: wrong table")
	tm.waitScreen("ssh-exited-")
	mt.waitScreen("moderate-exited-0")

	kinds := map[string]bool{}
	waitUntil(t, 10*time.Second, "the session's end to be audited", func() bool {
		for _, e := range v.audit(t) {
			if e["session"] == id {
				kinds[e["kind"]] = true
			}
		}
		return kinds["session.end"]
	})
	for _, k := range []string{"moderation.message", "moderation.hold", "moderation.release", "moderation.end", "session.revoked"} {
		if !kinds[k] {
			t.Errorf("no %s audited for the session (got %v)", k, kinds)
		}
	}
	ev, err := v.cli(t, "replay", "--events", id)
	if err != nil {
		t.Fatalf("replay --events: %v %s", err, ev)
	}
	for _, want := range []string{"watched by kenji", "kenji said: check the backup first", "kenji held the input", "kenji released the input", "kenji ended the session: wrong table"} {
		if !strings.Contains(ev, want) {
			t.Errorf("the recording's events lack %q:\n%s", want, ev)
		}
	}
	if strings.Contains(ev, "x-break") {
		t.Errorf("a break request reached the target while the input was held:\n%s", ev)
	}
}

// The demo's shape: li's approved session on db-jp-01 also needs a
// moderator. Approved, she is told she now waits for one; kenji
// moderates and her shell starts. (The rule is approvalRules' with the
// demo's block; TestDemoModeratesLisApprovedShell runs the demo itself.)
func TestApprovedSessionWaitsForModerator(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", func(cfg string) string {
		return strings.Replace(cfg, "      max_grant: 2h\n", "      max_grant: 2h\n    moderation:\n      from: [approvers]\n      grace: 30s\n", 1)
	})
	tm := waitingTerminal(t, v, "li", "li+db-jp-01")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-77 vacuum", "Enter")
	tm.waitScreen("Duration (at most 2h0m0s)")
	tm.send("30m", "Enter")
	tm.waitScreen("is waiting for 1 approval(s)")
	req := regexp.MustCompile(`request (\d+) is waiting`).FindStringSubmatch(tm.screen())[1]
	if r := v.command(t, "kenji", "approve", req); r.code != 0 {
		t.Fatalf("approve: exit %d, stderr %q", r.code, r.stderr)
	}
	tm.waitScreen("this session needs 1 moderator(s) watching")
	m := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`).FindStringSubmatch(tm.screen())
	if m == nil {
		t.Fatalf("li is not told the session ID:\n%s", tm.screen())
	}
	if out, err := v.cli(t, "sessions", "--json"); err != nil || strings.Contains(out, `"technician": "li"`) {
		t.Fatalf("the approved session started before a moderator watched: %v %s", err, out)
	}
	mod := v.logins(t).mustCmd(t, "kenji", "moderate", m[1])
	mt := terminal(t, mod, "moderate")
	mt.waitScreen("moderating session " + m[1])
	tm.waitScreen("watched by kenji; connecting to db-jp-01")
	tm.send("echo approved-and-watched-$((6*7))", "Enter")
	tm.waitScreen("approved-and-watched-42")
	mt.waitScreen("approved-and-watched-42")
}

// The demo's walk-through, on the demo itself: li asks for db-jp-01,
// kenji approves; her shell then waits for a moderator until kenji
// moderates it; he leaves and her input is held.
func TestDemoModeratesLisApprovedShell(t *testing.T) {
	t.Parallel()
	d := startOwnDemo(t, t.TempDir())
	li := d.ssh(t, "li", "li+db-jp-01", d.code(t, "li"), "")
	li.Args = append(li.Args[:len(li.Args)-1], "-tt") // a shell, on a terminal
	envs := ""
	for _, e := range li.Env {
		if strings.HasPrefix(e, "SSH_ASKPASS") || strings.HasPrefix(e, "DISPLAY=") {
			envs += shellQuote(e) + " "
		}
	}
	tm := newTmux(t, 160, 40, "env "+envs+shellLine(li.Args)+"; echo ssh-exited-$?; sleep 3600")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-88 slow query on the messages table", "Enter")
	tm.waitScreen("Duration (at most")
	tm.send("30m", "Enter")
	tm.waitScreen("is waiting for 1 approval(s)")
	req := regexp.MustCompile(`request (\d+) is waiting`).FindStringSubmatch(tm.screen())[1]

	// kenji logs in once (one code) and both approves and moderates over
	// that connection.
	master := []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + filepath.Join(t.TempDir(), "kenji.sock"), "-o", "ControlPersist=120"}
	approve := d.ssh(t, "kenji", "kenji", d.code(t, "kenji"), "approve "+req)
	approve.Args = append(approve.Args[:1], append(master, approve.Args[1:]...)...)
	if r := run(t, approve, nil); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Fatalf("kenji approve %s: exit %d, stdout %q, stderr %q", req, r.code, r.stdout, r.stderr)
	}
	tm.waitScreen("this session needs 1 moderator(s) watching")
	if !strings.Contains(tm.screen(), "who may moderate: kenji") {
		t.Errorf("li is not told that kenji may moderate:\n%s", tm.screen())
	}
	id := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`).FindStringSubmatch(tm.screen())
	if id == nil {
		t.Fatalf("li is not told the session ID:\n%s", tm.screen())
	}
	mod := d.ssh(t, "kenji", "kenji", "", "moderate "+id[1])
	mod.Args = append(mod.Args[:1], append(append(master, "-tt"), mod.Args[1:]...)...)
	mt := newTmux(t, 160, 40, shellLine(mod.Args)+"; echo moderate-exited-$?; sleep 3600")
	mt.waitScreen("moderating session " + id[1])
	tm.waitScreen("watched by kenji; connecting to db-jp-01")
	tm.send("echo demo-moderated-$((6*7))", "Enter")
	mt.waitScreen("demo-moderated-42")
	mt.send("C-c")
	mt.waitScreen("moderate-exited-0")
	tm.waitScreen("your input is held; the session ends in 30s unless one watches again")
}

// In a cluster, a moderator reaches a session through any node: aiko's
// session waits on node 1; kenji moderates it over SSH through node 2
// (seated on node 1 over the node-to-node link), talks to her and
// leaves, which holds her input; node 2's console lists it for him, and
// there he joins again and ends it.
func TestClusterModeratorOnAnotherNode(t *testing.T) {
	t.Parallel()
	c := startClusterWith(t, 2, func(cfg string) string {
		return strings.Replace(cfg, "  - name: aiko-anywhere\n    effect: allow\n",
			"  - name: aiko-anywhere\n    effect: allow\n    moderation:\n      from: [approvers]\n      grace: 30s\n", 1)
	})
	one, two := c.nodes[0], c.nodes[1]
	tech := one.ssh(ctxT(t), "aiko", "aiko+web-sg-01")
	tm := terminal(t, tech, "ssh")
	tm.waitScreen("a moderator joins in the console")
	id := regexp.MustCompile(`session ([0-9a-f-]{36}): a moderator joins`).FindStringSubmatch(tm.screen())[1]

	b := startBrowser(t)
	console := variantConsole(two, c.web[1])
	console.signIn(t, b, "kenji")
	b.Go(console.url + "/")
	b.WaitText(`#moderated-sessions tr[data-session="`+id+`"]`, "aiko")

	mod := two.logins(t).mustCmd(t, "kenji", "moderate", id)
	mt := terminal(t, mod, "moderate")
	mt.waitScreen("moderating session " + id + " of aiko on web-sg-01")
	tm.waitScreen("watched by kenji; connecting to web-sg-01")
	tm.send("echo across-$((6*7))", "Enter")
	mt.waitScreen("across-42")
	mt.send("C-]")
	mt.waitScreen("moderate>")
	mt.send("say hello from node two", "Enter")
	mt.waitScreen("[sekisho: sent to aiko]")
	tm.waitScreen("moderator kenji says: hello from node two")
	mt.send("C-c")
	mt.waitScreen("moderate-exited-0")
	tm.waitScreen("the moderators left: your input is held")

	// He comes back in node 2's console, and ends the session there.
	b.Go(console.url + "/sessions/" + id + "/moderate")
	tm.waitScreen("watched again by kenji: your input goes through")
	waitPlayerText(t, b, "across-42")
	b.Find(`#end-form input[name="reason"]`).Type("done from node two")
	b.Find("#end").Click()
	tm.waitScreen("session ended: ended by moderator kenji: done from node two")
	noSevere(t, b, "moderate across nodes")

	var sources []string
	waitUntil(t, 10*time.Second, "the moderation to be audited", func() bool {
		sources = nil
		for _, e := range one.audit(t) {
			if e["session"] == id && strings.HasPrefix(e["kind"], "moderation.") {
				sources = append(sources, e["kind"]+" "+e["source"])
			}
		}
		return slices.Contains(sources, "moderation.left node n2")
	})
	for _, want := range []string{"moderation.joined node n2", "moderation.message node n2", "moderation.end node n2"} {
		if !slices.Contains(sources, want) {
			t.Errorf("audit lacks %q: %v", want, sources)
		}
	}
}
