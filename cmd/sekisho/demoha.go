package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// The cluster demo (sekisho demo --ha) runs what the single demo does,
// Vault, targets, technicians and rules alike, but as several equal nodes:
// PostgreSQL holds their state, MinIO every zone's recordings, and HAProxy
// balances SSH (with the PROXY protocol v2) and the web console over them.
// Each node is a `sekisho serve` of its own, so that one can be killed.

// demoCluster is what a cluster demo needs besides the single demo's.
type demoCluster struct {
	nodes   int
	minio   string // MinIO binary
	haproxy string // HAProxy binary
}

// demoNode is one node of a cluster demo, as demo.json gives it.
type demoNode struct {
	Name    string `json:"name"`
	SSH     string `json:"ssh"` // its own listener, behind HAProxy
	Web     string `json:"web"`
	Peer    string `json:"peer"` // its node-to-node listener (cluster.listen)
	Config  string `json:"config"`
	PidFile string `json:"pid_file"`
	Log     string `json:"log"`
	PID     int    `json:"pid"`
}

// Where a cluster demo's recordings go: a bucket per residency zone.
var demoBuckets = []struct{ residency, bucket string }{{"JP", "sekisho-jp"}, {"SG", "sekisho-sg"}}

// newDemoCluster checks, before anything starts, that the programs a
// cluster demo runs are there.
func newDemoCluster(nodes int, minioFlag, haproxy string) (*demoCluster, error) {
	if nodes < 2 || nodes > 9 {
		return nil, usageError{msg: "demo --nodes: from 2 to 9"}
	}
	minioBin, err := findBuilt("minio", "MinIO", "make demo-ha", minioFlag)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(haproxy); err != nil {
		return nil, fmt.Errorf("HAProxy not found at %s: install it (Debian: apt-get install haproxy, or tools/install-deps.sh ha) or pass --haproxy", haproxy)
	}
	if _, err := pgtest.Bin(); err != nil {
		return nil, err
	}
	return &demoCluster{nodes: nodes, minio: minioBin, haproxy: haproxy}, nil
}

