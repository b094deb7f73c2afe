package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
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

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// variant is a second sekisho server next to the demo's, sharing its
// Vault and targets, with a changed config.
type variant struct {
	dir    string
	config string
	port   string
	out    *syncBuffer
	wrap   []string
}

// start runs `sekisho serve` on the variant's config and waits until it
// accepts SSH; the process is stopped when the test ends.
func (v *variant) start(t testing.TB) {
	t.Helper()
	os.Remove(v.pidPath())
	out := &syncBuffer{}
	v.out = out
	args := append(append([]string{}, v.wrap...), env.sekisho, "serve", "--config", v.config)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("variant server output:\n%s", tail(out.String(), 40))
		}
	})
	waitUntil(t, 60*time.Second, "variant sekisho to accept SSH", func() bool {
		select {
		case <-exited:
			t.Fatalf("variant sekisho exited:\n%s", out.String())
		default:
		}
		_, pidErr := os.Stat(v.pidPath()) // written once serving
		return strings.Contains(out.String(), `"msg":"sekisho listening"`) && pidErr == nil
	})
}

// pidPath is where the variant's server writes its process ID: beside
// its SQLite state, or beside its config when the state is on PostgreSQL.
func (v *variant) pidPath() string {
	if b, err := os.ReadFile(v.config); err == nil && strings.Contains(string(b), "\ndatabase:\n") {
		return filepath.Join(v.dir, "sekisho.pid")
	}
	return filepath.Join(v.dir, "sekisho.db.pid")
}

// startVariant writes the demo config with edit applied into a new
// directory, starts `sekisho serve` on it (through wrap, e.g. prlimit, when
// given) and waits until it accepts SSH.
func startVariant(t testing.TB, edit func(cfg string) string, wrap ...string) *variant {
	t.Helper()
	return startVariantOf(t, env.state.Config, edit, wrap...)
}

// startVariantOf is startVariant on another config file.
func startVariantOf(t testing.TB, config string, edit func(cfg string) string, wrap ...string) *variant {
	t.Helper()
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := freePort(t)
	cfg := string(b)
	cfg = regexp.MustCompile(`(?m)^listen: .*$`).ReplaceAllString(cfg, "listen: 127.0.0.1:"+port)
	// Variants run without the demo's web console, whose port is taken.
	cfg = regexp.MustCompile(`(?m)^web:\n(  .*\n)*`).ReplaceAllString(cfg, "")
	cfg = strings.ReplaceAll(cfg, "role_id_file: vault/", "role_id_file: "+filepath.Join(env.dir, "vault")+"/")
	cfg = strings.ReplaceAll(cfg, "secret_id_file: vault/", "secret_id_file: "+filepath.Join(env.dir, "vault")+"/")
	if edit != nil {
		cfg = edit(cfg)
	}
	v := &variant{dir: dir, config: filepath.Join(dir, "sekisho.yaml"), port: port, out: &syncBuffer{}}
	if err := os.WriteFile(v.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	v.wrap = wrap
	v.start(t)
	// The variant has its own host key: trust it for this test only.
	return v
}

// kill sends sig to the variant's server; for SIGTERM it waits until the
// server says it stopped.
func (v *variant) kill(t testing.TB, sig syscall.Signal) {
	t.Helper()
	pid := variantPID(t, v)
	out := v.out
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	if sig == syscall.SIGTERM {
		waitUntil(t, 30*time.Second, "sekisho to stop", func() bool { return strings.Contains(out.String(), `"msg":"sekisho stopped"`) })
	}
}

func (v *variant) ssh(ctx context.Context, tech, login string, remote ...string) *exec.Cmd {
	opts := sshOpts(tech)
	for i, o := range opts {
		if strings.HasPrefix(o, "UserKnownHostsFile=") || strings.HasPrefix(o, "StrictHostKeyChecking=") {
			opts[i] = strings.SplitN(o, "=", 2)[0] + map[bool]string{true: "=/dev/null", false: "=no"}[strings.HasPrefix(o, "User")]
		}
	}
	args := append(opts, "-p", v.port, login+"@127.0.0.1")
	return exec.CommandContext(ctx, "ssh", append(args, remote...)...)
}

func (v *variant) audit(t *testing.T) []map[string]string {
	t.Helper()
	out, err := exec.Command(env.sekisho, "audit", "--config", v.config, "--limit", "1000").Output()
	if err != nil {
		t.Fatalf("sekisho audit: %v", err)
	}
	var events []map[string]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var e map[string]string
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			events = append(events, e)
		}
	}
	return events
}

