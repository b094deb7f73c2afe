package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// vaultRefusalBound is how soon a new session must be refused when Vault
// cannot sign (SECURITY-TESTS.md: "within 5 s"), measured from the start
// of the technician's ssh.
const vaultRefusalBound = 5 * time.Second

// devVault is a dev Vault of the test's own (bin/devvault), configured for
// sekisho by `sekisho vault setup` like the demo's, so that a test may
// seal, stop or strip it without touching the Vault the other tests
// share. Its user CA is a key the test made and imports on every start,
// so that a restarted Vault signs with the same CA, as a real one with
// storage would.
type devVault struct {
	dir   string // root token, unseal key, AppRole files, user_ca.pub
	port  string
	addr  string // http://127.0.0.1:port
	caKey string // the user CA's private key, OpenSSH PEM
	caPub string

	cmd    *exec.Cmd
	exited chan struct{}
}

// startDevVault starts and configures a dev Vault for the test; it is
// stopped when the test ends.
func startDevVault(t *testing.T) *devVault {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "own-vault-user-ca")
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	dv := &devVault{dir: t.TempDir(), port: freePort(t), caKey: string(pem.EncodeToMemory(block)),
		caPub: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))}
	dv.addr = "http://127.0.0.1:" + dv.port
	t.Cleanup(dv.stop)
	dv.start(t)
	return dv
}

// start runs the Vault process on dv's port and configures it for
// sekisho: the imported user CA, then `sekisho vault setup`, which writes
// a new role ID and secret ID for sekisho.
func (dv *devVault) start(t *testing.T) {
	t.Helper()
	addrFile := filepath.Join(dv.dir, "addr")
	os.Remove(addrFile)
	out := &syncBuffer{}
	cmd := exec.Command(filepath.Join(env.root, "bin", "devvault"), "-listen", "127.0.0.1:"+dv.port,
		"-token-file", filepath.Join(dv.dir, "root-token"), "-addr-file", addrFile,
		"-unseal-key-file", filepath.Join(dv.dir, "unseal-key"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dv.cmd, dv.exited = cmd, make(chan struct{})
	exited := dv.exited
	go func() { cmd.Wait(); close(exited) }()
	waitUntil(t, 60*time.Second, "the own dev Vault to serve", func() bool {
		select {
		case <-exited:
			t.Fatalf("devvault exited at start:\n%s", out.String())
		default:
		}
		b, err := os.ReadFile(addrFile)
		return err == nil && strings.HasSuffix(string(b), "\n")
	})

	dv.must(t, "POST", "sys/mounts/ssh", map[string]any{"type": "ssh"})
	dv.must(t, "POST", "ssh/config/ca", map[string]any{"private_key": dv.caKey, "public_key": dv.caPub})
	os.Remove(filepath.Join(dv.dir, "secret-id")) // setup keeps an existing one
	cfg := filepath.Join(dv.dir, "setup.yaml")
	b, err := os.ReadFile(env.state.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(dv.edit(sharedVaultFiles(string(b)))), 0o600); err != nil {
		t.Fatal(err)
	}
	setup := exec.Command(env.sekisho, "vault", "setup", "--config", cfg, "--ca-out", dv.caFile())
	setup.Env = append(os.Environ(), "VAULT_TOKEN="+dv.root(t))
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("sekisho vault setup on the own Vault: %v\n%s", err, out)
	} else if !strings.Contains(string(out), dv.caPub) {
		t.Fatalf("vault setup did not keep the imported CA:\n%s", out)
	}
}

// stop ends the Vault process (its memory, and so everything it held,
// goes with it).
func (dv *devVault) stop() {
	if dv.cmd == nil {
		return
	}
	dv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dv.exited:
	case <-time.After(20 * time.Second):
		dv.cmd.Process.Kill()
		<-dv.exited
	}
	dv.cmd = nil
}

// caFile is the user CA public key, for a target's TrustedUserCAKeys.
func (dv *devVault) caFile() string { return filepath.Join(dv.dir, "user_ca.pub") }

// edit points a sekisho config (one whose AppRole files are the demo's,
// by absolute path) at this Vault.
func (dv *devVault) edit(cfg string) string {
	cfg = strings.Replace(cfg, "address: "+env.state.Vault, "address: "+dv.addr, 1)
	for _, f := range []string{"role-id", "secret-id"} {
		cfg = strings.Replace(cfg, filepath.Join(env.dir, "vault", f), filepath.Join(dv.dir, f), 1)
	}
	return cfg
}

// sharedVaultFiles names the demo's AppRole files by absolute path, as
// startVariant does before its edit.
func sharedVaultFiles(cfg string) string {
	for _, k := range []string{"role_id_file", "secret_id_file"} {
		cfg = strings.ReplaceAll(cfg, k+": vault/", k+": "+filepath.Join(env.dir, "vault")+"/")
	}
	return cfg
}