func (d *demo) runCluster(ctx context.Context, listen string, cl *demoCluster) error {
	b, err := d.prepare(ctx)
	if err != nil {
		return err
	}
	if listen, err = pickPort(listen); err != nil {
		return err
	}
	if d.web, err = pickPort(d.web); err != nil {
		return err
	}
	// The nodes are one bastion to clients and to auditors: one host key,
	// one recording key, made here before any node could make its own.
	for _, k := range []string{"host_key", "recording_key"} {
		if _, err := ensureKey(d.path("keys", k), "sekisho demo "+k); err != nil {
			return err
		}
	}

	// A demo killed with SIGKILL took its children along, but not
	// PostgreSQL, which pg_ctl starts as a daemon: postgres.dir says
	// where the last one is.
	pgMark := d.path("postgres.dir")
	if b, err := os.ReadFile(pgMark); err == nil {
		if last := strings.TrimSpace(string(b)); last != "" {
			if err := pgtest.StopLeftover(ctx, last); err != nil {
				fmt.Fprintf(os.Stderr, "sekisho demo: the last run's PostgreSQL in %s: %v\n", last, err)
			}
		}
	}
	pg, err := pgtest.Start(ctx)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	if err := os.WriteFile(pgMark, []byte(pg.Dir+"\n"), 0o600); err != nil {
		pg.Stop()
		return err
	}
	d.onStop(func() {
		if err := pg.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "sekisho demo: stop PostgreSQL:", err)
		}
	})
	dsn, err := pg.CreateDatabase(ctx, "sekisho")
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	minioAddr, err := d.startMinIO(ctx, cl.minio)
	if err != nil {
		return err
	}
	var stores []demoStore
	for _, z := range demoBuckets {
		stores = append(stores, demoStore{Name: strings.ToLower(z.residency) + "-minio", Residency: z.residency, Endpoint: minioAddr, Bucket: z.bucket})
	}

	nodes := make([]demoNode, cl.nodes)
	for i := range nodes {
		n := &nodes[i]
		n.Name = fmt.Sprintf("node-%d", i+1)
		if n.SSH, err = pickPort("127.0.0.1:0"); err != nil {
			return err
		}
		if n.Web, err = pickPort("127.0.0.1:0"); err != nil {
			return err
		}
		if n.Peer, err = pickPort("127.0.0.1:0"); err != nil {
			return err
		}
		if err := os.MkdirAll(d.path(n.Name), 0o700); err != nil {
			return err
		}
		n.Config = d.path(n.Name, "sekisho.yaml")
		n.Log = d.path(n.Name, "sekisho.log")
		err := writeDemoConfig(n.Config, demoConfig{Listen: n.SSH, Web: n.Web, Vault: b.vaultAddr, Keys: b.keys, Targets: b.targets,
			Node: n.Name, Peer: n.Peer, Database: dsn, WebURL: "http://" + d.web, Shared: "../", ProxyTrusted: "127.0.0.1/32", Stores: stores})
		if err != nil {
			return err
		}
	}
	cfg, err := node.LoadConfig(nodes[0].Config)
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	if err := d.startTargets(ctx, cfg, b); err != nil {
		return err
	}
	procs, err := d.startNodes(ctx, nodes)
	if err != nil {
		return err
	}
	// As the single demo does, every start enrolls the technicians anew
	// under this run's Vault; the nodes read the secrets from PostgreSQL.
	brk, closeStore, err := demoBroker(ctx, cfg)
	if err != nil {
		return err
	}
	for _, t := range demoTechnicians {
		if _, err := brk.EnrollTOTP(ctx, t.name); err != nil {
			closeStore()
			return fmt.Errorf("enroll the demo's second factor: %w", err)
		}
	}
	closeStore()
	if err := d.startHAProxy(ctx, cl.haproxy, listen, d.web, nodes); err != nil {
		return err
	}
	hostKeyLine, err := demoKnownHosts(ctx, cfg, listen, d)
	if err != nil {
		return err
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	st := demoState{Bastion: listen, Web: cfg.Web.URL, BastionHostKey: hostKeyLine, Vault: b.vaultAddr, VaultTokenFile: b.tokenFile,
		Config: nodes[0].Config, Targets: b.targets, Keys: map[string]string{}, PID: os.Getpid(), Nodes: nodes, Postgres: dsn, PostgresDir: pg.Dir, MinIO: minioAddr}
	for _, t := range demoTechnicians {
		st.Keys[t.name] = d.path("keys", t.name)
	}
	sb, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(d.path("demo.json"), sb); err != nil {
		return err
	}
	printClusterReady(os.Stdout, st, d.dir)

	ended := make(chan int, len(procs))
	for i, p := range procs {
		go func() { <-p.exited; ended <- i }()
	}
	for {
		select {
		case <-hup:
			// Each node reloads its own config, as a SIGHUP to it would.
			for _, p := range procs {
				if p.alive() {
					p.cmd.Process.Signal(syscall.SIGHUP)
				}
			}
		case i := <-ended:
			fmt.Printf("sekisho demo: %s (pid %d) ended (%s); HAProxy sends new connections to the other nodes\n",
				nodes[i].Name, nodes[i].PID, procs[i].cmd.ProcessState)
		case <-ctx.Done():
			fmt.Println("\nsekisho demo: stopping")
			return nil
		}
	}
}