// freePort returns a loopback port free now, for a server the test
// starts next. It is drawn below the kernel's ephemeral range (32768 and
// up on Linux), which the tests' own outgoing connections (ssh, browsers)
// take ports from: a port from ":0" could be taken by one of them before
// the server binds it.
func freePort(t testing.TB) string {
	t.Helper()
	// 26000-31999: apart from the 20000-25999 that sekisho demo picks its
	// own ports from while the tests start demos of their own.
	for range 100 {
		p := 26000 + mrand.IntN(6000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return strconv.Itoa(p)
	}
	t.Fatal("no free port in 26000-31999 after 100 tries")
	return ""
}

// A target presenting another host key than the pinned one is refused
// before any certificate is sent, by TECHNICIAN+TARGET and through ssh -J
// alike.
func TestTargetHostKeyMismatchRefusedBeforeCertificateIsSent(t *testing.T) {
	t.Parallel()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(pub)
	otherLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other)))
	pinned := targetNamed(t, "db-jp-01").HostKey
	v := startVariant(t, func(cfg string) string { return strings.Replace(cfg, pinned, otherLine, 1) })
	marker := "/tmp/sekisho-e2e-hostkey-" + randHex(t)
	jump := jumpConfig(t, "aiko", v.port, variantKnownHosts(t, v))
	for _, c := range []struct {
		what string
		cmd  *exec.Cmd
	}{
		{"aiko+db-jp-01", v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "touch "+marker)},
		{"ssh -J", exec.CommandContext(ctxT(t), "ssh", "-F", jump, "db-jp-01", "touch "+marker)},
	} {
		r := run(t, c.cmd, nil)
		if r.code != 255 || !strings.Contains(r.stderr, "host key of db-jp-01 does not match the pinned key") {
			t.Fatalf("%s: exit %d, stderr %q", c.what, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran on a target whose host key did not match")
	}
	var refused []string
	for _, e := range v.audit(t) {
		if e["kind"] == "target.hostkey_mismatch" && e["target"] == "db-jp-01" {
			refused = append(refused, e["session"])
		}
	}
	if len(refused) != 2 {
		t.Fatalf("%d target.hostkey_mismatch audit events, want one per attempt (2)", len(refused))
	}
	// The certificate was never offered to the target: its sshd log has
	// no line naming either session.
	log := targetLog(t, "db-jp-01")
	for _, id := range refused {
		if strings.Contains(log, "session="+id) {
			t.Errorf("the target's sshd saw the certificate of the refused session %s", id)
		}
	}
	hardening.Report(t, "17", "a target presenting a host key other than the pinned one, reached as aiko+db-jp-01 and through ssh -J: both refused (ssh exit 255) before the certificate is sent, the command never runs, the target's sshd never sees either session, each audited as target.hostkey_mismatch")
}

func TestRecordingUnavailableRefusesSession(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	// The recording directory disappears and a file takes its place: no
	// session can be recorded, so none may start.
	recDir := filepath.Join(v.dir, "recordings")
	if err := os.RemoveAll(recDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recDir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := "/tmp/sekisho-e2e-norec-" + randHex(t)
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "touch "+marker), nil)
	if r.code != 255 || !strings.Contains(r.stderr, "cannot be recorded, so it is refused") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("an unrecorded command ran on the target")
	}
	refused := false
	for _, e := range v.audit(t) {
		refused = refused || (e["kind"] == "refused" && strings.Contains(e["detail"], "recording unavailable"))
	}
	if !refused {
		t.Error("the refusal is not audited")
	}
	hardening.Report(t, "disk", "the recording directory replaced by a file: a new session refused (ssh exit %d, told it cannot be recorded), the command never runs on the target, the refusal audited", r.code)
}