func (dv *devVault) root(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dv.dir, "root-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// request calls this Vault's HTTP API with its root token.
func (dv *devVault) request(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), method, dv.addr+"/v1/"+path, rd)
	req.Header.Set("X-Vault-Token", dv.root(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("own vault %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (dv *devVault) must(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	code, out := dv.request(t, method, path, body)
	if code/100 != 2 {
		t.Fatalf("own vault %s %s: %d %v", method, path, code, out)
	}
	return out
}

func (dv *devVault) seal(t *testing.T) {
	t.Helper()
	dv.must(t, "PUT", "sys/seal", nil)
}

// unseal unseals the Vault and waits until it is active again.
func (dv *devVault) unseal(t *testing.T) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(dv.dir, "unseal-key"))
	if err != nil {
		t.Fatal(err)
	}
	dv.must(t, "PUT", "sys/unseal", map[string]any{"key": strings.TrimSpace(string(key))})
	waitUntil(t, 30*time.Second, "the own Vault to be active after unsealing", func() bool {
		code, _ := dv.request(t, "GET", "sys/health", nil)
		return code == 200
	})
}

// vaultFaultRefusal is what a session refused for want of a certificate
// showed.
type vaultFaultRefusal struct {
	secs   float64
	detail string // the cert.failed audit row's detail
}

// refusedForVault runs a session as aiko to web-sg-01 (served by tg)
// through v, which must be refused within vaultRefusalBound because no
// certificate can be had, with nothing falling back: no command ran, no
// certificate was issued for the session, and sekisho did not even
// connect to the target.
func refusedForVault(t *testing.T, v *variant, tg *ownTarget) vaultFaultRefusal {
	t.Helper()
	marker := "/tmp/sekisho-e2e-vaultfault-" + randHex(t)
	logFrom := tg.logSize(t)
	began := time.Now()
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "touch "+marker), nil)
	secs := time.Since(began).Seconds()
	if r.code != 255 || !strings.Contains(r.stderr, "sekisho: could not obtain a certificate for web-sg-01; tell the sekisho operator") {
		t.Fatalf("exit %d, stderr %q, want a refusal for want of a certificate", r.code, r.stderr)
	}
	if secs > vaultRefusalBound.Seconds() {
		t.Errorf("the refusal took %.1f s, more than %s", secs, vaultRefusalBound)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran without a certificate from Vault")
	}
	id := refusedSession(t, r.stderr)
	failed := auditOf(t, v, id, "cert.failed")
	if len(failed) != 1 || failed[0]["detail"] == "" {
		t.Errorf("session %s: cert.failed audit rows %v, want one with the reason", id, failed)
	}
	if issued := auditOf(t, v, id, "cert.issued"); len(issued) != 0 {
		t.Errorf("session %s: a certificate was issued after all: %v", id, issued)
	}
	if len(auditOf(t, v, id, "session.start")) != 0 {
		t.Errorf("session %s was started", id)
	}
	if got := tg.logSince(t, logFrom); strings.Contains(got, "Connection from") {
		t.Errorf("sekisho connected to the target without a certificate from Vault:\n%s", got)
	}
	detail := ""
	if len(failed) > 0 {
		detail = failed[0]["detail"]
	}
	return vaultFaultRefusal{secs: secs, detail: detail}
}

// servedAgain runs a session as aiko to web-sg-01 through v, which must
// work, and returns how long it took.
func servedAgain(t *testing.T, v *variant, what string) float64 {
	t.Helper()
	began := time.Now()
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo served"), nil)
	if r.code != 0 || r.stdout != "served\n" {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q", what, r.code, r.stdout, r.stderr)
	}
	return time.Since(began).Seconds()
}

// ownVaultSetup is a variant of sekisho on its own Vault, whose
// certificates only its own target trusts.
func ownVaultSetup(t *testing.T) (*devVault, *ownTarget, *variant) {
	t.Helper()
	dv := startDevVault(t)
	tg := startOwnTarget(t, dv.caFile(), "ed25519")
	v := startVariant(t, func(cfg string) string { return tg.asWebTarget(t)(dv.edit(cfg)) })
	servedAgain(t, v, "with the own Vault up")
	return dv, tg, v
}

func TestVaultSealedRefusesSessionUntilUnsealed(t *testing.T) {
	t.Parallel()
	dv, tg, v := ownVaultSetup(t)
	dv.seal(t)
	refused := refusedForVault(t, v, tg)
	if !strings.Contains(refused.detail, "Vault is sealed") {
		t.Errorf("the audit row does not say Vault is sealed: %q", refused.detail)
	}
	dv.unseal(t)
	again := servedAgain(t, v, "after unsealing")
	hardening.Report(t, "vault", "sealed: new session refused in %.1f s (told %q, audited as cert.failed: Vault is sealed), no connection to the target; unsealed: the next session served in %.1f s",
		refused.secs, "could not obtain a certificate for TARGET; tell the sekisho operator", again)
}

