package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"go.yaml.in/yaml/v3"
)

// Holders of powers (approvers, admins, reviewers) give a verification
// code to log in to sekisho's commands, and a code is accepted once per
// 30 s. As a person who runs several commands keeps one connection open
// (ControlMaster, ControlPersist), the tests keep one per bastion and
// person: its code is given once, and every command of theirs rides on
// it, in parallel tests too. People without powers connect as before.

// commandLogins are the command connections and the TOTP secrets of one
// bastion: the demo, or a variant.
type commandLogins struct {
	config string // the bastion's config file: who holds powers
	ssh    func(ctx context.Context, tech, login string, remote ...string) *exec.Cmd
	// freshCode returns a code of tech's that was never given before.
	freshCode func(t testing.TB, tech string) string
	dir       string // control sockets, on a path short enough for them

	mu       sync.Mutex
	starting map[string]*sync.Mutex // per person: one master started at a time
	secrets  map[string]string      // a variant's people the tests enrolled
	used     map[string]int64       // the last time step whose code was given
	lastCode map[string]string      // the demo's last code given
}

func newCommandLogins(t testing.TB, config string, ssh func(ctx context.Context, tech, login string, remote ...string) *exec.Cmd) *commandLogins {
	dir, err := os.MkdirTemp("", "skc")
	if err != nil {
		t.Fatal(err)
	}
	return &commandLogins{config: config, ssh: ssh, dir: dir, starting: map[string]*sync.Mutex{},
		secrets: map[string]string{}, used: map[string]int64{}, lastCode: map[string]string{}}
}

var (
	variantLoginsMu sync.Mutex
	variantLogins   = map[*variant]*commandLogins{}
)

// logins are v's command connections, closed when t ends.
func (v *variant) logins(t testing.TB) *commandLogins {
	variantLoginsMu.Lock()
	defer variantLoginsMu.Unlock()
	if l := variantLogins[v]; l != nil {
		return l
	}
	l := newCommandLogins(t, v.config, v.ssh)
	l.freshCode = func(t testing.TB, tech string) string { return l.nextCode(t, tech, l.secret(t, v, tech)) }
	variantLogins[v] = l
	t.Cleanup(func() {
		variantLoginsMu.Lock()
		delete(variantLogins, v)
		variantLoginsMu.Unlock()
		l.close()
	})
	return l
}

// demoLogins are the shared demo's command connections; they end with
// the demo. The demo enrolled its people: `sekisho demo code` tells
// their codes.
var demoLogins = sync.OnceValue(func() *commandLogins {
	l := &commandLogins{config: env.state.Config, ssh: sshCmd, dir: filepath.Join(env.dir, "cm"), starting: map[string]*sync.Mutex{},
		secrets: map[string]string{}, used: map[string]int64{}, lastCode: map[string]string{}}
	os.Mkdir(l.dir, 0o700)
	l.freshCode = l.demoCode
	return l
})

// command runs one of sekisho's commands as tech: ssh TECH@bastion ARGS.
func (l *commandLogins) command(t *testing.T, tech string, args ...string) result {
	t.Helper()
	cmd, refused := l.cmd(t, tech, args...)
	if refused != nil {
		return *refused
	}
	return run(t, cmd, nil)
}

// cmd returns the ssh command for ssh TECH@bastion ARGS, over tech's
// command connection when they hold a power; or how logging in for it
// was refused.
func (l *commandLogins) cmd(t testing.TB, tech string, args ...string) (*exec.Cmd, *result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := l.ssh(ctx, tech, tech, args...)
	if !holdsPowers(t, l.config, tech) {
		return cmd, nil
	}
	sock, refused := l.master(t, tech)
	if refused != nil {
		return nil, refused
	}
	cmd.Args = slices.Insert(cmd.Args, 1, "-o", "ControlMaster=no", "-o", "ControlPath="+sock)
	return cmd, nil
}

// mustCmd is cmd for a login that must succeed.
func (l *commandLogins) mustCmd(t testing.TB, tech string, args ...string) *exec.Cmd {
	t.Helper()
	cmd, refused := l.cmd(t, tech, args...)
	if refused != nil {
		t.Fatalf("%s's command login refused: exit %d, stderr %q", tech, refused.code, refused.stderr)
	}
	return cmd
}

