// Package e2e drives real OpenSSH clients (ssh, scp, sftp, rsync, and ssh
// inside tmux for terminals) through a real sekisho to real sshd targets,
// with certificates from the real dev Vault. The environment is the demo
// itself (`sekisho demo`), started once on random loopback ports.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sekisho/sekisho/internal/pgtest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// env is the running demo shared by the tests.
var env struct {
	root    string // repository root
	sekisho string // bin/sekisho
	dir     string // demo directory
	state   demoState
	port    string
	host    string
}

type demoState struct {
	Bastion        string            `json:"bastion"`
	Web            string            `json:"web"` // the console's URL
	BastionHostKey string            `json:"bastion_host_key"`
	Vault          string            `json:"vault"`
	VaultTokenFile string            `json:"vault_token_file"`
	Config         string            `json:"config"`
	Targets        []demoTarget      `json:"targets"`
	Keys           map[string]string `json:"keys"`
	PID            int               `json:"pid"`
}

// demoTarget is one of the demo's targets, as its state file gives it.
type demoTarget struct {
	Name      string `json:"name"`
	Address   string `json:"address"`
	HostKey   string `json:"host_key"`
	Log       string `json:"sshd_log"`
	Login     string `json:"login"`
	Residency string `json:"residency"`
}

// targetNamed is the demo's target name; the test fails without it.
func targetNamed(t testing.TB, name string) demoTarget {
	t.Helper()
	for _, tg := range env.state.Targets {
		if tg.Name == name {
			return tg
		}
	}
	t.Fatalf("the demo has no target %s", name)
	return demoTarget{}
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.root = root
	env.sekisho = filepath.Join(root, "bin", "sekisho")
	for _, b := range []string{env.sekisho, filepath.Join(root, "bin", "devvault")} {
		if _, err := os.Stat(b); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is missing: run `make test` (it builds bin/sekisho and bin/devvault first)\n", b)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "sekisho-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.dir = dir

	var out bytes.Buffer
	demo := exec.Command(env.sekisho, "demo", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0")
	demo.Dir = root
	demo.Stdout, demo.Stderr = &out, &out
	demo.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := demo.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start demo:", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	stop := func() {
		demo.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			demo.Process.Kill()
			<-exited
		}
	}
	stateFile := filepath.Join(dir, "demo.json")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(stateFile); err == nil && json.Unmarshal(b, &env.state) == nil {
			break
		}
		select {
		case err := <-exited:
			fmt.Fprintf(os.Stderr, "e2e: demo exited before it was ready (%v):\n%s\n", err, out.String())
			return 1
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "e2e: demo not ready after 2 minutes:\n%s\n", out.String())
			stop()
			return 1
		}
	}
	env.host, env.port, _ = net.SplitHostPort(env.state.Bastion)
	// The tests run against rules of their own, without the demo's second
	// factor (a TOTP code works once per 30 s, the tests run in parallel);
	// the demo's shipped rules are kept and tested on their own.
	if err := useTestRules(demo.Process.Pid); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n%s\n", err, out.String())
		stop()
		return 1
	}
	code := m.Run()
	stop()
	pgtest.StopShared()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: demo output:\n%s\n", out.String())
		if b, err := os.ReadFile(filepath.Join(dir, "sekisho.log")); err == nil {
			fmt.Fprintf(os.Stderr, "e2e: sekisho log (tail):\n%s\n", tail(string(b), 60))
		}
	}
	return code
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sshOpts are the client options every test uses: no user config, the
// bastion's host key pinned, only the given identity, never a prompt.
func sshOpts(tech string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + filepath.Join(env.dir, "known_hosts"),
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "BatchMode=yes",
		"-i", env.state.Keys[tech],
	}
}

// sshCmd returns an ssh command for login (technician+target) running
// remote (if any).
func sshCmd(ctx context.Context, tech, login string, remote ...string) *exec.Cmd {
	args := append(sshOpts(tech), "-p", env.port, login+"@"+env.host)
	args = append(args, remote...)
	return exec.CommandContext(ctx, "ssh", args...)
}

