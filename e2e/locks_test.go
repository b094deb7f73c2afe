package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// liveSSH is an ssh session kept open by a long remote command.
type liveSSH struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	code   int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startLive runs `echo started; sleep 300` through v as login and returns
// once the remote command has started.
func startLive(t *testing.T, v *variant, tech, login string) *liveSSH {
	t.Helper()
	return startLiveRunning(t, v, tech, login, "echo started; sleep 300")
}

// startLiveRunning runs remote, which must print "started" first, through
// v as login and returns once it has.
func startLiveRunning(t *testing.T, v *variant, tech, login, remote string) *liveSSH {
	t.Helper()
	return startLiveCommand(t, login, func(ctx context.Context) *exec.Cmd { return v.ssh(ctx, tech, login, remote) })
}

// startLiveCommand runs the client command made by mk, whose remote
// command must print "started" first, and returns once it has.
func startLiveCommand(t *testing.T, login string, mk func(ctx context.Context) *exec.Cmd) *liveSSH {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &liveSSH{cmd: mk(ctx), stderr: &syncBuffer{}, exited: make(chan struct{})}
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	l.cmd.Stderr = l.stderr
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-l.exited })
	started := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		started <- line == "started\n"
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		l.cmd.Wait()
		l.code = l.cmd.ProcessState.ExitCode()
		close(l.exited)
	}()
	select {
	case ok := <-started:
		if !ok {
			t.Fatalf("%s: the remote command did not start: %s", login, l.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the remote command did not start within 30s", login)
	}
	return l
}

// endsWithin fails the test unless the session ends within d, and
// returns what the technician was told on stderr.
func (l *liveSSH) endsWithin(t *testing.T, d time.Duration, what string) string {
	t.Helper()
	select {
	case <-l.exited:
	case <-time.After(d):
		t.Fatalf("the session went on for %s %s", d, what)
	}
	return l.stderr.String()
}

func (l *liveSSH) running() bool {
	select {
	case <-l.exited:
		return false
	default:
		return true
	}
}

func (v *variant) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	full := append([]string{args[0], "--config", v.config}, args[1:]...)
	out, err := exec.Command(env.sekisho, full...).CombinedOutput()
	return string(out), err
}

func TestAffiliateLockEndsLiveSessionsAndRefusesNewOnes(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	li := startLive(t, v, "li", "li+web-sg-01")
	aiko := startLive(t, v, "aiko", "aiko+web-sg-01")

	locked := time.Now()
	out, err := v.cli(t, "lock", "--affiliate", "ops-cn", "--reason", "incident INC-42: all CN access stopped")
	if err != nil || !strings.Contains(out, "lock 1: affiliate ops-cn locked until unlocked") {
		t.Fatalf("sekisho lock: %v\n%s", err, out)
	}
	var endedAfter time.Duration
	select {
	case <-li.exited:
		endedAfter = time.Since(locked)
		t.Logf("live session of the locked affiliate ended %s after the lock", endedAfter.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the live session of a locked affiliate is still running 10s after the lock")
	}
	want := "sekisho: session ended: access to web-sg-01 refused: affiliate ops-cn is locked (lock 1): incident INC-42: all CN access stopped"
	if !strings.Contains(li.stderr.String(), want) {
		t.Errorf("the technician was not told why: stderr %q", li.stderr.String())
	}
	if !aiko.running() {
		t.Errorf("a session of another affiliate ended: %q", aiko.stderr.String())
	}

	r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo should-not-run"), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "affiliate ops-cn is locked (lock 1): incident INC-42") {
		t.Errorf("new session of a locked affiliate: exit %d, stderr %q", r.code, r.stderr)
	}
	if out, _ := v.cli(t, "locks"); !strings.Contains(out, "affiliate ops-cn") || !strings.Contains(out, "incident INC-42") {
		t.Errorf("sekisho locks:\n%s", out)
	}
	// The client may exit before the register has the session's end.
	var list string
	waitUntil(t, 10*time.Second, "the register to say why li's session ended", func() bool {
		list, _ = v.cli(t, "sessions", "--json", "--technician", "li")
		return strings.Contains(list, `"end_reason": "revoked: access to web-sg-01 refused: affiliate ops-cn is locked`)
	})

	if out, err := v.cli(t, "unlock", "1"); err != nil || !strings.Contains(out, "lock 1 removed") {
		t.Fatalf("sekisho unlock: %v\n%s", err, out)
	}
	waitUntil(t, 10*time.Second, "li to be let in again after the unlock", func() bool {
		r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo back"), nil)
		return r.code == 0 && r.stdout == "back\n"
	})
	if out, err := v.cli(t, "lock", "--affiliate", "ops-xx", "--reason", "x"); err == nil || !strings.Contains(out, `no affiliate "ops-xx"`) {
		t.Errorf("locking an unknown affiliate: %v %s", err, out)
	}
	hardening.Report(t, "11", "an affiliate locked with 2 live sessions: its technician's session ended %d ms after the lock command was started, told why; the other affiliate's session runs on; new logins refused until the unlock", endedAfter.Milliseconds())
}