func TestVaultStoppedRefusesSessionUntilRestarted(t *testing.T) {
	t.Parallel()
	dv, tg, v := ownVaultSetup(t)
	dv.stop()
	refused := refusedForVault(t, v, tg)
	if !strings.Contains(refused.detail, "connection refused") {
		t.Errorf("the audit row does not say Vault refused the connection: %q", refused.detail)
	}
	// A new Vault process with the same CA, and new AppRole credentials:
	// sekisho's token is unknown to it, so it logs in again.
	dv.start(t)
	again := servedAgain(t, v, "after Vault was started again")
	hardening.Report(t, "vault", "stopped: new session refused in %.1f s (audited as cert.failed: connection refused), no connection to the target; started again (same CA, new AppRole secret): the next session served in %.1f s without restarting sekisho",
		refused.secs, again)
}

func TestVaultCredentialsRevokedRefusesSession(t *testing.T) {
	t.Parallel()
	dv, tg, v := ownVaultSetup(t)
	// The token alone revoked: sekisho logs in again with its AppRole.
	dv.must(t, "PUT", "sys/leases/revoke-prefix/auth/approle/login", nil)
	relogin := servedAgain(t, v, "after sekisho's token was revoked")

	// Token and secret ID revoked, as when the operator cuts sekisho off.
	secretFile := filepath.Join(dv.dir, "secret-id")
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	dv.must(t, "POST", "auth/approle/role/sekisho/secret-id/destroy", map[string]any{"secret_id": strings.TrimSpace(string(secret))})
	dv.must(t, "PUT", "sys/leases/revoke-prefix/auth/approle/login", nil)
	refused := refusedForVault(t, v, tg)
	if !strings.Contains(refused.detail, "approle login") {
		t.Errorf("the audit row does not say the login failed: %q", refused.detail)
	}

	// A new secret ID in sekisho's file: served again, no restart.
	out := dv.must(t, "POST", "auth/approle/role/sekisho/secret-id", nil)
	data, _ := out["data"].(map[string]any)
	newSecret, _ := data["secret_id"].(string)
	if newSecret == "" {
		t.Fatalf("no secret ID in %v", out)
	}
	if err := os.WriteFile(secretFile+".tmp", []byte(newSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(secretFile+".tmp", secretFile); err != nil {
		t.Fatal(err)
	}
	again := servedAgain(t, v, "with a new secret ID")
	hardening.Report(t, "vault", "token revoked: sekisho logged in again, session served in %.1f s; token and AppRole secret ID revoked: new session refused in %.1f s (audited as cert.failed), no connection to the target; new secret ID: the next session served in %.1f s",
		relogin, refused.secs, again)
}

// slowProxy forwards TCP to upstream; while slow, every chunk sekisho
// sends is held for delay (or until the proxy is fast again).
type slowProxy struct {
	ln       net.Listener
	upstream string
	delay    time.Duration

	mu   sync.Mutex
	fast chan struct{} // closed while fast
}

func startSlowProxy(t *testing.T, upstream string, delay time.Duration) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, upstream: upstream, delay: delay, fast: make(chan struct{})}
	close(p.fast)
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); p.copySlowly(up, c); up.Close(); c.Close() }()
			go func() { defer conns.Done(); io.Copy(c, up); c.Close(); up.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.setSlow(false)
		conns.Wait()
	})
	return p
}

func (p *slowProxy) addr() string { return "http://" + p.ln.Addr().String() }

func (p *slowProxy) setSlow(slow bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.fast:
		if slow {
			p.fast = make(chan struct{})
		}
	default:
		if !slow {
			close(p.fast)
		}
	}
}

func (p *slowProxy) copySlowly(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			fast := p.fast
			p.mu.Unlock()
			hold := time.NewTimer(p.delay)
			select {
			case <-fast:
			case <-hold.C:
			}
			hold.Stop()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func TestVaultSlowRefusesSessionWithinBound(t *testing.T) {
	t.Parallel()
	// The shared Vault behind a proxy that can make it slow: only this
	// test's sekisho goes through the proxy.
	const delay = 8 * time.Second
	proxy := startSlowProxy(t, strings.TrimPrefix(env.state.Vault, "http://"), delay)
	tg := startOwnTarget(t, sharedUserCA(), "ed25519")
	v := startVariant(t, func(cfg string) string {
		return tg.asWebTarget(t)(strings.Replace(cfg, "address: "+env.state.Vault, "address: "+proxy.addr(), 1))
	})
	servedAgain(t, v, "with Vault fast")
	proxy.setSlow(true)
	refused := refusedForVault(t, v, tg)
	if !strings.Contains(refused.detail, "vault did not answer within") {
		t.Errorf("the audit row does not say Vault was too slow: %q", refused.detail)
	}
	proxy.setSlow(false)
	again := servedAgain(t, v, "with Vault fast again")
	hardening.Report(t, "vault", "slow (every request held %s): new session refused in %.1f s (audited as cert.failed: %s), no connection to the target; fast again: the next session served in %.1f s",
		delay, refused.secs, fmt.Sprint(strings.SplitN(refused.detail, ":", 2)[0]), again)
}
