package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// ProxyJump (ssh -J) through sekisho, with real OpenSSH clients that
// check every host key: the bastion's against its pinned line, the
// target's certificate against the host CA line `sekisho known-hosts`
// prints. No test here turns host key checking off.

// jumpConfig writes an ssh_config in which the targets are reached by
// their own names through the bastion at port with ProxyJump, as tech,
// host keys checked against knownHosts, and returns its path.
func jumpConfig(t *testing.T, tech, port, knownHosts string) string {
	t.Helper()
	conf := fmt.Sprintf(`Host bastion
  HostName 127.0.0.1
  Port %s
Host db-jp-01 web-sg-01
  ProxyJump bastion
Host *
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  UserKnownHostsFile %s
  StrictHostKeyChecking yes
  ConnectTimeout 30
`, port, tech, env.state.Keys[tech], knownHosts)
	path := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostCALine is the demo's @cert-authority line, as `sekisho
// known-hosts` prints it for the demo's config.
func hostCALine(t *testing.T) string {
	t.Helper()
	line := strings.TrimSpace(sekishoCLI(t, "known-hosts"))
	if !strings.HasPrefix(line, "@cert-authority db-jp-01,") || !strings.HasSuffix(line, " sekisho host CA") {
		t.Fatalf("sekisho known-hosts printed %q", line)
	}
	return line
}

// variantKnownHosts writes a known_hosts file for a variant: its own
// host key, and the host CA line (the variant shares the demo's Vault).
func variantKnownHosts(t *testing.T, v *variant) string {
	t.Helper()
	var key []byte
	waitUntil(t, 10*time.Second, "the variant's host key", func() bool {
		var err error
		key, err = os.ReadFile(filepath.Join(v.dir, "host_key"))
		return err == nil
	})
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	lines := fmt.Sprintf("[127.0.0.1]:%s %s\n%s\n", v.port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), hostCALine(t))
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// jumpSession returns the ended session of tech to target whose events
// hold marker, checks that its recording verifies and says it came
// through ProxyJump, and returns its event listing.
func jumpSession(t *testing.T, tech, target, marker string) (session, string) {
	t.Helper()
	s, events := endedSession(t, tech, target, marker)
	if out := sekishoCLI(t, "verify", s.ID); !strings.Contains(out, "OK, complete") {
		t.Errorf("verify %s: %s", s.ID, out)
	}
	var meta struct {
		Via string `json:"via"`
	}
	b, err := os.ReadFile(filepath.Join(env.dir, "recordings", s.ID, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Via != "proxyjump "+target+":22" {
		t.Errorf("session %s: via %q (%v), want %q", s.ID, meta.Via, err, "proxyjump "+target+":22")
	}
	return s, events
}

// ssh, scp (both protocols), sftp and rsync through -J, by the target's
// own name: the bytes arrive, each session is recorded and verifies.
func TestProxyJumpTransfers(t *testing.T) {
	t.Parallel()
	cfg := jumpConfig(t, "aiko", env.port, filepath.Join(env.dir, "known_hosts"))
	ctx := ctxT(t)
	marker := "jump-" + randHex(t)

	// ssh -J on the command line, and ProxyJump from the config.
	r := run(t, exec.CommandContext(ctx, "ssh", "-F", cfg, "-J", "bastion", "db-jp-01", "echo "+marker+"-flag; id -un"), nil)
	if r.code != 0 || r.stdout != marker+"-flag\n"+targetNamed(t, "db-jp-01").Login+"\n" {
		t.Fatalf("ssh -J: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", cfg, "db-jp-01", "echo "+marker+"-config"), nil)
	if r.code != 0 || r.stdout != marker+"-config\n" {
		t.Fatalf("ssh with ProxyJump: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	_, events := jumpSession(t, "aiko", "db-jp-01", marker+"-flag")
	if !strings.Contains(streams(t, events, "x-stdout"), marker+"-flag") {
		t.Errorf("the recorded output lacks the marker:\n%s", events)
	}

	// scp over SFTP up, legacy scp down; sftp up and down; rsync both
	// ways. Random bytes, so that a byte lost or changed shows.
	dir := t.TempDir()
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	src := filepath.Join(dir, "payload")
	os.WriteFile(src, payload, 0o600)
	remote := "/tmp/sekisho-e2e-jump-" + randHex(t)
	defer os.Remove(remote)
	defer os.Remove(remote + ".sftp")
	defer os.RemoveAll(remote + ".rsync")
	check := func(what, path string) {
		t.Helper()
		if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, payload) {
			t.Fatalf("%s: %d bytes arrived (%v), want the %d sent", what, len(b), err, len(payload))
		}
	}
	for _, c := range []struct {
		what string
		cmd  *exec.Cmd
		got  string
	}{
		{"scp -J up", exec.CommandContext(ctx, "scp", "-F", cfg, "-J", "bastion", src, "db-jp-01:"+remote), remote},
		{"scp -O down", exec.CommandContext(ctx, "scp", "-F", cfg, "-O", "db-jp-01:"+remote, filepath.Join(dir, "scp-down")), filepath.Join(dir, "scp-down")},
		{"sftp -J", exec.CommandContext(ctx, "sftp", "-F", cfg, "-J", "bastion", "-b", "-", "db-jp-01"), filepath.Join(dir, "sftp-down")},
		{"rsync up", exec.CommandContext(ctx, "rsync", "-a", "-e", "ssh -F "+cfg, src, "db-jp-01:"+remote+".rsync/"), remote + ".rsync/payload"},
		{"rsync -J down", exec.CommandContext(ctx, "rsync", "-a", "-e", "ssh -F "+cfg+" -J bastion", "db-jp-01:"+remote+".rsync/payload", filepath.Join(dir, "rsync-down")), filepath.Join(dir, "rsync-down")},
	} {
		var stdin []byte
		if c.what == "sftp -J" {
			stdin = []byte(fmt.Sprintf("put %s %s.sftp\nget %s.sftp %s\n", src, remote, remote, c.got))
		}
		if r := run(t, c.cmd, stdin); r.code != 0 {
			t.Fatalf("%s: exit %d, %q", c.what, r.code, r.stderr)
		}
		check(c.what, c.got)
	}
	// Every one of those sessions is recorded, verifies, and says it
	// came through ProxyJump; the sftp session recorded the upload.
	_, events = jumpSession(t, "aiko", "db-jp-01", remote+".sftp")
	if !strings.Contains(events, "x-file") {
		t.Errorf("the sftp session recorded no file event:\n%s", tail(events, 20))
	}
	hardening.Report(t, "jump", "ssh, scp (SFTP and legacy), sftp and rsync through ssh -J and ProxyJump, by the target's own name with strict host key checking: the bytes arrive unchanged, each session is recorded, verifies, and says proxyjump")
}

// ControlMaster on the inner connection: several commands share one
// connection to the target, and so one session, with a channel each.
func TestProxyJumpControlMaster(t *testing.T) {
	t.Parallel()
	cfg := jumpConfig(t, "aiko", env.port, filepath.Join(env.dir, "known_hosts"))
	ctx := ctxT(t)
	cp := filepath.Join(t.TempDir(), "cm")
	opts := []string{"-F", cfg, "-o", "ControlMaster=auto", "-o", "ControlPath=" + cp, "-o", "ControlPersist=60"}
	marker := "cm-" + randHex(t)
	for i := 1; i <= 3; i++ {
		r := run(t, exec.CommandContext(ctx, "ssh", append(opts, "db-jp-01", fmt.Sprintf("echo %s-%d", marker, i))...), nil)
		if r.code != 0 || r.stdout != fmt.Sprintf("%s-%d\n", marker, i) {
			t.Fatalf("command %d: exit %d, %q, %q", i, r.code, r.stdout, r.stderr)
		}
	}
	if r := run(t, exec.CommandContext(ctx, "ssh", append(opts, "-O", "check", "db-jp-01")...), nil); r.code != 0 {
		t.Fatalf("ssh -O check: exit %d, %q", r.code, r.stderr)
	}
	if r := run(t, exec.CommandContext(ctx, "ssh", append(opts, "-O", "exit", "db-jp-01")...), nil); r.code != 0 {
		t.Fatalf("ssh -O exit: exit %d, %q", r.code, r.stderr)
	}
	_, events := jumpSession(t, "aiko", "db-jp-01", marker+"-1")
	out := streams(t, events, "x-stdout")
	for i := 1; i <= 3; i++ {
		if !strings.Contains(out, fmt.Sprintf("%s-%d", marker, i)) {
			t.Errorf("the master's session lacks command %d:\n%s", i, events)
		}
	}
}

// The rules hold through -J as they do for TECHNICIAN+TARGET: a refused
// technician is refused with the rule's message, a login the rule does
// not grant is refused, a destination that is no target is not
// forwarded, and a client without the host CA line refuses sekisho.
func TestProxyJumpRefusals(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	marker := "/tmp/sekisho-e2e-jump-refused-" + randHex(t)

	// li (ops-cn) may not reach db-jp-01's personal data.
	li := jumpConfig(t, "li", env.port, filepath.Join(env.dir, "known_hosts"))
	r := run(t, exec.CommandContext(ctx, "ssh", "-F", li, "db-jp-01", "touch "+marker), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "personal data may only be reached by technicians of an affiliate in its residency country") {
		t.Errorf("li through -J: exit %d, stderr %q", r.code, r.stderr)
	}
	// The same key as another login: refused, saying which logins work.
	aiko := jumpConfig(t, "aiko", env.port, filepath.Join(env.dir, "known_hosts"))
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", aiko, "-l", "postgres", "db-jp-01", "touch "+marker), nil)
	if r.code != 255 || !strings.Contains(r.stderr, `sekisho: log in to db-jp-01 as aiko (your technician name) or root (the login your rule grants), not as "postgres"`) {
		t.Errorf("inner login postgres: exit %d, stderr %q", r.code, r.stderr)
	}
	// Another technician's key on the inner connection: refused.
	wei := jumpConfig(t, "wei", env.port, filepath.Join(env.dir, "known_hosts"))
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", aiko, "-o", "ProxyJump=none", "-o", "ProxyCommand=ssh -F "+wei+" -W %h:%p bastion",
		"db-jp-01", "touch "+marker), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("aiko's key inside wei's connection: exit %d, stderr %q", r.code, r.stderr)
	}
	// A destination that is no target is not forwarded.
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", aiko, "-W", "127.0.0.1:"+env.port, "bastion"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "127.0.0.1:"+env.port+" is not a target") {
		t.Errorf("ssh -W to the bastion itself: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", aiko, "-W", "db-jp-01:5432", "bastion"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "db-jp-01:5432 is not a target") {
		t.Errorf("ssh -W to another port of a target: exit %d, stderr %q", r.code, r.stderr)
	}
	// Without the host CA line the client refuses sekisho's answer as
	// the target: the bastion's key alone is not trusted for db-jp-01.
	bastionOnly := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(bastionOnly, []byte(env.state.BastionHostKey+"\n"), 0o600)
	noCA := jumpConfig(t, "aiko", env.port, bastionOnly)
	r = run(t, exec.CommandContext(ctx, "ssh", "-F", noCA, "db-jp-01", "touch "+marker), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "Host key verification failed") {
		t.Errorf("without the host CA line: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		os.Remove(marker)
		t.Fatal("a refused command ran on the target")
	}
	hardening.Report(t, "8", "through ssh -J: a technician the rules refuse is refused with the rule's message, an inner login the rule does not grant and another technician's key are refused, destinations that are no target are not forwarded, and a client without the host CA line refuses to talk to sekisho as the target; no command runs")
}

// An approval-needing technician is prompted through -J as for
// TECHNICIAN+TARGET, and in the shell once an approver says yes. (wei,
// not li: li approves in this variant, and holders of powers give a
// verification code for the jump connection too.)
func TestProxyJumpApprovalPrompt(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	cfg := jumpConfig(t, "wei", v.port, variantKnownHosts(t, v))
	tm := newTmux(t, 160, 40, "sh -c 'ssh -F "+cfg+" -o BatchMode=no -tt db-jp-01; echo ssh-exited-$?; sleep 3600'")
	tm.waitScreen("Reason (ticket and what you will do):")
	tm.send("INC-4712 through ProxyJump", "Enter")
	tm.waitScreen("Duration (at most 2h0m0s)")
	tm.send("30m", "Enter")
	tm.waitScreen("is waiting for 1 approval(s)")
	id := regexp.MustCompile(`request (\d+) is waiting`).FindStringSubmatch(tm.screen())[1]
	if r := v.command(t, "kenji", "approve", id, "--comment", "ok"); r.code != 0 {
		t.Fatalf("approve: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	tm.waitScreen(`approved by kenji ("ok"); connecting to db-jp-01`)
	tm.send("echo jump-marker-$((6*7))", "Enter")
	tm.waitScreen("jump-marker-42")
	tm.send("exit", "Enter")
	tm.waitScreen("ssh-exited-0")
}

// Ansible (Debian's ansible-core) through ProxyJump, host keys checked:
// ping, copy and command reach the target, and are recorded.
func TestProxyJumpAnsible(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ansible"); err != nil {
		t.Fatal("ansible (Debian's ansible-core) is required: run tools/install-deps.sh test")
	}
	dir := t.TempDir()
	cfg := jumpConfig(t, "aiko", env.port, filepath.Join(env.dir, "known_hosts"))
	inv := filepath.Join(dir, "inventory.ini")
	os.WriteFile(inv, []byte("[db]\ndb-jp-01 ansible_user=aiko ansible_python_interpreter=/usr/bin/python3\n"), 0o600)
	ansCfg := filepath.Join(dir, "ansible.cfg")
	os.WriteFile(ansCfg, []byte("[defaults]\nhost_key_checking = True\n"), 0o600)
	cpDir, err := os.MkdirTemp("", "cp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(cpDir)
	src := filepath.Join(dir, "motd")
	content := "copied by ansible through sekisho " + randHex(t) + "\n"
	os.WriteFile(src, []byte(content), 0o600)
	dst := "/tmp/sekisho-e2e-ansible-" + randHex(t)
	defer os.Remove(dst)
	ansible := func(args ...string) result {
		t.Helper()
		cmd := exec.CommandContext(ctxT(t), "ansible", append([]string{"all", "-i", inv}, args...)...)
		cmd.Env = append(os.Environ(), "ANSIBLE_CONFIG="+ansCfg, "ANSIBLE_HOME="+filepath.Join(dir, "home"),
			"ANSIBLE_SSH_ARGS=-F "+cfg+" -o ControlMaster=auto -o ControlPersist=2s", "ANSIBLE_SSH_CONTROL_PATH_DIR="+cpDir,
			"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"), "ANSIBLE_NOCOLOR=1")
		return run(t, cmd, nil)
	}
	if r := ansible("-m", "ping"); r.code != 0 || !strings.Contains(r.stdout, `"ping": "pong"`) {
		t.Fatalf("ansible -m ping: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ansible("-m", "copy", "-a", "src="+src+" dest="+dst); r.code != 0 || !strings.Contains(r.stdout, "CHANGED") {
		t.Fatalf("ansible -m copy: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(dst); string(b) != content {
		t.Fatalf("copied %q, want %q", b, content)
	}
	r := ansible("-m", "command", "-a", "cat "+dst)
	if r.code != 0 || !strings.Contains(r.stdout, strings.TrimSpace(content)) {
		t.Fatalf("ansible -m command: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	// Ansible's commands were recorded, in sessions that verify.
	_, events := jumpSession(t, "aiko", "db-jp-01", "cat "+dst)
	// Ansible runs its modules with a terminal (-tt): the output is in
	// the terminal's events.
	if !strings.Contains(streams(t, events, "o")+streams(t, events, "x-stdout"), strings.TrimSpace(content)) {
		t.Errorf("the recording lacks the command's output:\n%s", tail(events, 40))
	}
	hardening.Report(t, "jump", "Ansible (ping, copy, command) through ProxyJump with host key checking: the file arrives, the command's output is recorded in a session that verifies")
}

// The second factor is asked on the inner connection, as for
// TECHNICIAN+TARGET: a client that cannot answer is told why, a wrong
// code is refused, the right one lets the session through.
func TestProxyJumpSecondFactor(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
	})
	secret := enrollSecret(t, v, "aiko")
	cfg := jumpConfig(t, "aiko", v.port, variantKnownHosts(t, v))
	withCode := func(code, remote string) result {
		t.Helper()
		askpass := filepath.Join(t.TempDir(), "askpass")
		os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+code+"'\n"), 0o700)
		cmd := exec.CommandContext(ctxT(t), "ssh", "-F", cfg, "-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1", "web-sg-01", remote)
		cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
		return run(t, cmd, nil)
	}
	r := run(t, exec.CommandContext(ctxT(t), "ssh", "-F", cfg, "web-sg-01", "echo no"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "sekisho: a second factor is required for web-sg-01 (rule any-affiliate-to-web)\n") {
		t.Errorf("BatchMode through -J: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := withCode("000000", "echo wrong"); r.code != 255 || !strings.Contains(r.stderr, "wrong verification code") {
		t.Errorf("wrong code through -J: exit %d, stderr %q", r.code, r.stderr)
	}
	code, _ := totp.GenerateCode(secret, time.Now())
	if r := withCode(code, "echo jump-second-factor-ok"); r.code != 0 || r.stdout != "jump-second-factor-ok\n" {
		t.Fatalf("right code through -J: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "6", "through ssh -J: the second factor asked on the inner connection; a client that cannot answer told why, a wrong code refused, the right code lets the session through")
}

// A lock ends a live session that came through -J, with the reason, and
// refuses the next one.
func TestProxyJumpLockEndsTheSession(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	cfg := jumpConfig(t, "aiko", v.port, variantKnownHosts(t, v))
	live := startLiveCommand(t, "db-jp-01 through -J", func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, "ssh", "-F", cfg, "db-jp-01", "echo started; sleep 300")
	})
	if out, err := v.cli(t, "lock", "--technician", "aiko", "--reason", "INC-43 key leaked"); err != nil {
		t.Fatalf("sekisho lock: %v\n%s", err, out)
	}
	stderr := live.endsWithin(t, 10*time.Second, "after the lock")
	if !strings.Contains(stderr, "sekisho: session ended: ") || !strings.Contains(stderr, "INC-43 key leaked") {
		t.Errorf("the technician was not told why: %q", stderr)
	}
	r := run(t, exec.CommandContext(ctxT(t), "ssh", "-F", cfg, "db-jp-01", "echo should-not-run"), nil)
	if r.code != 255 || r.stdout != "" || !strings.Contains(r.stderr, "INC-43 key leaked") {
		t.Errorf("after the lock: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "11", "a technician locked while a session through ssh -J runs: the session ends with the lock's reason, the next ssh -J refused")
}

// A Vault set up before the host CA existed: sekisho starts, says in its
// log what to run, and refuses jumps with a short message; logins with
// TECHNICIAN+TARGET go on.
func TestProxyJumpWithoutHostCA(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\n  mount: ssh\n", "\n  mount: ssh\n  host_mount: ssh-host-absent\n", 1)
	})
	if !strings.Contains(v.out.String(), "ProxyJump (ssh -J) refused until the host CA exists: run `sekisho vault setup` again") {
		t.Errorf("the log does not say what to run:\n%s", tail(v.out.String(), 10))
	}
	cfg := jumpConfig(t, "aiko", v.port, variantKnownHosts(t, v))
	r := run(t, exec.CommandContext(ctxT(t), "ssh", "-F", cfg, "db-jp-01", "echo should-not-run"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "sekisho: cannot answer as db-jp-01 now (its host certificate could not be obtained); tell the sekisho operator") {
		t.Errorf("jump without a host CA: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo still-fine"), nil); r.code != 0 || r.stdout != "still-fine\n" {
		t.Errorf("aiko+db-jp-01 without a host CA: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}
