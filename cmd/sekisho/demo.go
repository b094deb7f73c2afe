package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"

	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
)

// The demo runs everything on loopback: a dev Vault configured by sekisho
// itself, two OpenSSH sshd targets that trust the Vault user CA, and the
// bastion. Its files live under one directory (default .demo).

type demoTarget struct {
	Name      string   `json:"name"`
	Residency string   `json:"residency"`
	Zone      string   `json:"zone"`
	Data      []string `json:"data"`
	Address   string   `json:"address"`
	HostKey   string   `json:"host_key"`    // public key line
	Config    string   `json:"sshd_config"` // sshd_config path
	Log       string   `json:"sshd_log"`    // sshd log path
	Login     string   `json:"login"`
}

// demoState is written to <dir>/demo.json once the demo is ready, for
// scripts and tests that drive it.
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
	// A cluster demo's (--ha): its nodes behind the balancer at Bastion
	// and Web, and what they share.
	Nodes       []demoNode `json:"nodes,omitempty"`
	Postgres    string     `json:"postgres,omitempty"`     // database.url
	PostgresDir string     `json:"postgres_dir,omitempty"` // its data, log and socket
	MinIO       string     `json:"minio,omitempty"`        // host:port
}

// demoTechnicians: aiko works for a JP affiliate, li (a DBA) and wei for
// a CN one; kenji is the operator's own admin and approver; sara reviews
// sessions, those to SG targets only.
var demoTechnicians = []struct{ name, affiliate string }{{"aiko", "ops-jp"}, {"li", "ops-cn"}, {"wei", "ops-cn"}, {"kenji", "operator-jp"}, {"sara", "operator-sg"}}

func cmdDemo(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "code" {
		return cmdDemoCode(ctx, args[1:])
	}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the demo's keys, config, database and recordings (default .demo, with --ha .demo-ha)")
	listen := fs.String("listen", "127.0.0.1:2222", "bastion address (with --ha: HAProxy's; port 0 picks a free one)")
	ha := fs.Bool("ha", false, "several nodes: PostgreSQL, MinIO, HAProxy and --nodes sekisho nodes behind it")
	nodes := fs.Int("nodes", 3, "with --ha: how many sekisho nodes")
	minioBin := fs.String("minio", "", "with --ha: MinIO binary (default: minio next to this binary, then bin/minio)")
	haproxy := fs.String("haproxy", "/usr/sbin/haproxy", "with --ha: HAProxy binary")
	devvault := fs.String("devvault", "", "dev Vault binary (default: devvault next to this binary, then bin/devvault)")
	sshd := fs.String("sshd", "/usr/sbin/sshd", "OpenSSH sshd binary for the targets")
	metrics := fs.String("metrics", "", "serve Prometheus metrics at this host:port (metrics.listen; default: none)")
	webListen := fs.String("web", "127.0.0.1:8080", "serve the web console at this host:port (web.listen, with --ha HAProxy's; port 0 picks a free one)")
	sso := fs.Bool("sso", false, "single sign-on for the console through a real OpenID provider on loopback (bin/oidcprovider)")
	ssoBin := fs.String("oidcprovider", "", "with --sso: the OpenID provider binary (default: oidcprovider next to this binary, then bin/oidcprovider)")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *dir == "" {
		*dir = ".demo"
		if *ha {
			*dir = ".demo-ha"
		}
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	vaultBin, err := findDevVault(*devvault)
	if err != nil {
		return err
	}
	if _, err := os.Stat(*sshd); err != nil {
		return fmt.Errorf("OpenSSH server not found at %s: install it (Debian: apt-get install openssh-server) or pass --sshd", *sshd)
	}
	var providerBin string
	if *sso {
		if *ha {
			return usageError{msg: "demo: --sso is for the single node demo"}
		}
		if providerBin, err = findBuilt("oidcprovider", "OpenID provider", "make build", *ssoBin); err != nil {
			return err
		}
	}
	var cl *demoCluster
	if *ha && *metrics != "" {
		return usageError{msg: "demo: --metrics is for the single node; with --ha each node is its own sekisho serve"}
	}
	if *ha {
		if cl, err = newDemoCluster(*nodes, *minioBin, *haproxy); err != nil {
			return err
		}
	}
	lock, err := lockDemoDir(abs)
	if err != nil {
		return err
	}
	defer lock.Close()
	d := &demo{dir: abs, sshd: *sshd, vaultBin: vaultBin, metrics: *metrics, web: *webListen, providerBin: providerBin, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	defer d.stopAll()
	if cl != nil {
		return d.runCluster(ctx, *listen, cl)
	}
	return d.run(ctx, *listen)
}

// lockDemoDir takes dir for this demo, creating it if need be, before
// anything in it is written: two demos on one directory would overwrite
// each other's Vault address, config and demo.json. The lock is a flock
// on dir/demo.lock, which the kernel drops when the process ends, however
// it ends: a demo killed with SIGKILL leaves nothing that blocks the next.
// The file holds the holder's pid, for the message to the one refused.
// The lock lasts until the returned file is closed.
func lockDemoDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "demo.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock the demo directory: %w", err)
		}
		holder, stop := "another demo", "stop it (Ctrl-C where it runs)"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("another demo (pid %d)", pid)
				stop = fmt.Sprintf("stop it (Ctrl-C where it runs, or kill %d)", pid)
			}
		}
		return nil, fmt.Errorf("%s is in use by %s: %s, or start this one with --dir on another directory", dir, holder, stop)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func findDevVault(flagPath string) (string, error) {
	return findBuilt("devvault", "dev Vault", "make demo", flagPath)
}