// sshCommandString is the -e argument for rsync and the like.
func sshCommandString(tech string) string {
	return "ssh " + strings.Join(sshOpts(tech), " ") + " -p " + env.port
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, cmd *exec.Cmd, stdin []byte) result {
	t.Helper()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sekishoCLI runs a sekisho subcommand against the demo's config.
func sekishoCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := sekishoOn(env.state.Config, args...)
	if err != nil {
		t.Fatalf("sekisho %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// sekishoOn runs a sekisho subcommand against config; a failure's error
// carries what it said on stderr.
func sekishoOn(config string, args ...string) (string, error) {
	full := append([]string{args[0], "--config", config}, args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var so, se bytes.Buffer
	cmd := exec.CommandContext(ctx, env.sekisho, full...)
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		return so.String(), fmt.Errorf("%w\n%s", err, se.String())
	}
	return so.String(), nil
}

type session struct {
	ID            string `json:"id"`
	Technician    string `json:"technician"`
	Affiliate     string `json:"affiliate"`
	Source        string `json:"source"`
	SourceCountry string `json:"source_country"`
	Target        string `json:"target"`
	Residency     string `json:"residency"`
	CrossBorder   bool   `json:"cross_border"`
	Rule          string `json:"rule"`
	CertKeyID     string `json:"cert_key_id"`
	CertSerial    uint64 `json:"cert_serial"`
	StartedAt     string `json:"started_at"`
	EndedAt       string `json:"ended_at"`
	BytesIn       int64  `json:"bytes_in"`
	BytesOut      int64  `json:"bytes_out"`
	EndReason     string `json:"end_reason"`
}

// sessions lists sessions through the CLI, newest first.
func sessions(t *testing.T) []session {
	t.Helper()
	var list []session
	out := sekishoCLI(t, "sessions", "--json", "--limit", "1000")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sekisho sessions --json: %v\n%s", err, out)
	}
	return list
}

// endedSession waits until a session whose recorded events contain marker
// has ended, and returns it with its event listing.
func endedSession(t *testing.T, tech, target, marker string) (session, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range sessions(t) {
			if s.Technician != tech || s.Target != target || s.EndedAt == "" {
				continue
			}
			ev := sekishoCLI(t, "replay", "--events", s.ID)
			if strings.Contains(ev, marker) {
				return s, ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended session of %s to %s recorded %q", tech, target, marker)
		}
		time.Sleep(50 * time.Millisecond) // polling the register for a condition, with a deadline
	}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streams concatenates the data of every event with the given code in an
// event listing (`sekisho replay --events`).
func streams(t *testing.T, events, code string) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(events, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != code {
			continue
		}
		q := strings.TrimSpace(line[strings.Index(line, f[2])+len(f[2]):])
		u, err := strconv.Unquote(q)
		if err != nil {
			t.Fatalf("bad event line %q: %v", line, err)
		}
		b.WriteString(u)
	}
	return b.String()
}

// testRules replace the demo's rules for the tests.
const testRules = `rules:
  - name: pii-stays-in-residency
    effect: deny
    when: '"pii" in target.data && cross_border'
    message: personal data may only be reached by technicians of an affiliate in its residency country
  - name: pii-in-residency
    effect: allow
    when: '"pii" in target.data && !cross_border'
  - name: any-affiliate-to-web
    effect: allow
    targets: [web-sg-01]
`

// useTestRules keeps the demo's config as sekisho.shipped.yaml, puts the
// test rules in force and waits until the demo has reloaded them.
func useTestRules(pid int) error {
	b, err := os.ReadFile(env.state.Config)
	if err != nil {
		return err
	}
	shipped := filepath.Join(env.dir, "sekisho.shipped.yaml")
	if err := os.WriteFile(shipped, b, 0o600); err != nil {
		return err
	}
	cfg := string(b)
	i := strings.Index(cfg, "\nrules:\n")
	if i < 0 {
		return errors.New("the demo config has no rules section")
	}
	if err := os.WriteFile(env.state.Config, []byte(cfg[:i+1]+testRules), 0o600); err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return err
	}
	logPath := filepath.Join(env.dir, "sekisho.log")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte(`"msg":"config reloaded`)) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("the demo did not reload the test rules within 30s")
}
