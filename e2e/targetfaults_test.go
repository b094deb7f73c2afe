package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// ownTarget is an OpenSSH sshd of the test's own, configured like the
// demo's targets, so that a test may kill it, starve it or give it other
// host keys without touching the targets the other tests share.
type ownTarget struct {
	addr    string
	hostKey string // public key line, as pinned in sekisho's config
	log     string // sshd's log (LogLevel VERBOSE)
}

// startOwnTarget runs sshd on a loopback port with one host key of
// keyType (ed25519, ecdsa or rsa), trusting the user CA in caFile, and
// waits until it answers; it is stopped when the test ends.
func startOwnTarget(t *testing.T, caFile, keyType string) *ownTarget {
	t.Helper()
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_"+keyType+"_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", keyType, "-N", "", "-C", "own-target", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	tg := &ownTarget{addr: "127.0.0.1:" + freePort(t), hostKey: strings.TrimSpace(string(pub)), log: filepath.Join(dir, "sshd.log")}
	_, port, _ := net.SplitHostPort(tg.addr)
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
TrustedUserCAKeys %s
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
`, port, hostKey, filepath.Join(dir, "sshd.pid"), caFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // sshd running as root wants it
	out := &syncBuffer{}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg, "-E", tg.log)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(tg.log)
			t.Logf("own target's sshd log:\n%s%s", tail(string(b), 30), out.String())
		}
	})
	waitUntil(t, 15*time.Second, "the own target's sshd to answer", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(tg.log)
			t.Fatalf("sshd exited at start:\n%s%s", b, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", tg.addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "SSH-2.0-")
	})
	return tg
}

// logSize is how much the target has logged so far, for logSince.
func (tg *ownTarget) logSize(t *testing.T) int {
	t.Helper()
	return len(tg.logText(t))
}

// logSince is what the target logged after logSize returned from.
func (tg *ownTarget) logSince(t *testing.T, from int) string {
	t.Helper()
	return tg.logText(t)[from:]
}

func (tg *ownTarget) logText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(tg.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// asWebTarget returns a config edit that puts tg where web-sg-01 was,
// with tg's host key pinned: the test rules let every affiliate reach it.
func (tg *ownTarget) asWebTarget(t testing.TB) func(cfg string) string {
	return asTarget(t, "web-sg-01", tg.addr, tg.hostKey)
}

// asTarget returns a config edit that moves target name to addr and
// pins hostKey for it (when not empty).
func asTarget(t testing.TB, name, addr, hostKey string) func(cfg string) string {
	tg := targetNamed(t, name)
	return func(cfg string) string {
		cfg = strings.Replace(cfg, "address: "+tg.Address, "address: "+addr, 1)
		if hostKey != "" {
			cfg = strings.Replace(cfg, tg.HostKey, hostKey, 1)
		}
		return cfg
	}
}

// sharedUserCA is the user CA of the demo's Vault, which the demo's
// targets trust.
func sharedUserCA() string { return filepath.Join(env.dir, "vault", "user_ca.pub") }

var sessionInMessage = regexp.MustCompile(`\(session ([0-9a-f-]{36})\)`)

// refusedSession returns the session ID sekisho named in a refusal.
func refusedSession(t *testing.T, stderr string) string {
	t.Helper()
	m := sessionInMessage.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("the refusal names no session: %q", stderr)
	}
	return m[1]
}

// auditOf returns the audit rows of session of the given kind.
func auditOf(t *testing.T, v *variant, session, kind string) []map[string]string {
	t.Helper()
	var rows []map[string]string
	for _, e := range v.audit(t) {
		if e["session"] == session && e["kind"] == kind {
			rows = append(rows, e)
		}
	}
	return rows
}

func TestTargetKilledMidSession(t *testing.T) {
	t.Parallel()
	tg := startOwnTarget(t, sharedUserCA(), "ed25519")
	v := startVariant(t, tg.asWebTarget(t))

	// Another technician works on the same target throughout.
	other := startLive(t, v, "li", "li+web-sg-01")

	pids := "/tmp/sekisho-e2e-killed-" + randHex(t)
	t.Cleanup(func() { os.Remove(pids) })
	victim := startLiveRunning(t, v, "aiko", "aiko+web-sg-01",
		"echo started; for i in $(seq 1 600); do echo tick-$i; echo $$ $PPID $i > "+pids+".tmp; mv "+pids+".tmp "+pids+"; sleep 0.2; done")
	// Kill once some output has passed through sekisho.
	var f []string
	waitUntil(t, 30*time.Second, "the remote command to print a few ticks", func() bool {
		b, _ := os.ReadFile(pids)
		f = strings.Fields(string(b))
		return len(f) == 3 && f[2] >= "3" && len(f[2]) == 1
	})
	f = f[:2]
	shell, _ := strconv.Atoi(f[0])
	sshd, _ := strconv.Atoi(f[1]) // the sshd process serving aiko's connection
	t.Cleanup(func() { syscall.Kill(shell, syscall.SIGKILL) })
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sshd)); !strings.HasPrefix(string(comm), "sshd") {
		t.Fatalf("process %d is %q, not the sshd serving the session", sshd, comm)
	}

	killed := time.Now()
	if err := syscall.Kill(sshd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stderr := victim.endsWithin(t, 10*time.Second, "after its target's sshd was killed")
	secs := time.Since(killed).Seconds()
	if victim.code == 0 {
		t.Errorf("the technician's ssh exited 0 after the target died")
	}
	if !strings.Contains(stderr, "connection to web-sg-01 was lost") {
		t.Errorf("the technician was not told the target was lost: stderr %q", stderr)
	}

	// The recording is sealed, says why the session ended, and verifies.
	var ss []session
	waitUntil(t, 30*time.Second, "aiko's session to be registered as ended", func() bool {
		out, _ := exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
		ss = nil
		if json.Unmarshal(out, &ss) != nil {
			return false
		}
		for _, s := range ss {
			if s.Technician == "aiko" && s.EndedAt != "" {
				ss = []session{s}
				return true
			}
		}
		return false
	})
	if ss[0].EndReason != "target closed the connection" {
		t.Errorf("end reason %q", ss[0].EndReason)
	}
	out, err := exec.Command(env.sekisho, "verify", "--config", v.config, ss[0].ID).CombinedOutput()
	if err != nil {
		t.Fatalf("sekisho verify of the session whose target died: %v\n%s", err, out)
	}
	ev, err := exec.Command(env.sekisho, "replay", "--events", "--config", v.config, ss[0].ID).CombinedOutput()
	if err != nil || !strings.Contains(streams(t, string(ev), "x-stdout"), "tick-1\n") {
		t.Errorf("the recording lacks the output before the kill (%v):\n%s", err, tail(string(ev), 10))
	}

	// The other session goes on, and a new one is served.
	if !other.running() {
		t.Errorf("li's session on the same target ended too: %s", other.stderr.String())
	}
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo after-kill"), nil)
	if r.code != 0 || r.stdout != "after-kill\n" {
		t.Errorf("a new session after the kill: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "target-killed", "target's sshd killed (SIGKILL) mid-session: ssh ended in %.2f s, exit %d, told %q; recording sealed, verifies; a session on the same target went on, the next one served",
		secs, victim.code, sekishoLine(stderr))
}

// sekishoLine is the first line sekisho wrote to the technician's
// stderr, without the session ID.
func sekishoLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "sekisho: ") {
			return strings.TrimSpace(sessionInMessage.ReplaceAllString(l, ""))
		}
	}
	return ""
}

// silentTarget accepts TCP connections and never says anything (speak
// false), or sends an SSH banner and then nothing (speak true); the
// connections are held until the test ends.
func silentTarget(t *testing.T, speak bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if speak {
				io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 silent\r\n")
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestBlackholedTargetRefusedAtDialTimeout(t *testing.T) {
	t.Parallel()
	const dialTimeout = 3 * time.Second
	mute, banner := silentTarget(t, false), silentTarget(t, true)
	jp := targetNamed(t, "db-jp-01")
	v := startVariant(t, func(cfg string) string {
		// db-jp-02 is the demo's db-jp-01 under another name: the
		// target that still answers.
		cfg = strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
  - name: db-jp-02
    address: %s
    login: %s
    residency: JP
    zone: Asia/Tokyo
    data: [pii]
    host_keys:
      - %s

rules:
`, jp.Address, env.state.Targets[0].Login, jp.HostKey), 1)
		cfg = asTarget(t, "web-sg-01", mute, "")(cfg)
		cfg = asTarget(t, "db-jp-01", banner, "")(cfg)
		return strings.Replace(cfg, "\ntargets:\n", fmt.Sprintf("\nssh:\n  dial_timeout: %s\n\ntargets:\n", dialTimeout), 1)
	})
	var figures []string
	for _, c := range []struct{ target, what string }{
		{"web-sg-01", "accepts and never speaks"},
		{"db-jp-01", "sends its banner, then nothing"},
	} {
		// Another session is served while sekisho waits on the dead one.
		otherDone := make(chan result, 1)
		other := v.ssh(ctxT(t), "aiko", "aiko+db-jp-02", "echo served")
		go func() {
			out, err := other.Output()
			otherDone <- result{stdout: string(out), code: other.ProcessState.ExitCode(), stderr: fmt.Sprint(err)}
		}()
		marker := "/tmp/sekisho-e2e-blackhole-" + randHex(t)
		began := time.Now()
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+"+c.target, "touch "+marker), nil)
		secs := time.Since(began).Seconds()
		if r.code != 255 || !strings.Contains(r.stderr, "cannot connect to "+c.target) {
			t.Fatalf("%s (%s): exit %d, stderr %q", c.target, c.what, r.code, r.stderr)
		}
		if secs < dialTimeout.Seconds() || secs > dialTimeout.Seconds()+2 {
			t.Errorf("%s (%s): refused after %.1f s, want the %s dial timeout", c.target, c.what, secs, dialTimeout)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the command ran somewhere")
		}
		id := refusedSession(t, r.stderr)
		refused := auditOf(t, v, id, "refused")
		if len(refused) == 0 || !strings.Contains(refused[0]["detail"], "target connection failed") {
			t.Errorf("%s: the refusal is not audited: %v", c.target, refused)
		}
		if o := <-otherDone; o.code != 0 || o.stdout != "served\n" {
			t.Errorf("a session to a live target meanwhile: exit %d, stdout %q, stderr %q", o.code, o.stdout, o.stderr)
		}
		figures = append(figures, fmt.Sprintf("a target that %s: refused in %.1f s", c.what, secs))
	}
	hardening.Report(t, "partition", "target blackholed at dial, ssh.dial_timeout %s: %s; told %q; audited as refused; a session to a live target served meanwhile",
		dialTimeout, strings.Join(figures, "; "), "cannot connect to TARGET; tell the sekisho operator")
}