// startNodes starts a `sekisho serve` per node and waits until each has
// written its pid file, which it does once it listens.
func (d *demo) startNodes(ctx context.Context, nodes []demoNode) ([]*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	procs := make([]*proc, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		cfg, err := node.LoadConfig(n.Config)
		if err != nil {
			return nil, fmt.Errorf("demo config: %w", err)
		}
		n.PidFile = cfg.PidFile()
		os.Remove(n.PidFile) // an earlier run's
		if procs[i], err = d.start(exe, n.Log, "serve", "--config", n.Config); err != nil {
			return nil, err
		}
		n.PID = procs[i].cmd.Process.Pid
	}
	for i, n := range nodes {
		p := procs[i]
		err := waitFor(ctx, 60*time.Second, n.Name+" to listen (see "+n.Log+")", func() bool {
			b, err := os.ReadFile(n.PidFile)
			return !p.alive() || (err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(n.PID))
		})
		if err == nil && !p.alive() {
			err = fmt.Errorf("%s exited at start; the end of %s:\n%s", n.Name, n.Log, logTail(n.Log, 10))
		}
		if err != nil {
			return nil, err
		}
	}
	return procs, nil
}

// startMinIO starts MinIO on a fresh data directory (the state starts
// afresh too), with a new secret key each run, and makes the buckets.
func (d *demo) startMinIO(ctx context.Context, bin string) (string, error) {
	dir := d.path("minio")
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return "", err
	}
	secret := make([]byte, 20)
	rand.Read(secret)
	const access = "sekisho-demo"
	if err := os.WriteFile(filepath.Join(dir, "access-key"), []byte(access+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "secret-key"), []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return "", err
	}
	addr, err := pickPort("127.0.0.1:0")
	if err != nil {
		return "", err
	}
	console, err := pickPort("127.0.0.1:0")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+access, "MINIO_ROOT_PASSWORD="+hex.EncodeToString(secret), "MINIO_BROWSER=off")
	logPath := filepath.Join(dir, "minio.log")
	p, err := d.startCmd(cmd, logPath)
	if err != nil {
		return "", err
	}
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, hex.EncodeToString(secret), "")})
	if err != nil {
		return "", err
	}
	err = waitFor(ctx, 60*time.Second, "MinIO to answer (see "+logPath+")", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := client.ListBuckets(cctx)
		return !p.alive() || err == nil
	})
	if err == nil && !p.alive() {
		err = fmt.Errorf("MinIO exited at start; see %s", logPath)
	}
	if err != nil {
		return "", err
	}
	for _, z := range demoBuckets {
		if err := client.MakeBucket(ctx, z.bucket, minio.MakeBucketOptions{}); err != nil {
			return "", fmt.Errorf("MinIO: make bucket %s: %w", z.bucket, err)
		}
	}
	return addr, nil
}

// The balancer: SSH with the PROXY protocol v2, the console as plain
// TCP. Both check each node's /readyz on its console port (Vault, state
// store and recording directory writable, node not standing back): a node
// is out after two failed checks a second apart; before that, a
// connection refused by a dead node is redispatched to another at once.
const haproxyConfigTmpl = `# HAProxy for the sekisho cluster demo, written by ` + "`sekisho demo --ha`" + `.
global
	log stdout format raw local0 info

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 2s
	timeout client 1h
	timeout server 1h
	retries 2
	option redispatch 1
	default-server check inter 1s fall 2 rise 1
	option httpchk GET /readyz
	http-check expect status 200

frontend ssh
	bind {{.Listen}}
	default_backend sekisho-ssh

backend sekisho-ssh
	balance roundrobin
{{- range .Nodes}}
	server {{.Name}} {{.SSH}} send-proxy-v2 check port {{port .Web}}
{{- end}}

frontend console
	bind {{.Web}}
	default_backend sekisho-web

backend sekisho-web
	balance roundrobin
{{- range .Nodes}}
	server {{.Name}} {{.Web}}
{{- end}}
`

func (d *demo) startHAProxy(ctx context.Context, bin, listen, web string, nodes []demoNode) error {
	path := d.path("haproxy.cfg")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = template.Must(template.New("haproxy").Funcs(template.FuncMap{"port": portOf}).Parse(haproxyConfigTmpl)).Execute(f, map[string]any{"Listen": listen, "Web": web, "Nodes": nodes})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, bin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("haproxy -c -f %s: %v\n%s", path, err, out)
	}
	logPath := d.path("haproxy.log")
	p, err := d.start(bin, logPath, "-db", "-f", path)
	if err != nil {
		return err
	}
	err = waitFor(ctx, 15*time.Second, "HAProxy to listen (see "+logPath+")", func() bool {
		return !p.alive() || sshBanner(listen)
	})
	if err == nil && !p.alive() {
		err = fmt.Errorf("HAProxy exited at start; see %s", logPath)
	}
	return err
}

