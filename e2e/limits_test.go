package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestRuleLimitsChannelsFilesAndDuration(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    channels: [scp, sftp]\n    files: upload_only\n    upload_to: [/tmp]\n    legacy_transfers: [scp, rsync]\n    max_duration: 3s\n", 1)
	})
	const rule = `under rule "any-affiliate-to-web"`

	r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo should-not-run"), nil)
	if r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "sekisho: exec is not allowed on web-sg-01 "+rule) {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// A command that starts like scp but chains a shell is a command.
	r = run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "scp -t /tmp/x; echo pwned"), nil)
	if r.code == 0 || strings.Contains(r.stdout, "pwned") || !strings.Contains(r.stderr, "this scp -O command is refused "+rule) {
		t.Errorf("scp chained with a shell: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "up.bin")
	data := make([]byte, 64<<10)
	rand.Read(data)
	os.WriteFile(src, data, 0o600)
	remote := "/tmp/sekisho-e2e-limits-" + randHex(t)
	t.Cleanup(func() { os.Remove(remote) })
	scp := func(args ...string) result {
		opts := v.ssh(ctxT(t), "li", "x").Args[1:] // the variant's ssh options
		opts = opts[:len(opts)-3]                  // without -p PORT and the destination
		full := append(append(opts, "-P", v.port, "-O"), args...)
		return run(t, exec.CommandContext(ctxT(t), "scp", full...), nil)
	}
	if r := scp(src, "li+web-sg-01@127.0.0.1:"+remote); r.code != 0 {
		t.Fatalf("scp -O upload: exit %d: %s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(remote); !bytes.Equal(got, data) {
		t.Error("the upload did not arrive intact")
	}
	r = scp("li+web-sg-01@127.0.0.1:"+remote, filepath.Join(dir, "down.bin"))
	if r.code == 0 || !strings.Contains(r.stderr, "only uploads to web-sg-01 are allowed "+rule) {
		t.Errorf("scp -O download: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "down.bin")); err == nil {
		t.Error("the download happened")
	}
	// Paths with a space or a quote, quoted as a person does for scp -O
	// and escaped as rsync does, are still file transfers, checked as
	// such.
	spaced := remote + " dir"
	os.Mkdir(spaced, 0o700)
	t.Cleanup(func() { os.RemoveAll(spaced) })
	if r := scp(src, "li+web-sg-01@127.0.0.1:'"+spaced+"/it is.bin'"); r.code != 0 {
		t.Errorf("scp -O upload to a quoted path with spaces: exit %d: %s", r.code, r.stderr)
	} else if got, _ := os.ReadFile(filepath.Join(spaced, "it is.bin")); !bytes.Equal(got, data) {
		t.Error("the scp -O upload to a path with spaces did not arrive intact")
	}
	sshArgs := v.ssh(ctxT(t), "li", "x").Args
	rshell := "ssh " + strings.Join(append(sshArgs[1:len(sshArgs)-3], "-p", v.port), " ") // without -p PORT and the destination
	rsync := func(args ...string) result {
		return run(t, exec.CommandContext(ctxT(t), "rsync", append([]string{"-rt", "-e", rshell}, args...)...), nil)
	}
	// Uploads only: rsync must copy whole files, or the target would send
	// checksums of what it holds.
	if r := rsync(src, "li+web-sg-01@127.0.0.1:"+spaced+"/partial.bin"); r.code == 0 || !strings.Contains(r.stderr, "rsync without --whole-file (-W) is refused "+rule) {
		t.Errorf("rsync upload without -W under upload_only: exit %d, stderr %q", r.code, r.stderr)
	}
	// An upload that has the target read a file of its own (its lines
	// would come back as file names) is a command, refused.
	secret := filepath.Join(dir, "target-secret.txt")
	os.WriteFile(secret, []byte("TOPSECRET-line\n"), 0o600) // the target is this machine
	empty := t.TempDir()
	r = rsync("-W", "--files-from=:"+secret, empty+"/", "li+web-sg-01@127.0.0.1:"+spaced+"/")
	if r.code == 0 || strings.Contains(r.stdout+r.stderr, "TOPSECRET") || !strings.Contains(r.stderr, "rsync option --files-from is refused "+rule) {
		t.Errorf("rsync --files-from=:FILE upload: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := rsync("-W", src, "li+web-sg-01@127.0.0.1:"+spaced+"/it's here.bin"); r.code != 0 {
		t.Errorf("rsync upload to a path with a space and a quote: exit %d: %s", r.code, r.stderr)
	} else if got, _ := os.ReadFile(filepath.Join(spaced, "it's here.bin")); !bytes.Equal(got, data) {
		t.Error("the rsync upload to a path with a space and a quote did not arrive intact")
	}
	r = rsync("-W", "li+web-sg-01@127.0.0.1:"+spaced+"/it's here.bin", filepath.Join(dir, "rsync-down.bin"))
	if r.code == 0 || !strings.Contains(r.stderr, "only uploads to web-sg-01 are allowed "+rule) {
		t.Errorf("rsync download from a path with a space: exit %d, stderr %q", r.code, r.stderr)
	}

	// sftp is checked request by request: uploads and listings pass,
	// reading a file is refused by sekisho and never reaches the target.
	opts := v.ssh(ctxT(t), "li", "x").Args[1:]
	opts = opts[:len(opts)-3]
	sftp := func(batch string) result {
		cmd := exec.CommandContext(ctxT(t), "sftp", append(append(opts, "-P", v.port, "-b", "-"), "li+web-sg-01@127.0.0.1")...)
		return run(t, cmd, []byte(batch))
	}
	if r := sftp("put " + src + " " + remote + ".sftp\nls -l " + remote + ".sftp\n"); r.code != 0 || !strings.Contains(r.stdout, remote+".sftp") {
		t.Errorf("sftp put: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { os.Remove(remote + ".sftp") })
	if got, _ := os.ReadFile(remote + ".sftp"); !bytes.Equal(got, data) {
		t.Error("the sftp upload did not arrive intact")
	}
	r = sftp("get " + remote + ".sftp " + filepath.Join(dir, "sftp-down.bin") + "\n")
	if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("sftp get: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "sftp-down.bin")); err == nil {
		t.Error("the sftp download happened")
	}

	// An upload left waiting ends at the rule's maximum duration.
	cmd := v.ssh(ctxT(t), "li", "li+web-sg-01", "scp -t "+remote+".wait")
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("a session outlived its 3s maximum duration by 30s")
	}
	lasted := time.Since(start)
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("the session ended after %s, before its 3s limit", d)
	}
	if !strings.Contains(stderr.String(), `sekisho: session ended: the session reached the 3s limit of rule "any-affiliate-to-web"`) {
		t.Errorf("stderr %q", stderr.String())
	}
	hardening.Report(t, "14", "under a rule allowing only scp and sftp uploads into /tmp (scp -O and rsync opted in): exec and a command starting like scp but chaining a shell refused, scp -O, rsync and sftp downloads refused by sekisho, %d-byte uploads intact (to quoted paths with spaces too); an rsync upload with --files-from=:FILE (the target would send FILE's lines back) refused with nothing of FILE shown, and one without -W (the target would send checksums of its files) refused; an upload left waiting ended after %.1f s at the rule's 3 s max_duration", len(data), lasted.Seconds())
}