// findBuilt finds a binary the Makefile builds into bin/: flagPath if
// given, else name next to this binary, else bin/name.
func findBuilt(name, what, target, flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	p := filepath.Join("bin", name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	tried = append(tried, p)
	return "", fmt.Errorf("%s binary not found (tried %s): run `%s`, which builds it, or pass --%s", what, strings.Join(tried, ", "), target, name)
}

type demo struct {
	dir      string
	sshd     string
	vaultBin string
	metrics  string // metrics.listen, empty for none
	web      string // web.listen
	// providerBin is the OpenID provider of --sso; empty without.
	providerBin string
	log         *slog.Logger
	// stops end what the demo started, last first: HAProxy before the
	// nodes, the nodes before PostgreSQL and Vault.
	stops []func()
}

func (d *demo) path(p ...string) string { return filepath.Join(append([]string{d.dir}, p...)...) }

// demoBase is what every demo has before its bastion starts: the dev
// Vault, the technicians' keys, and the targets with their ports and host
// keys (started by startTargets, once Vault has the CA they trust).
type demoBase struct {
	vaultAddr, tokenFile string
	keys                 map[string]string // technician: public key line
	targets              []demoTarget
}

func (d *demo) prepare(ctx context.Context) (*demoBase, error) {
	for _, sub := range []string{"keys", "targets", "recordings"} {
		if err := os.MkdirAll(d.path(sub), 0o700); err != nil {
			return nil, err
		}
	}
	// Vault is in memory: its AppRole credentials and CA are new each run.
	os.RemoveAll(d.path("vault"))
	if err := os.MkdirAll(d.path("vault"), 0o700); err != nil {
		return nil, err
	}

	vaultAddr, tokenFile, err := d.startVault(ctx)
	if err != nil {
		return nil, err
	}

	keys := map[string]string{}
	for _, t := range demoTechnicians {
		pub, err := ensureKey(d.path("keys", t.name), t.name+"@sekisho-demo")
		if err != nil {
			return nil, err
		}
		keys[t.name] = pub
	}

	login := "root"
	if u, err := user.Current(); err == nil {
		login = u.Username
	}
	targets := []demoTarget{
		{Name: "db-jp-01", Residency: "JP", Zone: "Asia/Tokyo", Data: []string{"pii", "messages"}, Login: login},
		{Name: "web-sg-01", Residency: "SG", Zone: "Asia/Singapore", Login: login},
	}
	for i := range targets {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		targets[i].Address = fmt.Sprintf("127.0.0.1:%d", port)
		hk, err := ensureKey(d.path("targets", targets[i].Name, "ssh_host_ed25519_key"), targets[i].Name)
		if err != nil {
			return nil, err
		}
		targets[i].HostKey = hk
	}
	return &demoBase{vaultAddr: vaultAddr, tokenFile: tokenFile, keys: keys, targets: targets}, nil
}

// startTargets configures Vault for cfg (the CA, the role, sekisho's
// AppRole login) and starts the targets, which trust that CA.
func (d *demo) startTargets(ctx context.Context, cfg *node.Config, b *demoBase) error {
	token, err := os.ReadFile(b.tokenFile)
	if err != nil {
		return err
	}
	caFile := d.path("vault", "user_ca.pub")
	if _, err := vaultSetup(ctx, cfg, strings.TrimSpace(string(token)), caFile); err != nil {
		return fmt.Errorf("vault setup: %w", err)
	}
	for i := range b.targets {
		if err := d.startTarget(ctx, &b.targets[i], caFile); err != nil {
			return err
		}
	}
	return nil
}

// pickPort returns addr with a free port in place of port 0.
func pickPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr, err
	}
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func (d *demo) run(ctx context.Context, listen string) error {
	b, err := d.prepare(ctx)
	if err != nil {
		return err
	}
	vaultAddr, tokenFile, keys, targets := b.vaultAddr, b.tokenFile, b.keys, b.targets
	if d.web, err = pickPort(d.web); err != nil {
		return err
	}
	var sso *demoSSO
	if d.providerBin != "" {
		if sso, err = d.startSSO(ctx, d.providerBin, "http://"+d.web); err != nil {
			return err
		}
	}
	cfgPath := d.path("sekisho.yaml")
	if err := writeDemoConfig(cfgPath, demoConfig{Listen: listen, Metrics: d.metrics, Web: d.web, Vault: vaultAddr, Keys: keys, Targets: targets, SSO: sso}); err != nil {
		return err
	}
	cfg, err := node.LoadConfig(cfgPath)
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	if err := d.startTargets(ctx, cfg, b); err != nil {
		return err
	}

	logFile, err := os.OpenFile(d.path("sekisho.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := newLogger(cfg, logFile)
	n, err := node.Start(ctx, cfg, logger, nil)
	if err != nil {
		return err
	}
	// The secrets a previous run stored were sealed by its Vault, whose
	// transit key died with it: none opens under this one. Every start
	// enrolls the technicians anew (demo code prints the new codes).
	for _, t := range demoTechnicians {
		if _, err := n.Broker().EnrollTOTP(ctx, t.name); err != nil {
			n.Stop()
			return fmt.Errorf("enroll the demo's second factor: %w", err)
		}
	}
	hostKeyLine, err := demoKnownHosts(ctx, cfg, n.Addr().String(), d)
	if err != nil {
		n.Stop()
		return err
	}
	// Reloads on SIGHUP; ask for the signal before demo.json tells anyone
	// the demo is up, so that an early SIGHUP cannot end it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	st := demoState{Bastion: n.Addr().String(), Web: cfg.Web.URL, BastionHostKey: hostKeyLine, Vault: vaultAddr, VaultTokenFile: tokenFile,
		Config: cfgPath, Targets: targets, Keys: map[string]string{}, PID: os.Getpid()}
	for _, t := range demoTechnicians {
		st.Keys[t.name] = d.path("keys", t.name)
	}
	sb, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(d.path("demo.json"), sb); err != nil {
		n.Stop()
		return err
	}
	printDemoReady(os.Stdout, st, d.dir)
	if sso != nil {
		printDemoSSO(os.Stdout, sso, st.Web)
	}

	for {
		select {
		case <-hup:
			n.Reload(cfgPath)
		case <-ctx.Done():
			fmt.Println("\nsekisho demo: stopping")
			return n.Stop()
		}
	}
}

// cmdDemoCode prints the current TOTP code of a demo technician, so that
// the demo can be tried without an authenticator app. It works only on a
// demo directory.
func cmdDemoCode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo code", flag.ContinueOnError)
	dir := fs.String("dir", ".demo", "the demo's directory")
	if err := fs.Parse(reorder(args)); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 1 {
		return usageError{msg: "demo code: give a demo technician (aiko or li)"}
	}
	sb, err := os.ReadFile(filepath.Join(*dir, "demo.json"))
	if err != nil {
		return fmt.Errorf("%s is not a running demo's directory (no demo.json): start `make demo` first", *dir)
	}
	// The config demo.json names: a cluster demo's is its first node's.
	cfgPath := filepath.Join(*dir, "sekisho.yaml")
	var st demoState
	if json.Unmarshal(sb, &st) == nil && st.Config != "" {
		cfgPath = st.Config
	}
	cfg, err := node.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	b, closeStore, err := demoBroker(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	now := time.Now()
	code, err := b.TOTPCode(ctx, fs.Arg(0), now)
	if errors.Is(err, broker.ErrNotFound) {
		return fmt.Errorf("no second factor for %q in the demo: %w", fs.Arg(0), err)
	}
	if err != nil {
		return err
	}
	// The code alone on stdout, for a script (SSH_ASKPASS); the note to
	// people on stderr.
	fmt.Println(code)
	fmt.Fprintf(os.Stderr, "(valid for %ds; each code works once)\n", 30-now.Unix()%30)
	return nil
}

// demoBroker is a broker on cfg's state store and Vault, enough to read
// and make the technicians' second factors: the demo's secrets are sealed
// by its Vault, as a server's are.
func demoBroker(ctx context.Context, cfg *node.Config) (*broker.Broker, func(), error) {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	issuer, err := broker.NewIssuer(cfg.VaultConfig())
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	techs, _, _ := cfg.Domain()
	return broker.New(broker.Config{Technicians: techs, Issuer: issuer, Store: store, Logger: discardLogger()}), func() { store.Close() }, nil
}

// proc is a child process of the demo; exited is closed once it has been
// waited for.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (d *demo) start(name string, logPath string, args ...string) (*proc, error) {
	return d.startCmd(exec.Command(name, args...), logPath)
}