func printClusterReady(w io.Writer, st demoState, dir string) {
	rel := dir
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, dir); err == nil && !strings.HasPrefix(r, "..") {
			rel = r
		}
	}
	host, port, _ := net.SplitHostPort(st.Bastion)
	fmt.Fprintf(w, "sekisho demo ready: %d nodes behind HAProxy\n", len(st.Nodes))
	fmt.Fprintf(w, "  bastion  %s (HAProxy, PROXY protocol v2 to the nodes)\n", st.Bastion)
	fmt.Fprintf(w, "  console  %s (HAProxy, to every node's console)\n", st.Web)
	for i, n := range st.Nodes {
		label := ""
		if i == 0 {
			label = "nodes"
		}
		fmt.Fprintf(w, "  %-8s %s  ssh %s  web %s  pid %d  %s\n", label, n.Name, n.SSH, n.Web, n.PID, relTo(rel, dir, n.Config))
	}
	fmt.Fprintf(w, "  state    PostgreSQL %s (data in %s, removed when the demo stops)\n", st.Postgres, st.PostgresDir)
	fmt.Fprintf(w, "  records  MinIO %s, buckets", st.MinIO)
	for _, z := range demoBuckets {
		fmt.Fprintf(w, " %s (%s)", z.bucket, z.residency)
	}
	fmt.Fprintf(w, "\n  vault    %s (dev, in memory)\n", st.Vault)
	fmt.Fprintf(w, "  targets  db-jp-01 %s (residency JP), web-sg-01 %s (residency SG)\n", st.Targets[0].Address, st.Targets[1].Address)
	n2 := st.Nodes[1].Name
	fmt.Fprintf(w, `
Try (the bastion's host key is in %[1]s/known_hosts; add -o UserKnownHostsFile=%[1]s/known_hosts to skip the prompt):
  ssh -p %[2]s -i %[1]s/keys/aiko aiko+db-jp-01@%[3]s              # a shell, on whichever node HAProxy picks
  ssh -p %[2]s -i %[1]s/keys/aiko aiko+db-jp-01@%[3]s 'uname -a'   # a command

Which node served each session (the NODE column):
  bin/sekisho sessions --config %[1]s/node-1/sekisho.yaml

Kill a node as a crash would; the next ssh lands on a survivor at once:
  kill -9 $(cat %[1]s/%[4]s/sekisho.pid)

Replay or verify any session from any node (recordings are in MinIO):
  bin/sekisho replay --config %[1]s/%[5]s/sekisho.yaml SESSION-ID
  bin/sekisho verify --config %[1]s/%[5]s/sekisho.yaml SESSION-ID

The web console (%[6]s): a sign-in link from any node works on all:
  ssh -p %[2]s -i %[1]s/keys/kenji kenji@%[3]s login
Verification codes (li's, and kenji's for his powers):
  bin/sekisho demo code --dir %[1]s li

Logs: %[1]s/node-N/sekisho.log, %[1]s/haproxy.log (which node took each connection).
Ctrl-C stops everything: HAProxy, the nodes, the targets, MinIO, PostgreSQL and Vault.
`, rel, port, host, n2, st.Nodes[len(st.Nodes)-1].Name, st.Web)
}

// relTo shows path, under dir, as under rel.
func relTo(rel, dir, path string) string {
	if r, err := filepath.Rel(dir, path); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.Join(rel, r)
	}
	return path
}

// logTail returns the last n lines of the log at path, for an error that
// says why a process the demo started exited.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// portOf is the port of a host:port address.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