// withCode makes cmd, an ssh of tech's, answer the verification code
// prompt with a fresh code: for a command login of their own that cannot
// ride on their command connection (from another address, say).
func (l *commandLogins) withCode(t testing.TB, tech string, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	askpass := filepath.Join(t.TempDir(), "askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+l.freshCode(t, tech)+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd.Args = slices.Insert(cmd.Args, 1, "-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1")
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	return cmd
}

// master returns the control socket of tech's command connection,
// logging in with a fresh code if there is none.
func (l *commandLogins) master(t testing.TB, tech string) (string, *result) {
	t.Helper()
	l.mu.Lock()
	start := l.starting[tech]
	if start == nil {
		start = &sync.Mutex{}
		l.starting[tech] = start
	}
	l.mu.Unlock()
	start.Lock()
	defer start.Unlock()
	sock := filepath.Join(l.dir, tech)
	if _, err := os.Stat(sock); err == nil {
		return sock, nil // ssh removes it when the connection ends
	}
	askpass := filepath.Join(l.dir, tech+".askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho '"+l.freshCode(t, tech)+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(l.dir, tech+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// -f: once logged in, ssh goes on in the background holding the
	// connection; the command returns. Its output goes to a file, which
	// the background ssh may keep open.
	cmd := l.ssh(ctx, tech, tech)
	cmd.Args = slices.Insert(cmd.Args, 1, "-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1",
		"-o", "ControlMaster=yes", "-o", "ControlPath="+sock, "-f", "-N")
	cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	out, _ := os.ReadFile(logPath)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return "", &result{stderr: string(out), code: ee.ExitCode()}
	case err != nil:
		t.Fatalf("%s: %v", cmd, err)
	}
	waitUntil(t, 10*time.Second, tech+"'s control socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	return sock, nil
}

// close ends the command connections.
func (l *commandLogins) close() {
	socks, _ := filepath.Glob(filepath.Join(l.dir, "*"))
	for _, s := range socks {
		if fi, err := os.Stat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
			exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "x").Run()
		}
	}
	os.RemoveAll(l.dir)
}

// secret returns tech's TOTP secret on v, enrolling them the first time.
func (l *commandLogins) secret(t testing.TB, v *variant, tech string) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.secrets[tech]; s != "" {
		return s
	}
	out, err := exec.Command(env.sekisho, "technician", "enroll-totp", "--config", v.config, tech).CombinedOutput()
	m := regexp.MustCompile(`otpauth://\S*[?&]secret=([A-Z2-7]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("enroll-totp %s: %v\n%s", tech, err, out)
	}
	l.secrets[tech] = string(m[1])
	return l.secrets[tech]
}

// nextCode returns tech's code of the earliest time step the server
// takes now (this one or the next) that was not given before, waiting for
// the clock when both were.
func (l *commandLogins) nextCode(t testing.TB, tech, secret string) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var step int64
	waitUntil(t, 40*time.Second, "a time step whose code was not given yet", func() bool {
		now := time.Now().Unix() / 30
		step = max(now, l.used[tech]+1)
		return step <= now+1
	})
	l.used[tech] = step
	code, err := totp.GenerateCode(secret, time.Unix(step*30, 0))
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// demoCode returns what `sekisho demo code` prints for tech, waiting for
// the next code when it printed this one before.
func (l *commandLogins) demoCode(t testing.TB, tech string) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var code string
	next := time.Now()
	waitUntil(t, 40*time.Second, "a demo code not given yet", func() bool {
		if time.Now().Before(next) {
			return false
		}
		var stderr bytes.Buffer
		cmd := exec.Command(env.sekisho, "demo", "code", "--dir", env.dir, tech)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sekisho demo code %s: %v\n%s", tech, err, stderr.String())
		}
		code = strings.TrimSpace(string(out))
		next = time.Unix((time.Now().Unix()/30+1)*30, 0) // the code changes then
		return code != l.lastCode[tech]
	})
	l.lastCode[tech] = code
	return code
}

// holdsPowers reports whether tech is asked for a verification code to
// log in to sekisho's commands under the config at path: a group of
// theirs is an admin or reviewer group or an approval rule's approver
// group, and not in powers_without_mfa.
func holdsPowers(t testing.TB, path, tech string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Technicians []struct {
			Name   string   `yaml:"name"`
			Groups []string `yaml:"groups"`
		} `yaml:"technicians"`
		AdminGroups    *[]string `yaml:"admin_groups"`
		ReviewerGroups *[]string `yaml:"reviewer_groups"`
		WithoutMFA     []string  `yaml:"powers_without_mfa"`
		Rules          []struct {
			Effect   string `yaml:"effect"`
			Approval struct {
				From []string `yaml:"from"`
			} `yaml:"approval"`
		} `yaml:"rules"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	admin, reviewer := []string{"admins"}, []string{"reviewers"} // the defaults
	if c.AdminGroups != nil {
		admin = *c.AdminGroups
	}
	if c.ReviewerGroups != nil {
		reviewer = *c.ReviewerGroups
	}
	powers := slices.Concat(admin, reviewer)
	for _, r := range c.Rules {
		if r.Effect == "approval" {
			powers = append(powers, r.Approval.From...)
		}
	}
	for _, tc := range c.Technicians {
		if tc.Name != tech {
			continue
		}
		return slices.ContainsFunc(tc.Groups, func(g string) bool { return slices.Contains(powers, g) && !slices.Contains(c.WithoutMFA, g) })
	}
	return false
}