// startCmd starts cmd with its output in logPath; stopAll ends it.
func (d *demo) startCmd(cmd *exec.Cmd, logPath string) (*proc, error) {
	name := cmd.Path
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Children die with the demo, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	d.onStop(p.stop)
	return p, nil
}

// onStop has stopAll call stop, before whatever was started earlier.
func (d *demo) onStop(stop func()) { d.stops = append(d.stops, stop) }

// alive reports whether p is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends p with SIGTERM, or SIGKILL after 5 s; one already gone
// (a node killed with kill -9) is only waited for.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func (d *demo) stopAll() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}

func (d *demo) startVault(ctx context.Context) (addr, tokenFile string, err error) {
	tokenFile = d.path("vault", "root-token")
	addrFile := d.path("vault", "addr")
	p, err := d.start(d.vaultBin, d.path("vault", "devvault.log"),
		"-listen", "127.0.0.1:0", "-token-file", tokenFile, "-addr-file", addrFile)
	if err != nil {
		return "", "", err
	}
	err = waitFor(ctx, 60*time.Second, "dev Vault to start (see "+d.path("vault", "devvault.log")+")", func() bool {
		if !p.alive() {
			return true
		}
		b, err := os.ReadFile(addrFile)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			addr = strings.TrimSpace(string(b))
			return true
		}
		return false
	})
	if err == nil && addr == "" {
		err = fmt.Errorf("dev Vault exited at start; see %s", d.path("vault", "devvault.log"))
	}
	return addr, tokenFile, err
}