func TestTargetHostKeyTypeChangeRefusedBeforeCertificateIsSent(t *testing.T) {
	t.Parallel()
	// The targets' pinned keys are ed25519; these now present only a
	// key of another type, as after a reinstall with other defaults or
	// an impostor that has no ed25519 key to show.
	rsa := startOwnTarget(t, sharedUserCA(), "rsa")
	ecdsa := startOwnTarget(t, sharedUserCA(), "ecdsa")
	v := startVariant(t, func(cfg string) string {
		return asTarget(t, "web-sg-01", ecdsa.addr, "")(asTarget(t, "db-jp-01", rsa.addr, "")(cfg))
	})
	var figures []string
	for _, c := range []struct {
		target, keyType string
		tg              *ownTarget
	}{{"db-jp-01", "rsa", rsa}, {"web-sg-01", "ecdsa", ecdsa}} {
		marker := "/tmp/sekisho-e2e-hostkeytype-" + randHex(t)
		logFrom := c.tg.logSize(t)
		began := time.Now()
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+"+c.target, "touch "+marker), nil)
		secs := time.Since(began).Seconds()
		want := "host key of " + c.target + " does not match the pinned key"
		if r.code != 255 || !strings.Contains(r.stderr, want) {
			t.Errorf("%s now %s: exit %d, stderr %q, want %q", c.target, c.keyType, r.code, r.stderr, want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("the command ran on %s, whose host key changed type", c.target)
		}
		id := refusedSession(t, r.stderr)
		if rows := auditOf(t, v, id, "target.hostkey_mismatch"); len(rows) != 1 {
			t.Errorf("%s: target.hostkey_mismatch audit rows %v, want one", c.target, rows)
		}
		if rows := auditOf(t, v, id, "session.start"); len(rows) != 0 {
			t.Errorf("%s: the session was started", c.target)
		}
		// The certificate was never offered: the target saw the
		// connection but no authentication attempt of the session.
		log := c.tg.logSince(t, logFrom)
		if !strings.Contains(log, "Connection from") {
			t.Errorf("%s: sekisho never reached the target, so the test proves nothing:\n%s", c.target, log)
		}
		if strings.Contains(log, "session="+id) || strings.Contains(log, "publickey") {
			t.Errorf("%s: the target saw the certificate of the refused session:\n%s", c.target, log)
		}
		figures = append(figures, fmt.Sprintf("pinned ed25519, target now only %s: refused in %.1f s", c.keyType, secs))
	}
	hardening.Report(t, "17", "host key of another type: %s; told %q; audited as target.hostkey_mismatch; no certificate reached the target (its sshd logged no authentication)",
		strings.Join(figures, "; "), "the host key of TARGET does not match the pinned key; refusing to connect")
}
