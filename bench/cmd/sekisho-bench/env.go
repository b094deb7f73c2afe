package main

import (
	"bufio"
	"bytes"
	"context"
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
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// demoState is the part of <dir>/demo.json (written by `sekisho demo` once
// it is ready) that the benchmark reads.
type demoState struct {
	Bastion        string `json:"bastion"`
	BastionHostKey string `json:"bastion_host_key"` // a known_hosts line
	Vault          string `json:"vault"`
	VaultTokenFile string `json:"vault_token_file"`
	Config         string `json:"config"`
	Targets        []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		HostKey string `json:"host_key"`
		Login   string `json:"login"`
		Config  string `json:"sshd_config"`
	} `json:"targets"`
	Keys map[string]string `json:"keys"`
	PID  int               `json:"pid"`
}

// Who the benchmark connects as, and where: the demo's shipped rule
// pii-in-residency lets aiko (ops-jp, from 127.0.0.1 = JP) reach db-jp-01
// without a second factor, so no rules are swapped.
const (
	technician = "aiko"
	targetName = "db-jp-01"
)

// Host aliases in the generated ssh_config.
const (
	hostJump    = "bench-jump"    // the OpenSSH jump host of path A
	hostTarget  = "bench-target"  // the target, for paths A and D
	hostSekisho = "bench-sekisho" // sekisho, logging in as aiko+db-jp-01 (path B)
	// hostSekishoJump is sekisho as the jump host of path J, logging in
	// as aiko; db-jp-01 is then reached by its own name.
	hostSekishoJump = "bench-sekisho-jump"
)

// env is everything the three paths need: the running demo (dev Vault,
// target sshd, sekisho), a jump-host sshd of our own, a certificate for
// direct logins to the target, and one ssh_config per cipher.
type env struct {
	dir      string // work directory, removed at the end unless -keep
	bin      string // the sekisho binary
	demoDir  string
	state    demoState
	target   string // host:port of db-jp-01
	login    string // account on the target
	demo     *child
	jump     *child
	jumpAddr string
	certFile string // the certificate of the direct paths (A, D)
	// metricsAddr is where sekisho serves Prometheus /metrics.
	metricsAddr string
	// configs maps a client variant to its ssh_config file: "" for
	// OpenSSH's defaults, a cipher name, or "kex:" and a key exchange.
	configs map[string]string
}

// child is a process the benchmark started; exited is closed once it
// has been waited for.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startChild(name string, logPath string, args ...string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Children die with the benchmark, even when it is killed. Each runs
	// in a session of its own: with the kernel's scheduler autogroups
	// (sched_autogroup_enabled), one session is one group with one share
	// of the CPUs, and sekisho must not share one with the load
	// generator of parts 3 and 4, which runs in this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	return c, nil
}

