package e2e

import (
	"encoding/json"
	"fmt"
	"io"
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

// haDemoState is what the cluster demo writes to demo.json besides the
// single demo's.
type haDemoState struct {
	Bastion     string            `json:"bastion"`
	Web         string            `json:"web"`
	Keys        map[string]string `json:"keys"`
	PID         int               `json:"pid"`
	PostgresDir string            `json:"postgres_dir"`
	Nodes       []struct {
		Name    string `json:"name"`
		SSH     string `json:"ssh"`
		Config  string `json:"config"`
		PidFile string `json:"pid_file"`
	} `json:"nodes"`
}

// `sekisho demo --ha` (make demo-ha): three nodes behind HAProxy, on
// PostgreSQL and MinIO. A session through the balancer is listed with
// the node that served it; once that node is killed with SIGKILL the
// next ssh lands on a survivor at once, which verifies the first
// session's recording from MinIO; Ctrl-C leaves no process behind.
func TestDemoHA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := &syncBuffer{}
	demo := exec.Command(env.sekisho, "demo", "--ha", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0")
	demo.Dir = env.root
	demo.Stdout, demo.Stderr = out, out
	demo.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { demo.Wait(); close(exited) }()
	t.Cleanup(func() {
		demo.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			demo.Process.Kill()
			<-exited
		}
	})
	var st haDemoState
	waitUntil(t, 2*time.Minute, "the cluster demo to be ready", func() bool {
		select {
		case <-exited:
			t.Fatalf("the cluster demo exited before it was ready:\n%s", out.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "demo.json"))
		return err == nil && json.Unmarshal(b, &st) == nil && st.PID == demo.Process.Pid && strings.Contains(out.String(), "sekisho demo ready")
	})
	t.Logf("ready after %s", time.Since(start).Round(100*time.Millisecond))
	if len(st.Nodes) != 3 {
		t.Fatalf("demo.json lists %d nodes, want 3", len(st.Nodes))
	}
	rel := func(p string) string { r, _ := filepath.Rel(dir, p); return r }
	for _, want := range []string{"sessions --config " + dir + "/node-1/sekisho.yaml", "kill -9 $(cat " + dir + "/node-2/sekisho.pid)", "Ctrl-C stops everything"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's instructions lack %q:\n%s", want, out.String())
		}
	}
	for i, n := range st.Nodes {
		if want := fmt.Sprintf("node-%d/sekisho.yaml", i+1); rel(n.Config) != want || rel(n.PidFile) != fmt.Sprintf("node-%d/sekisho.pid", i+1) {
			t.Errorf("node %s: config %s, pid file %s; want %s and the pid file beside it", n.Name, n.Config, n.PidFile, want)
		}
	}

	// A second cluster demo on the directory is refused.
	if b, err := exec.Command(env.sekisho, "demo", "--ha", "--dir", dir, "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0").CombinedOutput(); err == nil ||
		!strings.Contains(string(b), fmt.Sprintf("is in use by another demo (pid %d)", demo.Process.Pid)) {
		t.Errorf("a second demo on %s: %v\n%s", dir, err, b)
	}

	host, port, _ := net.SplitHostPort(st.Bastion)
	ssh := func(remote string) result {
		t.Helper()
		return run(t, exec.CommandContext(ctxT(t), "ssh", "-F", "/dev/null",
			"-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"), "-o", "StrictHostKeyChecking=yes",
			"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
			"-i", st.Keys["aiko"], "-p", port, "aiko+db-jp-01@"+host, remote), nil)
	}
	// sessionBy returns the session that ran remote and the node that
	// served it, once its recording is in MinIO (config's node may be
	// another).
	node1 := st.Nodes[0].Config
	sessionBy := func(config, marker string) (id, node string) {
		t.Helper()
		waitUntil(t, 15*time.Second, "a session that ran "+marker+" with its recording stored", func() bool {
			out, err := sekishoOn(config, "sessions", "--json")
			if err != nil {
				t.Fatal(err)
			}
			var list []struct {
				ID   string `json:"id"`
				Node string `json:"node"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("sessions --json: %v\n%s", err, out)
			}
			for _, s := range list {
				ev, err := sekishoOn(config, "replay", "--events", s.ID)
				if err == nil && strings.Contains(ev, marker) {
					id, node = s.ID, s.Node
					return true
				}
			}
			return false
		})
		return id, node
	}

	if r := ssh("echo before-kill"); r.code != 0 || r.stdout != "before-kill\n" {
		t.Fatalf("ssh through HAProxy: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	first, served := sessionBy(node1, "before-kill")
	table, err := sekishoOn(node1, "sessions")
	if err != nil || !strings.Contains(table, "NODE") || !strings.Contains(table, served) {
		t.Errorf("sekisho sessions shows no NODE column with %q: %v\n%s", served, err, table)
	}
	var victim int
	for i, n := range st.Nodes {
		if n.Name == served {
			victim = i
		}
	}
	if st.Nodes[victim].Name != served {
		t.Fatalf("session %s served by %q, which is no node of the demo", first, served)
	}
	b, err := os.ReadFile(st.Nodes[victim].PidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q", st.Nodes[victim].PidFile, b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, served+" to be gone", func() bool { return syscall.Kill(pid, 0) != nil })

	// At once: the first ssh after the kill, before HAProxy's checks
	// could have marked the node down, lands on a survivor.
	killed := time.Now()
	if r := ssh("echo after-kill"); r.code != 0 || r.stdout != "after-kill\n" {
		t.Fatalf("ssh right after %s was killed: exit %d, %q, %q", served, r.code, r.stdout, r.stderr)
	}
	t.Logf("first ssh after the kill done in %s", time.Since(killed).Round(10*time.Millisecond))
	survivor := st.Nodes[(victim+1)%len(st.Nodes)].Config
	if _, now := sessionBy(survivor, "after-kill"); now == served || now == "" {
		t.Errorf("the session after the kill was served by %q", now)
	}
	// The killed node's recording is in MinIO: a survivor verifies it.
	waitUntil(t, 15*time.Second, "a survivor to verify "+first, func() bool {
		out, err := sekishoOn(survivor, "verify", first)
		return err == nil && strings.Contains(out, "OK")
	})
	// HAProxy's health checks are no attack: what one sends (a PROXY v2
	// LOCAL header, then nothing) ends quietly, while a connection from
	// the balancer's address without a header is refused and audited.
	probe := func(data string) {
		t.Helper()
		c, err := net.Dial("tcp", st.Nodes[(victim+1)%len(st.Nodes)].SSH)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(data))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // until the node closes it
	}
	probe("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00") // v2, LOCAL, no addresses
	probe("SSH-2.0-OpenSSH_9.2\r\n")
	waitUntil(t, 10*time.Second, "the connection without a header to be audited", func() bool {
		out, _ := sekishoOn(node1, "audit", "--grep", "PROXY")
		return out != ""
	})
	if out, err := sekishoOn(node1, "audit", "--grep", "PROXY"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("PROXY refusals audited, want only the connection without a header (none of the health checks'): %v\n%s", err, out)
	}

	// Ctrl-C stops everything it started.
	demo.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the cluster demo still runs 30 s after SIGINT:\n%s", out.String())
	}
	if left := processesUnder(t, dir, st.PostgresDir); len(left) > 0 {
		t.Errorf("left running after Ctrl-C:\n%s", strings.Join(left, "\n"))
	}
}

// processesUnder lists the processes whose command line names one of
// dirs: the demo's children all name their files there.
func processesUnder(t *testing.T, dirs ...string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // ended meanwhile
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		for _, d := range dirs {
			if d != "" && strings.Contains(cmd, d) {
				left = append(left, filepath.Base(filepath.Dir(p))+": "+cmd)
				break
			}
		}
	}
	return left
}