func TestReloadEndsSessionsTheNewRulesRefuse(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	li := startLive(t, v, "li", "li+web-sg-01")
	aiko := startLive(t, v, "aiko", "aiko+web-sg-01")

	// A config that does not load changes nothing.
	good, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(v.config, []byte(strings.Replace(string(good), "effect: allow", "effect: permit", 1)), 0o600)
	if out, err := v.cli(t, "reload"); err == nil {
		t.Errorf("reload accepted a config that does not load:\n%s", out)
	}
	// The CLI refuses to signal with a broken config; the server is asked
	// directly, as an operator's `kill -HUP` would.
	exec.Command("pkill", "-HUP", "-f", "serve --config "+v.config+"$").Run()
	waitUntil(t, 10*time.Second, "the server to log the failed reload", func() bool {
		return strings.Contains(v.out.String(), "config reload failed; the previous config stays in force")
	})
	if !li.running() || !aiko.running() {
		t.Fatal("a failed reload ended sessions")
	}

	// Now only aiko may reach web-sg-01.
	os.WriteFile(v.config, []byte(strings.Replace(string(good), "    targets: [web-sg-01]", "    targets: [web-sg-01]\n    technicians: [aiko]", 1)), 0o600)
	reloaded := time.Now()
	if out, err := v.cli(t, "reload"); err != nil {
		t.Fatalf("sekisho reload: %v\n%s", err, out)
	}
	var endedAfter time.Duration
	select {
	case <-li.exited:
		endedAfter = time.Since(reloaded)
	case <-time.After(10 * time.Second):
		t.Fatal("a session the new rules refuse is still running 10s after the reload")
	}
	if !strings.Contains(li.stderr.String(), "sekisho: session ended: the rules no longer allow it") {
		t.Errorf("stderr %q", li.stderr.String())
	}
	if !aiko.running() {
		t.Errorf("a session the new rules allow ended: %q", aiko.stderr.String())
	}
	hardening.Report(t, "11", "a reload whose rules no longer allow one of 2 live sessions: it ended %d ms after the reload command was started, told why; the allowed one runs on; a config that does not load changes nothing", endedAfter.Milliseconds())
}

func TestReloadEndsSessionsOfARemovedKey(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	aiko := startLive(t, v, "aiko", "aiko+web-sg-01")
	cfg, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(env.state.Keys["aiko"] + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// aiko's key is replaced (as after a laptop was lost): the live session
	// that key opened must end.
	newKey := filepath.Join(t.TempDir(), "aiko-new")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aiko-new", "-f", newKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	other, _ := os.ReadFile(newKey + ".pub")
	edited := strings.Replace(string(cfg), strings.TrimSpace(string(pub)), strings.TrimSpace(string(other)), 1)
	if edited == string(cfg) {
		t.Fatal("aiko's key is not in the config")
	}
	os.WriteFile(v.config, []byte(edited), 0o600)
	reloaded := time.Now()
	if out, err := v.cli(t, "reload"); err != nil {
		t.Fatalf("sekisho reload: %v\n%s", err, out)
	}
	var endedAfter time.Duration
	select {
	case <-aiko.exited:
		endedAfter = time.Since(reloaded)
	case <-time.After(10 * time.Second):
		t.Fatal("a session opened with a removed key is still running 10s after the reload")
	}
	if !strings.Contains(aiko.stderr.String(), "the key this session used is no longer registered for aiko") {
		t.Errorf("stderr %q", aiko.stderr.String())
	}
	hardening.Report(t, "11", "a reload replacing the key a live session was opened with: the session ended %d ms after the reload command was started, told its key is no longer registered", endedAfter.Milliseconds())
}