func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop interrupts the process and kills it if it has not ended in time.
func (c *child) stop(sig os.Signal, grace time.Duration) {
	if c == nil {
		return
	}
	c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// setUp starts the demo and the jump host and writes the client files.
func setUp(ctx context.Context, dir, sekishoBin string, variants []string) (*env, error) {
	e := &env{dir: dir, bin: sekishoBin, demoDir: filepath.Join(dir, "demo")}
	if err := e.startDemo(ctx, sekishoBin); err != nil {
		return e, err
	}
	for _, t := range e.state.Targets {
		if t.Name == targetName {
			e.target, e.login = t.Address, t.Login
		}
	}
	if e.target == "" {
		return e, fmt.Errorf("the demo has no target %s", targetName)
	}
	cert, err := e.signDirectCert(ctx)
	if err != nil {
		return e, fmt.Errorf("certificate for the direct paths: %w", err)
	}
	e.certFile = cert
	jumpKey, err := e.startJump(ctx)
	if err != nil {
		return e, fmt.Errorf("jump host: %w", err)
	}
	if err := e.writeClientFiles(cert, jumpKey, variants); err != nil {
		return e, err
	}
	return e, nil
}

func (e *env) tearDown() {
	e.jump.stop(syscall.SIGTERM, 5*time.Second)
	e.demo.stop(os.Interrupt, 20*time.Second)
}

// startDemo runs `sekisho demo` on random loopback ports and waits for
// its demo.json, as the e2e suite does. sekisho serves its Prometheus
// metrics (goroutines, Go heap) on another free loopback port.
func (e *env) startDemo(ctx context.Context, sekishoBin string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	e.metricsAddr = net.JoinHostPort("127.0.0.1", port)
	c, err := startChild(sekishoBin, filepath.Join(e.dir, "demo.out"), "demo", "--dir", e.demoDir, "--listen", "127.0.0.1:0", "--metrics", e.metricsAddr)
	if err != nil {
		return err
	}
	e.demo = c
	stateFile := filepath.Join(e.demoDir, "demo.json")
	err = poll(ctx, 2*time.Minute, "the demo's "+stateFile, func() (bool, error) {
		if !c.alive() {
			return false, fmt.Errorf("sekisho demo exited at start; see %s", filepath.Join(e.dir, "demo.out"))
		}
		b, err := os.ReadFile(stateFile)
		return err == nil && json.Unmarshal(b, &e.state) == nil, nil
	})
	if err != nil {
		return err
	}
	if e.state.PID != c.cmd.Process.Pid {
		return fmt.Errorf("demo.json names pid %d, the demo started as %d", e.state.PID, c.cmd.Process.Pid)
	}
	return nil
}

// signDirectCert has the demo's dev Vault sign aiko's public key for the
// target's login, so that paths A and D log in to the same target sshd
// that sekisho reaches (it trusts only the Vault user CA). It is signed
// once, with the root token, under a role of its own ("sekisho-bench")
// valid for the whole run: A and D pay no Vault call per connection,
// which is the point of comparing them with B.
func (e *env) signDirectCert(ctx context.Context) (string, error) {
	token, err := os.ReadFile(e.state.VaultTokenFile)
	if err != nil {
		return "", err
	}
	pub, err := os.ReadFile(e.state.Keys[technician] + ".pub")
	if err != nil {
		return "", err
	}
	call := func(path string, body map[string]any) (json.RawMessage, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.state.Vault+"/v1/"+path, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Vault-Token", strings.TrimSpace(string(token)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("vault %s: %w", path, err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("vault %s: %s: %s", path, resp.Status, bytes.TrimSpace(rb))
		}
		return rb, nil
	}
	if _, err := call("ssh/roles/sekisho-bench", map[string]any{
		"key_type":                "ca",
		"allow_user_certificates": true,
		"allowed_users":           e.login,
		"allow_user_key_ids":      true,
		"default_extensions":      map[string]string{"permit-pty": ""},
		"ttl":                     "4h",
		"max_ttl":                 "4h",
	}); err != nil {
		return "", err
	}
	rb, err := call("ssh/sign/sekisho-bench", map[string]any{
		"public_key":       strings.TrimSpace(string(pub)),
		"valid_principals": e.login,
		"key_id":           "sekisho-bench " + technician + " direct",
	})
	if err != nil {
		return "", err
	}
	var signed struct {
		Data struct {
			SignedKey string `json:"signed_key"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rb, &signed); err != nil || signed.Data.SignedKey == "" {
		return "", fmt.Errorf("vault sign: no signed_key in %s", rb)
	}
	// Not next to aiko's key as aiko-cert.pub: ssh would then offer the
	// certificate to sekisho too, which refuses certificates, and B would
	// pay an extra authentication round trip.
	path := filepath.Join(e.dir, "target-cert.pub")
	return path, os.WriteFile(path, []byte(signed.Data.SignedKey), 0o644)
}

const jumpConfig = `# The jump host of path A: a plain OpenSSH sshd that lets aiko in with
# the demo's key and forwards (ssh -J uses direct-tcpip).
Port %s
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
LogLevel VERBOSE
`

// startJump starts an OpenSSH sshd (the same binary as the demo's
// targets) as the jump host, and returns its host public key line.
func (e *env) startJump(ctx context.Context) (string, error) {
	dir := filepath.Join(e.dir, "jump")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	pubLine, err := writeHostKey(hostKey)
	if err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	e.jumpAddr = net.JoinHostPort("127.0.0.1", port)
	cfg := filepath.Join(dir, "sshd_config")
	body := fmt.Sprintf(jumpConfig, port, hostKey, filepath.Join(dir, "sshd.pid"), e.state.Keys[technician]+".pub")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return "", err
	}
	c, err := startChild("/usr/sbin/sshd", filepath.Join(dir, "sshd.out"), "-D", "-e", "-f", cfg, "-E", filepath.Join(dir, "sshd.log"))
	if err != nil {
		return "", err
	}
	e.jump = c
	err = poll(ctx, 15*time.Second, "the jump sshd to listen", func() (bool, error) {
		if !c.alive() {
			return false, fmt.Errorf("the jump sshd exited at start; see %s", filepath.Join(dir, "sshd.log"))
		}
		return sshBanner(e.jumpAddr), nil
	})
	return pubLine, err
}

// writeHostKey writes a new ed25519 host key and returns its public line.
func writeHostKey(path string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "sekisho-bench jump")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), nil
}

// clientConfig is shared by the three paths: no agent, no multiplexing,
// only aiko's key, every host key pinned. Path A is `ssh -J bench-jump
// bench-target`; ssh passes -F to the jump leg, so the cipher applies to
// both of A's legs.
const clientConfig = `Host *
    UserKnownHostsFile %[1]s
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    IdentitiesOnly yes
    IdentityAgent none
    IdentityFile %[2]s
    BatchMode yes
    ControlMaster no
    ControlPath none
    ForwardAgent no
    ForwardX11 no
    Compression no
    LogLevel ERROR
%[3]s
Host ` + hostJump + `
    HostName %[4]s
    Port %[5]s
    User %[6]s

Host ` + hostTarget + `
    HostName %[7]s
    Port %[8]s
    User %[6]s
    CertificateFile %[9]s

Host ` + hostSekisho + `
    HostName %[10]s
    Port %[11]s
    User ` + technician + `+` + targetName + `

Host ` + hostSekishoJump + `
    HostName %[10]s
    Port %[11]s
    User ` + technician + `

Host ` + targetName + `
    ProxyJump ` + hostSekishoJump + `
    User ` + technician + `
`

func (e *env) writeClientFiles(cert, jumpKey string, variants []string) error {
	jh, jp, _ := net.SplitHostPort(e.jumpAddr)
	th, tp, _ := net.SplitHostPort(e.target)
	bh, bp, _ := net.SplitHostPort(e.state.Bastion)
	var targetKey string
	for _, t := range e.state.Targets {
		if t.Name == targetName {
			f := strings.Fields(t.HostKey)
			if len(f) < 2 {
				return fmt.Errorf("demo.json: bad host key for %s", targetName)
			}
			targetKey = f[0] + " " + f[1]
		}
	}
	kh := filepath.Join(e.dir, "known_hosts")
	// The demo's known_hosts holds the host CA line that path J's
	// client checks sekisho's answer as db-jp-01 against.
	demoKH, err := os.ReadFile(filepath.Join(e.demoDir, "known_hosts"))
	if err != nil {
		return err
	}
	var caLine string
	for _, l := range strings.Split(string(demoKH), "\n") {
		if strings.HasPrefix(l, "@cert-authority ") {
			caLine = l
		}
	}
	if caLine == "" {
		return fmt.Errorf("%s has no @cert-authority line for ProxyJump", filepath.Join(e.demoDir, "known_hosts"))
	}
	lines := e.state.BastionHostKey + "\n" +
		fmt.Sprintf("[%s]:%s %s\n", th, tp, targetKey) +
		fmt.Sprintf("[%s]:%s %s\n", jh, jp, jumpKey) + caLine + "\n"
	if err := os.WriteFile(kh, []byte(lines), 0o644); err != nil {
		return err
	}
	e.configs = map[string]string{}
	for _, c := range append([]string{""}, variants...) {
		extra := ""
		name := "ssh_config"
		if kex, ok := strings.CutPrefix(c, "kex:"); ok {
			extra = "    KexAlgorithms " + kex + "\n"
			name = "ssh_config.kex-" + kex
		} else if c != "" {
			extra = "    Ciphers " + c + "\n"
			name = "ssh_config." + strings.SplitN(c, "@", 2)[0]
		}
		path := filepath.Join(e.dir, name)
		body := fmt.Sprintf(clientConfig, kh, e.state.Keys[technician], extra,
			jh, jp, e.login, th, tp, cert, bh, bp)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			return err
		}
		e.configs[c] = path
	}
	return nil
}

// recordingsDir is where sekisho writes the demo's recordings.
func (e *env) recordingsDir() string { return filepath.Join(e.demoDir, "recordings") }

// sekishoCPU returns the CPU time (user+system) the sekisho process has
// used so far: the demo runs the bastion in its own process (Vault and the
// sshd targets are separate processes).
func (e *env) sekishoCPU() (time.Duration, error) { return procCPU(e.state.PID) }

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// sshBanner reports whether an SSH server answers at addr.
func sshBanner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

// poll calls cond every 20 ms until it holds, fails, ctx ends or timeout
// passes.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
