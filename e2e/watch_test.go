package e2e

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// A reviewer follows aiko's live terminal session, with `sekisho watch` on
// the server and with `ssh kenji@bastion watch ID`, sees what aiko types
// and what the target answers, and cannot type into the session: neither
// through the watch's input nor with Ctrl-C, which only stops the watch.
func TestWatchLiveSession(t *testing.T) {
	t.Parallel()
	marker := randHex(t)
	sshLine := "ssh " + strings.Join(sshOpts("aiko"), " ") + " -p " + env.port + " -tt aiko+web-sg-01@" + env.host
	tech := newTmux(t, 120, 40, sshLine+"; sleep 60")
	waitUntil(t, 30*time.Second, "the remote shell's prompt", func() bool {
		lines := strings.Split(strings.TrimRight(tech.screen(), "\n "), "\n")
		last := strings.TrimSpace(lines[len(lines)-1])
		return strings.HasSuffix(last, "#") || strings.HasSuffix(last, "$")
	})
	tech.send("PS1='tech> '", "Enter")
	tech.send("echo joined-"+marker, "Enter")
	tech.waitScreen("joined-" + marker)
	id := liveSession(t, "aiko", "web-sg-01", "joined-"+marker)

	// Refusals: not a reviewer; no such session.
	if r := run(t, sshCmd(ctxT(t), "aiko", "aiko", "watch", id), nil); r.code != 1 || !strings.Contains(r.stderr, "watch is for reviewers and admins only") {
		t.Errorf("aiko watch: exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}
	if r := demoLogins().command(t, "kenji", "watch", "00000000-0000-4000-8000-000000000000"); r.code != 1 || !strings.Contains(r.stderr, "no session") {
		t.Errorf("kenji watch of an unknown session: exit %d, stderr %q", r.code, r.stderr)
	}

	// On the server: joins at the live point, with what is on the screen.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	cli := exec.CommandContext(ctx, env.sekisho, "watch", "--config", env.state.Config, id)
	cliOut, cliErr := &syncBuffer{}, &syncBuffer{}
	cli.Stdout, cli.Stderr = cliOut, cliErr
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	cliDone := make(chan error, 1)
	go func() { cliDone <- cli.Wait() }()
	waitFor(t, cliOut, "[sekisho: watching session "+id+" (aiko@web-sg-01) read-only; Ctrl-C to stop]")
	waitFor(t, cliOut, "joined-"+marker)

	// Over SSH without a terminal: what kenji sends on stdin goes nowhere.
	injected := "INJECTED-" + marker
	plain := demoLogins().mustCmd(t, "kenji", "watch", id)
	plain.Stdin = strings.NewReader("echo " + injected + "\n")
	plainOut, plainErr := &syncBuffer{}, &syncBuffer{}
	plain.Stdout, plain.Stderr = plainOut, plainErr
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	plainDone := make(chan error, 1)
	go func() { plainDone <- plain.Wait() }()
	waitFor(t, plainOut, "read-only; Ctrl-C to stop]")

	// Over SSH with a terminal: typing is dropped, Ctrl-C stops the watch.
	sshKenji := strings.Join(slices.Insert(demoLogins().mustCmd(t, "kenji", "watch", id).Args, 1, "-tt"), " ")
	reviewer := newTmux(t, 120, 40, sshKenji+"; echo watch-exited-$?; sleep 60")
	reviewer.waitScreen("read-only; Ctrl-C to stop]")
	reviewer.send("echo "+injected, "Enter")

	tech.send("echo typed-$((6*7))-"+marker, "Enter")
	for _, out := range []*syncBuffer{cliOut, plainOut} {
		waitFor(t, out, "typed-42-"+marker)
	}
	reviewer.waitScreen("typed-42-" + marker)
	reviewer.send("C-c")
	reviewer.waitScreen("[sekisho: stopped watching]")
	reviewer.waitScreen("watch-exited-0")

	// The session goes on, untouched by the reviewers.
	tech.send("echo still-"+marker, "Enter")
	tech.waitScreen("still-" + marker)
	waitFor(t, cliOut, "still-"+marker)
	if strings.Contains(tech.screen(), injected) {
		t.Errorf("a watcher's input reached the technician's session:\n%s", tech.screen())
	}

	tech.send("exit", "Enter")
	for _, w := range []struct {
		name string
		out  *syncBuffer
		done <-chan error
	}{{"sekisho watch", cliOut, cliDone}, {"ssh kenji@bastion watch", plainOut, plainDone}} {
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("%s: %v", w.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not end with the session:\n%s", w.name, w.out.String())
		}
		if !strings.Contains(w.out.String(), "[sekisho: session ended: ") {
			t.Errorf("%s did not say the session ended:\n%q", w.name, w.out.String())
		}
		if strings.Contains(w.out.String(), "\x1b]") {
			t.Errorf("%s passed an OSC sequence to the reviewer", w.name)
		}
	}
	_, ev := endedSession(t, "aiko", "web-sg-01", "still-"+marker)
	if strings.Contains(ev, injected) {
		t.Errorf("a watcher's input was recorded in the session:\n%s", ev)
	}
	if t.Failed() {
		t.Logf("cli stderr: %s\nssh stderr: %s", cliErr.String(), plainErr.String())
	}

	// A watch of an ended session shows its end and returns.
	out := sekishoCLI(t, "watch", id)
	if !strings.Contains(out, "read-only") || !strings.Contains(out, "[sekisho: session ended: ") {
		t.Errorf("watch of an ended session:\n%q", out)
	}
	hardening.Report(t, "13", "a non-reviewer's watch of a live session refused, a watch of an unknown session refused; a reviewer's input through 2 watches (stdin and a terminal) never reaches the session nor its recording")
	hardening.Report(t, "27", "a live session watched with sekisho watch and ssh watch without a terminal: no OSC sequence reaches either reviewer; in ssh watch with a terminal the reviewer's typing is dropped and Ctrl-C only stops the watch")
}

// liveSession returns the ID of tech's live session to target whose
// recording shows marker.
func liveSession(t *testing.T, tech, target, marker string) string {
	t.Helper()
	var id string
	waitUntil(t, 30*time.Second, "the live session in the register", func() bool {
		for _, s := range sessions(t) {
			if s.Technician == tech && s.Target == target && s.EndedAt == "" &&
				strings.Contains(sekishoCLI(t, "replay", "--events", s.ID), marker) {
				id = s.ID
				return true
			}
		}
		return false
	})
	return id
}
