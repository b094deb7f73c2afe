package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tmux drives a real terminal: ssh runs in a tmux pane, keys are sent with
// send-keys and the screen is read with capture-pane.
type tmux struct {
	t      *testing.T
	socket string
	name   string
}

func newTmux(t *testing.T, cols, rows int, command string) *tmux {
	t.Helper()
	tm := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock"), name: "e2e"}
	tm.run("new-session", "-d", "-s", tm.name, "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), command)
	t.Cleanup(func() { exec.Command("tmux", "-S", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (tm *tmux) send(keys ...string) {
	tm.run(append([]string{"send-keys", "-t", tm.name}, keys...)...)
}

func (tm *tmux) screen() string {
	out, err := exec.Command("tmux", "-S", tm.socket, "capture-pane", "-p", "-t", tm.name).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func (tm *tmux) waitScreen(want string) {
	tm.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(tm.screen(), want) {
		if time.Now().After(deadline) {
			tm.t.Fatalf("screen never showed %q:\n%s", want, tm.screen())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInteractiveShell(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exitFile := filepath.Join(dir, "exit")
	sshLine := "ssh " + strings.Join(sshOpts("aiko"), " ") + " -p " + env.port + " aiko+db-jp-01@" + env.host
	tm := newTmux(t, 120, 40, fmt.Sprintf("%s; echo $? > %s; sleep 60", sshLine, exitFile))
	marker := randHex(t)

	// Type only once the remote shell shows its prompt, as a person would.
	waitUntil(t, 30*time.Second, "the remote shell's prompt", func() bool {
		lines := strings.Split(strings.TrimRight(tm.screen(), "\n "), "\n")
		last := strings.TrimSpace(lines[len(lines)-1])
		return strings.HasSuffix(last, "#") || strings.HasSuffix(last, "$")
	})
	tm.send("PS1='prompt> '", "Enter")
	tm.waitScreen("prompt> ")
	tm.send(fmt.Sprintf("echo typed-%s-$((6*7)); stty size", marker), "Enter")
	tm.waitScreen(fmt.Sprintf("typed-%s-42", marker))
	tm.waitScreen("40 120")

	// Resize: the target's pty follows.
	tm.run("resize-window", "-t", tm.name, "-x", "100", "-y", "30")
	tm.send("clear; stty size", "Enter")
	tm.waitScreen("30 100")

	// Ctrl-C interrupts the remote command, not the connection. The
	// sleep's length is this test's own: other tests' sleeps of 300 s
	// would pass for it, and Ctrl-C would come before it runs.
	tm.send("sleep 299.4242", "Enter")
	waitUntil(t, 30*time.Second, "sleep to run on the target", func() bool {
		out, _ := exec.Command("pgrep", "-f", `^sleep 299\.4242$`).Output()
		return len(out) > 0
	})
	tm.send("C-c")
	tm.send("echo after-$?", "Enter")
	tm.waitScreen("after-130")

	tm.send("exit 3", "Enter")
	waitUntil(t, 30*time.Second, "ssh to exit", func() bool {
		b, err := os.ReadFile(exitFile)
		return err == nil && strings.TrimSpace(string(b)) != ""
	})
	if b, _ := os.ReadFile(exitFile); strings.TrimSpace(string(b)) != "3" {
		t.Errorf("ssh exit status %q, want 3", strings.TrimSpace(string(b)))
	}

	s, ev := endedSession(t, "aiko", "db-jp-01", "typed-"+marker)
	typed, shown := streams(t, ev, "i"), streams(t, ev, "o")
	if want := "echo typed-" + marker + "-$((6*7)); stty size\r"; !strings.Contains(typed, want) {
		t.Errorf("recorded input lacks %q", want)
	}
	if !strings.Contains(typed, "sleep 299.4242\r\x03") {
		t.Errorf("recorded input lacks the Ctrl-C after the sleep")
	}
	if want := "typed-" + marker + "-42\r\n"; !strings.Contains(shown, want) {
		t.Errorf("recorded output lacks %q", want)
	}
	if streams(t, ev, "r") != "100x30" || streams(t, ev, "x-exit-status") != "3" || !strings.Contains(ev, "pty=true") {
		t.Errorf("recording lacks the resize, the exit status or the pty flag")
	}
	if t.Failed() {
		t.Logf("recording:\n%s", ev)
	}

	// The terminal recording is asciicast v2 that asciinema plays.
	cast := filepath.Join(env.dir, "recordings", s.ID, "1.cast")
	out, err := exec.Command("script", "-qec", "asciinema cat "+cast, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "typed-"+marker+"-42") {
		t.Errorf("asciinema cat: %v\n%s", err, out)
	}
	// sekisho replay shows it too.
	replay := sekishoCLI(t, "replay", "--instant", s.ID)
	if !strings.Contains(replay, "typed-"+marker+"-42") || !strings.Contains(replay, "exit status 3") {
		t.Errorf("sekisho replay output lacks the session:\n%s", replay)
	}
	// And the session list shows it, ended.
	list := sekishoCLI(t, "sessions")
	if !strings.Contains(list, s.ID) || !strings.Contains(list, "client closed") && !strings.Contains(list, "target closed") {
		t.Errorf("sekisho sessions does not list %s as ended:\n%s", s.ID, list)
	}
}