func TestRecordingFailureMidSessionEndsIt(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("prlimit (util-linux) is required")
	}
	// Files sekisho writes may not grow past 2 MiB: the recording of a
	// large output hits the limit mid-session, as on a full disk. (The
	// state store is limited too; its write-ahead log stays well below.)
	const limit = 2 << 20
	v := startVariant(t, nil, "prlimit", fmt.Sprintf("--fsize=%d", limit), "--")
	cmd := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "for i in $(seq 1 100000); do echo line-$i-padding-padding-padding-padding; done; echo finished")
	r := run(t, cmd, nil)
	if r.code == 0 || strings.Contains(r.stdout, "finished") {
		t.Fatalf("the session outlived its recording: exit %d, %d bytes of output", r.code, len(r.stdout))
	}
	if !strings.Contains(r.stderr, "can no longer be recorded, so it is ended") {
		t.Errorf("the technician was not told why: stderr %q", r.stderr)
	}
	// Record before forward: the technician received nothing that is not
	// in the recording.
	var (
		ss   []session
		list []byte
	)
	waitUntil(t, 30*time.Second, "the session to be registered as ended", func() bool {
		list, _ = exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
		ss = nil
		return json.Unmarshal(list, &ss) == nil && len(ss) == 1 && ss[0].EndedAt != ""
	})
	if ss[0].EndReason != "recording failed" {
		t.Fatalf("end reason %q, want %q", ss[0].EndReason, "recording failed")
	}
	ev, err := exec.Command(env.sekisho, "replay", "--events", "--config", v.config, ss[0].ID).CombinedOutput()
	if err != nil {
		t.Fatalf("replay --events: %v\n%s", err, ev)
	}
	recorded := streams(t, string(ev), "x-stdout")
	if !strings.HasPrefix(recorded, r.stdout) {
		t.Errorf("the technician received %d bytes, the recording holds %d that do not start with them", len(r.stdout), len(recorded))
	}
	received := len(r.stdout)
	// The server survives, and a small session still works.
	r = run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo still-serving"), nil)
	if r.code != 0 || r.stdout != "still-serving\n" {
		t.Errorf("after the failure: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "disk", "sekisho's files capped at 2 MiB, as on a disk filling mid-session, under 100,000 lines of output: the session ended with reason \"recording failed\", the technician told why; all %d bytes received are in the recording (%d recorded); the next session served", received, len(recorded))
}

func TestVaultUnreachableRefusesSession(t *testing.T) {
	t.Parallel()
	// A TCP proxy in front of the dev Vault that the test can cut.
	vaultAddr := strings.TrimPrefix(env.state.Vault, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		cut   bool
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if cut {
				mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", vaultAddr)
			if err != nil {
				mu.Unlock()
				c.Close()
				continue
			}
			conns = append(conns, c, up)
			mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "address: "+env.state.Vault, "address: http://"+ln.Addr().String(), 1)
	})
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo via-vault"), nil); r.code != 0 || r.stdout != "via-vault\n" {
		t.Fatalf("with Vault up: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	mu.Lock()
	cut = true
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	ln.Close()
	marker := "/tmp/sekisho-e2e-novault-" + randHex(t)
	attempt := time.Now()
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "touch "+marker), nil)
	took := time.Since(attempt)
	if r.code != 255 || !strings.Contains(r.stderr, "could not obtain a certificate for web-sg-01") {
		t.Fatalf("with Vault down: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran without a certificate from Vault")
	}
	// The attempt is in the register, ended as refused.
	list, _ := exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
	if !strings.Contains(string(list), `"end_reason": "refused: could not obtain a certificate for web-sg-01`) {
		t.Errorf("the refused attempt is not in the register:\n%s", list)
	}
	hardening.Report(t, "vault", "Vault cut off (its connections closed, new ones refused) after a good session: the next session refused in %.1f s as no certificate could be obtained, the command never runs, the attempt registered as refused", took.Seconds())
	hardening.Report(t, "partition", "the network path to Vault cut mid-run: a new session refused in %.1f s, nothing runs on the target, the refusal registered", took.Seconds())
}

func TestInvalidConfigNamesFileAndLine(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(env.state.Config)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "    country: CN", "    country: China", 1)
	line := 1 + strings.Count(bad[:strings.Index(bad, "country: China")], "\n") - 1 // the entry starts a line above
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(bad), 0o600)
	for _, sub := range [][]string{{"config", "check"}, {"serve"}} {
		cmd := exec.Command(env.sekisho, append(sub, "--config", path)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("sekisho %s accepted an invalid config", sub)
		}
		want := fmt.Sprintf("%s:%d: affiliate ops-cn: country \"China\" is not an ISO 3166 two-letter code", path, line)
		if !strings.Contains(string(out), want) {
			t.Errorf("sekisho %s: got %q, want it to contain %q", sub, out, want)
		}
	}
}
