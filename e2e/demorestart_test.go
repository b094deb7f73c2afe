package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ownDemo is a `sekisho demo` of a test's own, on a directory it chooses,
// besides the shared one the other tests use.
type ownDemo struct {
	dir    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	state  demoState
}

// startOwnDemo starts bin/sekisho demo on dir (random loopback ports) and
// waits until it is ready: demo.json written by this process, not one left
// by an earlier demo on dir. The demo is stopped when the test ends.
func startOwnDemo(t *testing.T, dir string, flags ...string) *ownDemo {
	t.Helper()
	d := &ownDemo{dir: dir, out: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(env.sekisho, append([]string{"demo", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"}, flags...)...)
	d.cmd.Dir = env.root
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.exited:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var st demoState
		if b, err := os.ReadFile(filepath.Join(dir, "demo.json")); err == nil && json.Unmarshal(b, &st) == nil && st.PID == d.cmd.Process.Pid {
			d.state = st
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("demo on %s exited before it was ready:\n%s", dir, d.out.String())
		case <-time.After(20 * time.Millisecond): // polling for demo.json, with a deadline
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo on %s not ready after 2 minutes:\n%s", dir, d.out.String())
		}
	}
}

// kill ends the demo with SIGKILL, as a crash or an OOM kill would, and
// waits until it is gone.
func (d *ownDemo) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// stop ends the demo as Ctrl-C does.
func (d *ownDemo) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("demo on %s did not stop on SIGINT:\n%s", d.dir, d.out.String())
	}
}

// ssh returns an ssh command as tech (the demo's key), to login running
// remote, answering a verification code prompt with code if one is given.
func (d *ownDemo) ssh(t *testing.T, tech, login, code, remote string) *exec.Cmd {
	t.Helper()
	host, port, _ := net.SplitHostPort(d.state.Bastion)
	args := []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + filepath.Join(d.dir, "known_hosts"),
		"-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-i", d.state.Keys[tech], "-p", port}
	if code == "" {
		args = append(args, "-o", "BatchMode=yes")
	} else {
		args = append(args, "-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1")
	}
	cmd := exec.CommandContext(ctxT(t), "ssh", append(args, login+"@"+host, remote)...)
	if code != "" {
		askpass := filepath.Join(t.TempDir(), "askpass")
		if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+code+"'\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	}
	return cmd
}

// code is what `sekisho demo code` prints for tech, as a person trying
// the demo would run it.
func (d *ownDemo) code(t *testing.T, tech string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctxT(t), env.sekisho, "demo", "code", "--dir", d.dir, tech)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !regexp.MustCompile(`^\d{6}\n$`).Match(out) {
		t.Fatalf("sekisho demo code %s: %v, stdout %q, stderr %q", tech, err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// secondFactorLogin logs li in to web-sg-01, which the demo's rules allow
// with a second factor, with the code `demo code` gives.
func (d *ownDemo) secondFactorLogin(t *testing.T, marker string) {
	t.Helper()
	r := run(t, d.ssh(t, "li", "li+web-sg-01", d.code(t, "li"), "echo "+marker), nil)
	if r.code != 0 || r.stdout != marker+"\n" {
		log, _ := os.ReadFile(filepath.Join(d.dir, "sekisho.log"))
		t.Fatalf("li to web-sg-01 with the code demo code printed: exit %d, stdout %q, stderr %q\nsekisho log (tail):\n%s",
			r.code, r.stdout, r.stderr, tail(string(log), 20))
	}
}

// The demo's Vault is in memory and new at every start, with a new
// transit key: the second factors stored sealed by the previous run's key
// no longer open. A second start on the same directory must still let li
// in with the code demo code prints.
func TestDemoRestartSecondFactor(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "demo")
	first := startOwnDemo(t, dir)
	first.secondFactorLogin(t, "first-start")
	first.stop(t)

	second := startOwnDemo(t, dir)
	if second.state.Vault == first.state.Vault {
		t.Fatalf("the second start reuses the Vault at %s", first.state.Vault)
	}
	second.secondFactorLogin(t, "second-start")
	if log, _ := os.ReadFile(filepath.Join(dir, "sekisho.log")); bytes.Contains(log, []byte("mfa.unopenable")) {
		t.Errorf("the demo's log has an mfa.unopenable event after its second start:\n%s", tail(string(log), 20))
	}
}

// A second demo on a directory another live demo holds is refused before
// it writes anything, saying which pid holds it and what to do; the first
// keeps working. A demo killed with SIGKILL leaves no lock behind.
func TestDemoDirectoryHeld(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "demo")
	first := startOwnDemo(t, dir)
	before, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	vaultAddr, err := os.ReadFile(filepath.Join(dir, "vault", "addr"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, env.sekisho, "demo", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0")
	second.Dir = env.root
	out, err := second.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("a second demo on %s: %v, want exit status 1\n%s", dir, err, out)
	}
	pid := first.cmd.Process.Pid
	want := fmt.Sprintf("sekisho: %s is in use by another demo (pid %d): stop it (Ctrl-C where it runs, or kill %d), or start this one with --dir on another directory\n", dir, pid, pid)
	if string(out) != want {
		t.Errorf("a second demo on the same directory said\n%q\nwant\n%q", out, want)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "demo.json")); !bytes.Equal(after, before) {
		t.Errorf("the refused demo changed demo.json:\n%s", after)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "vault", "addr")); !bytes.Equal(after, vaultAddr) {
		t.Errorf("the refused demo changed the Vault address: %q, was %q", after, vaultAddr)
	}
	// The first still works, second factor (Vault) included.
	first.secondFactorLogin(t, "still-the-first")
	if r := run(t, first.ssh(t, "aiko", "aiko+db-jp-01", "", "echo no-code-needed"), nil); r.code != 0 || r.stdout != "no-code-needed\n" {
		t.Errorf("aiko to db-jp-01 on the first demo: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	first.kill(t)
	third := startOwnDemo(t, dir)
	third.secondFactorLogin(t, "after-a-kill")
}