const sshdConfigTmpl = `# sshd for the sekisho demo target {{.Name}}: certificate logins only.
Port {{.Port}}
ListenAddress 127.0.0.1
HostKey {{.HostKey}}
PidFile {{.PidFile}}
TrustedUserCAKeys {{.CA}}
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowAgentForwarding no
# Local forwards (ssh -L) for certificates that permit them; sekisho asks
# Vault for permit-port-forwarding only when a rule allows forwarding.
AllowTcpForwarding local
X11Forwarding no
PermitTunnel no
# The targets accept LD_* on purpose: sekisho must not pass it on.
AcceptEnv LANG LC_* TZ LD_*
LogLevel VERBOSE
Subsystem sftp internal-sftp
`

func (d *demo) startTarget(ctx context.Context, t *demoTarget, caFile string) error {
	if os.Geteuid() == 0 {
		// sshd running as root wants its privilege separation directory.
		os.MkdirAll("/run/sshd", 0o755)
	}
	_, port, _ := net.SplitHostPort(t.Address)
	t.Config = d.path("targets", t.Name, "sshd_config")
	t.Log = d.path("targets", t.Name, "sshd.log")
	f, err := os.OpenFile(t.Config, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = template.Must(template.New("sshd").Parse(sshdConfigTmpl)).Execute(f, map[string]string{
		"Name": t.Name, "Port": port, "HostKey": d.path("targets", t.Name, "ssh_host_ed25519_key"),
		"PidFile": d.path("targets", t.Name, "sshd.pid"), "CA": caFile,
	})
	f.Close()
	if err != nil {
		return err
	}
	p, err := d.start(d.sshd, d.path("targets", t.Name, "sshd.out"), "-D", "-e", "-f", t.Config, "-E", t.Log)
	if err != nil {
		return err
	}
	err = waitFor(ctx, 15*time.Second, "sshd for "+t.Name+" to listen (see "+t.Log+")", func() bool {
		return !p.alive() || sshBanner(t.Address)
	})
	if err == nil && !p.alive() {
		err = fmt.Errorf("sshd for %s exited at start; see %s", t.Name, t.Log)
	}
	return err
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

// waitFor polls cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// freePort returns a loopback port free now, drawn below the kernel's
// ephemeral range (32768 and up on Linux), from which outgoing
// connections take theirs: a port from ":0" could be taken by one before
// the server meant for it binds it.
func freePort() (int, error) {
	// 20000-25999: below the kernel's ephemeral ports (which outgoing
	// connections take), and apart from the end-to-end tests' own
	// 26000-31999, which pick ports the same way while demos start.
	for range 100 {
		p := 20000 + mrand.IntN(6000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("no free port in 20000-25999 after 100 tries")
}

// ensureKey returns the public key line of the ed25519 key at path,
// generating the key (mode 0600) and its .pub if missing.
func ensureKey(path, comment string) (string, error) {
	if b, err := os.ReadFile(path + ".pub"); err == nil {
		if _, err := os.Stat(path); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	if err := os.WriteFile(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		return "", err
	}
	return line, nil
}

// demoKnownHosts writes the demo's known_hosts (the bastion's host key at
// addr, and the host CA for the targets' names, which ssh -J checks) and
// an ssh_config that reaches every target with ProxyJump through the
// bastion as aiko, with strict host key checking. It returns the
// bastion's line.
func demoKnownHosts(ctx context.Context, cfg *node.Config, addr string, d *demo) (string, error) {
	b, err := os.ReadFile(cfg.Path(cfg.HostKey))
	if err != nil {
		return "", err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	line := fmt.Sprintf("[%s]:%s %s", host, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	caLine, err := knownHostsLine(ctx, cfg, nil)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(d.path("known_hosts"), []byte(line+"\n"+caLine+"\n"), 0o644); err != nil {
		return "", err
	}
	dir, err := filepath.Abs(d.dir)
	if err != nil {
		return "", err
	}
	var targets []string
	for _, t := range cfg.Targets {
		targets = append(targets, t.Name)
	}
	conf := fmt.Sprintf(`# Written by sekisho demo. With it, plain OpenSSH reaches the targets by
# their own names through sekisho (ProxyJump), host keys checked:
#   ssh -F %[1]s/ssh_config db-jp-01
#   scp -F %[1]s/ssh_config README.md db-jp-01:/tmp/
Host sekisho-demo
  HostName %[2]s
  Port %[3]s
Host %[4]s
  ProxyJump sekisho-demo
Host *
  User aiko
  IdentityFile %[1]s/keys/aiko
  IdentitiesOnly yes
  UserKnownHostsFile %[1]s/known_hosts
  StrictHostKeyChecking yes
`, dir, host, port, strings.Join(targets, " "))
	return line, os.WriteFile(d.path("ssh_config"), []byte(conf), 0o644)
}

const demoConfigTmpl = `# sekisho demo configuration, written by ` + "`sekisho demo`" + `; paths are relative to this file.
listen: {{.Listen}}
{{- if .Database}}
node_name: {{.Node}}
# Every node has the same host key (clients see one bastion behind the
# balancer) and the same recording key (any node verifies any recording).
host_key: ../keys/host_key
recording_key: ../keys/recording_key
# The state every node shares.
database:
  url: {{.Database}}
# Other nodes reach this one here to watch a live session it serves.
cluster:
  listen: {{.Peer}}
{{- else}}
host_key: host_key
state: sekisho.db
{{- end}}
recordings: recordings
log_format: json
log_level: info
{{- if .Metrics}}
metrics:
  listen: {{.Metrics}}
{{- end}}

# The web console: sign in with ssh -p PORT kenji@BASTION login.
web:
  listen: {{.Web}}
{{- if .WebURL}}
  url: {{.WebURL}}
{{- end}}
{{- with .SSO}}
  # Single sign-on (demo --sso): the provider's groups map to console
  # roles; a person gets those sekisho gives the technician too.
  oidc:
    name: Demo IdP
    issuer: {{.Issuer}}
    client_id: sekisho
    client_secret_file: {{.SecretFile}}
    technician_claim: sekisho_technician
    roles:
      admin: [sec-admins]
      approver: [jp-approvers]
      reviewer: [sec-review]
{{- end}}

vault:
  address: {{.Vault}}
  role_id_file: {{.Shared}}vault/role-id
  secret_id_file: {{.Shared}}vault/secret-id
  mount: ssh
  role: sekisho
  cert_ttl: 5m
{{- if .ProxyTrusted}}

# The node sits behind HAProxy, which sends the PROXY protocol v2: a
# client's address comes from its header, and only from this balancer.
proxy_protocol:
  trusted: [{{.ProxyTrusted}}]
{{- end}}
{{- if .Stores}}

# Each zone's recordings go to its bucket in MinIO as they are written:
# the nodes share nothing local, and any node replays and verifies any
# session.
recording_stores:
{{- range .Stores}}
  - name: {{.Name}}
    residency: [{{.Residency}}]
    s3:
      endpoint: {{.Endpoint}}
      bucket: {{.Bucket}}
      access_key_file: ../minio/access-key
      secret_key_file: ../minio/secret-key
      insecure: true
{{- end}}
{{- end}}

# Where connections come from: a source address in no network (and unknown
# to a GeoIP database) counts as another country than any residency.
networks:
  - name: demo-office
    country: JP
    cidrs: [127.0.0.0/8, "::1/128"]

affiliates:
  - name: ops-jp
    country: JP
  - name: ops-cn
    country: CN
  - name: operator-jp
    country: JP
  - name: operator-sg
    country: SG

technicians:
  - name: aiko
    affiliate: ops-jp
    keys:
      - {{index .Keys "aiko"}}
  - name: li
    affiliate: ops-cn
    groups: [dba]
    keys:
      - {{index .Keys "li"}}
  - name: wei
    affiliate: ops-cn
    keys:
      - {{index .Keys "wei"}}
  # The operator's admin: approves access requests (ssh kenji@bastion
  # approve N) and may list and end live sessions.
  - name: kenji
    affiliate: operator-jp
    groups: [approvers, admins]
    keys:
      - {{index .Keys "kenji"}}

  # A security reviewer: replays recordings and reads the cross-border
  # report in the web console, of sessions to SG targets only.
  - name: sara
    affiliate: operator-sg
    groups: [reviewers]
    review_residency: [SG]
    keys:
      - {{index .Keys "sara"}}

# Members of these groups may list and end live sessions, deny any request
# and revoke any grant.
admin_groups: [admins]
# Members of these groups may watch live sessions and replay recordings.
reviewer_groups: [reviewers]

# Webhooks told of every access request and decision (generic JSON or
# Slack-compatible), e.g.:
# notifications:
#   webhooks:
#     - name: security-slack
#       url: https://hooks.slack.com/services/...
#       format: slack

targets:
{{- range .Targets}}
  - name: {{.Name}}
    address: {{.Address}}
    login: {{.Login}}
    residency: {{.Residency}}
    zone: {{.Zone}}
    data: [{{join .Data ", "}}]
    host_keys:
      - {{.HostKey}}
{{- end}}

# An explicit deny beats every allow; otherwise the first matching allow or
# approval decides; nothing matching means deny. A rule's "when" is a CEL
# expression over technician, source, target, now and cross_border (true
# when the technician's affiliate or the source address is in another
# country than the target's residency). Try:
#   sekisho policy test --config .demo/sekisho.yaml --technician li --target db-jp-01 --from 127.0.0.1
#   sekisho policy check --config .demo/sekisho.yaml
rules:
  # JP personal data only from JP affiliates connecting from JP, or with an
  # admin's approval. A DBA from abroad gets a shell once an approver of
  # another affiliate says yes (ssh kenji@bastion approve N), for at most
  # an hour, with a second factor.
  - name: pii-cross-border-dba-needs-approval
    effect: approval
    when: '"pii" in target.data && cross_border && "dba" in technician.groups'
    channels: [shell, exec, sftp, scp]
    require_mfa: true
    max_duration: 1h
    approval:
      approvals: 1
      from: [approvers]
      other_affiliate: true
      pending_for: 15m
      max_grant: 1h
    # Once approved, the session runs only while someone on the data's
    # side watches: an approver of another affiliate than the
    # technician's (kenji) moderates it, over SSH (ssh -t kenji@bastion
    # moderate SESSION-ID) or in the console. When he leaves, the
    # technician's input is held; 30 s later the session ends.
    moderation:
      from: [approvers]
      grace: 30s
    message: personal data may only be reached across borders with an admin's approval
  # Anyone else from abroad: with approval, files only, uploads only (no
  # personal data leaves the country), a second factor, 1 h.
  - name: pii-cross-border-needs-approval
    effect: approval
    when: '"pii" in target.data && cross_border'
    channels: [sftp, scp]
    files: upload_only
    upload_to: [/tmp]
    require_mfa: true
    max_duration: 1h
    approval:
      from: [approvers]
      other_affiliate: true
      max_grant: 1h
    message: personal data may only be reached across borders with an admin's approval
  # In the residency country: everything, and port forwarding only to the
  # named destination.
  - name: pii-in-residency
    effect: allow
    when: '"pii" in target.data && !cross_border'
    channels: [shell, exec, sftp, scp, port_forward]
    forward_to: ["localhost:5432"]
  # Any affiliate may reach the web server. Every session there is
  # cross-border (no affiliate is in SG), and cross-border sessions need a
  # second factor: bin/sekisho demo code TECHNICIAN prints the current code.
  - name: any-affiliate-to-web
    effect: allow
    targets: [web-sg-01]
    require_mfa: true
`

// demoConfig fills demoConfigTmpl. The fields after Targets are those of
// a node among several (sekisho demo --ha).
type demoConfig struct {
	Listen, Metrics, Web, Vault string
	Keys                        map[string]string // technician: public key line
	Targets                     []demoTarget

	Node         string // node_name
	Peer         string // cluster.listen
	Database     string // database.url
	WebURL       string // web.url: the balanced console
	Shared       string // what the nodes share (Vault's credentials) is here, relative to the config
	ProxyTrusted string // proxy_protocol.trusted
	Stores       []demoStore
	SSO          *demoSSO // web.oidc of demo --sso
}

// demoStore is a recording store of the cluster demo: a MinIO bucket.
type demoStore struct{ Name, Residency, Endpoint, Bucket string }

func writeDemoConfig(path string, c demoConfig) error {
	t := template.Must(template.New("cfg").Funcs(template.FuncMap{"join": strings.Join}).Parse(demoConfigTmpl))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = t.Execute(f, c)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func printDemoReady(w io.Writer, st demoState, dir string) {
	rel := dir
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, dir); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
	}
	host, port, _ := net.SplitHostPort(st.Bastion)
	ssh := fmt.Sprintf("ssh -p %s -i %s/keys/aiko", port, rel)
	fmt.Fprintf(w, `sekisho demo ready
  bastion  %s
  vault    %s (dev, in memory)
  config   %s/sekisho.yaml
  targets  db-jp-01 %s (residency JP, data pii, messages)
           web-sg-01 %s (residency SG)

Try (the bastion's host key is in %s/known_hosts; add -o UserKnownHostsFile=%s/known_hosts to skip the prompt):
  %s aiko+db-jp-01@%s                        # interactive shell
  %s aiko+db-jp-01@%s 'uname -a'             # a command
  scp -P %s -i %s/keys/aiko README.md aiko+db-jp-01@%s:/tmp/
  sftp -P %s -i %s/keys/aiko aiko+db-jp-01@%s
  rsync -av -e 'ssh -p %s -i %s/keys/aiko' README.md aiko+web-sg-01@%s:/tmp/
  ssh -F %s/ssh_config db-jp-01 hostname                 # ProxyJump: the target by its own name, host keys checked
  ssh -p %s -i %s/keys/li li+web-sg-01@%s              # allowed, with a second factor (cross-border)
  ssh -p %s -i %s/keys/li li+db-jp-01@%s               # JP personal data from CN: asks a reason, waits for approval

While li waits, approve from a second terminal as the admin kenji:
  ssh -p %s -i %s/keys/kenji kenji@%s requests
  ssh -p %s -i %s/keys/kenji kenji@%s approve 1 --comment ok
li's shell then waits for a moderator on JP's side of the border (rule
pii-cross-border-dba-needs-approval asks for one); kenji moderates it with
the session ID her terminal shows, or with "Join as moderator" in the console:
  ssh -t -p %s -i %s/keys/kenji kenji@%s moderate SESSION-ID     # Ctrl-] to send a line, hold her input or end it

The web console (%s): sign in with a one-time link, then approve requests,
watch live sessions, replay recordings and read the cross-border report:
  ssh -p %s -i %s/keys/kenji kenji@%s login     # admin and approver
  ssh -p %s -i %s/keys/sara sara@%s login       # reviewer of SG sessions only

Sessions to web-sg-01 are cross-border and ask for a verification code, and
so do kenji's and sara's commands and sign-in links (their powers need one):
  bin/sekisho demo code li       (or aiko, wei, kenji, sara) prints the current one

Then:
  bin/sekisho sessions --config %s/sekisho.yaml
  bin/sekisho replay --config %s/sekisho.yaml SESSION-ID

Ctrl-C stops everything.
`, st.Bastion, st.Vault, rel, st.Targets[0].Address, st.Targets[1].Address, rel, rel,
		ssh, host, ssh, host, port, rel, host, port, rel, host, port, rel, host, rel,
		port, rel, host, port, rel, host, port, rel, host, port, rel, host, port, rel, host,
		st.Web, port, rel, host, port, rel, host, rel, rel)
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path, so a reader sees the old content or the new, never a part.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
