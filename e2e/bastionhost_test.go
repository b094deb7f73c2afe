package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestLoginWithoutTargetNeverTouchesTheBastion: a login that names no
// target reaches sekisho's own commands and nothing else. sftp, a shell,
// a command, scp and forwards to the bastion's own addresses all fail,
// and a secret file on the bastion host never reaches the technician.
func TestLoginWithoutTargetNeverTouchesTheBastion(t *testing.T) {
	t.Parallel()
	secret := "bastion-secret-" + randHex(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	leaked := func(name string, r result) {
		t.Helper()
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("%s: the bastion's file reached the technician: %q", name, r.stdout+r.stderr)
		}
	}

	// sftp: the subsystem is refused.
	batch := filepath.Join(dir, "batch")
	os.WriteFile(batch, []byte("ls "+dir+"\nget "+path+" "+filepath.Join(dir, "got")+"\n"), 0o600)
	r := run(t, exec.CommandContext(ctxT(t), "sftp", append(sshOpts("aiko"), "-P", env.port, "-b", batch, "aiko@"+env.host)...), nil)
	leaked("sftp", r)
	if r.code == 0 || !strings.Contains(r.stderr, "subsystem request failed") {
		t.Errorf("sftp to a login without a target: exit %d, stderr %q; want the subsystem refused", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "got")); err == nil {
		t.Error("sftp fetched a file from the bastion")
	}

	// scp in both protocols.
	for _, proto := range [][]string{{}, {"-O"}} {
		args := append(append(append([]string{}, proto...), sshOpts("aiko")...), "-P", env.port, "aiko@"+env.host+":"+path, filepath.Join(dir, "scp"))
		r := run(t, exec.CommandContext(ctxT(t), "scp", args...), nil)
		leaked("scp "+strings.Join(proto, ""), r)
		if r.code == 0 {
			t.Errorf("scp %v from a login without a target succeeded", proto)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "scp")); err == nil {
		t.Error("scp fetched a file from the bastion")
	}

	// A command is one of sekisho's, or refused; never a shell command.
	r = run(t, sshCmd(ctxT(t), "aiko", "aiko", "cat", path), nil)
	leaked("exec cat", r)
	if r.code != 2 || !strings.Contains(r.stderr, "unknown command") {
		t.Errorf("exec cat: exit %d, stderr %q; want sekisho's unknown command (exit 2)", r.code, r.stderr)
	}

	// A shell gets sekisho's commands, not a shell: what is typed is not run.
	r = run(t, sshCmd(ctxT(t), "aiko", "aiko"), []byte("cat "+path+"\nid\n"))
	leaked("shell", r)
	if strings.Contains(r.stdout, "uid=") || !strings.Contains(r.stdout, "sekisho commands") {
		t.Errorf("shell: stdout %q; want sekisho's command list and nothing run", r.stdout)
	}

	// Forwards to the bastion itself and to the target, by -W.
	for _, to := range []string{"127.0.0.1:" + env.port, env.state.Targets[0].Address} {
		args := append(sshOpts("aiko"), "-p", env.port, "-W", to, "aiko@"+env.host)
		r := run(t, exec.CommandContext(ctxT(t), "ssh", args...), nil)
		if r.code == 0 || strings.Contains(r.stdout, "SSH-2.0-") {
			t.Errorf("-W %s through a login without a target: exit %d, stdout %q", to, r.code, r.stdout)
		}
		if !strings.Contains(r.stderr, "runs sekisho's commands only") {
			t.Errorf("-W %s: stderr %q; want the reason", to, r.stderr)
		}
	}
	hardening.Report(t, "9", "a login without a target tries sftp, scp in both protocols, exec cat, a shell and -W to the bastion and to a target: all 7 refused or answered by sekisho's own commands, the bastion's secret file never reaches the technician")
}
