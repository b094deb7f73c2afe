package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// clusterNode is one `sekisho serve` of the several-nodes part, in a
// directory of its own: its config, recordings, register spool and pid
// file, and its log (serve.out).
type clusterNode struct {
	name   string
	dir    string
	config string
	addr   string
	proc   *child
}

// clusterNodes are the nodes of one run, the first being n1.
type clusterNodes []*clusterNode

// sealedComplete reports whether the node that served session s holds
// its recording sealed complete (seal.json in its recordings directory).
func (ns clusterNodes) sealedComplete(s registerEntry) (bool, error) {
	i := slices.IndexFunc(ns, func(n *clusterNode) bool { return n.name == s.Node })
	if i < 0 {
		return false, fmt.Errorf("register: session %s served by %q, not a node of this run", s.ID, s.Node)
	}
	if s.Recording == "" || !filepath.IsLocal(s.Recording) {
		return false, fmt.Errorf("register: session %s has recording %q", s.ID, s.Recording)
	}
	b, err := os.ReadFile(filepath.Join(ns[i].dir, "recordings", s.Recording, "seal.json"))
	if err != nil {
		return false, nil // not sealed yet
	}
	var seal struct {
		Complete bool `json:"complete"`
	}
	if err := json.Unmarshal(b, &seal); err != nil {
		return false, nil // being written
	}
	if !seal.Complete {
		return false, fmt.Errorf("session %s: its recording on %s is sealed incomplete", s.ID, s.Node)
	}
	return true, nil
}

// nodeConfig turns the demo's config (demo, of the demo in demoDir) into
// a node's: its own listen address; the demo's host key by absolute path,
// so that every node, the demo included, has the same host key and the
// same recording key (recording_key beside it); state as given (a state:
// line, or a database: section and node_name); the demo's Vault role by
// absolute path; no console and no metrics, whose ports are the demo's.
// Recordings stay relative: each node writes its own directory.
func nodeConfig(demo []byte, demoDir, listen, state string) ([]byte, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(demoDir, p)
	}
	edits := []struct {
		what     string
		re       *regexp.Regexp
		optional bool
		repl     func(m []string) string
	}{
		{"listen", regexp.MustCompile(`(?m)^listen: .*$`), false, func([]string) string { return "listen: " + listen }},
		{"host_key", regexp.MustCompile(`(?m)^host_key: (.*)$`), false, func(m []string) string { return "host_key: " + abs(m[1]) }},
		{"state", regexp.MustCompile(`(?m)^state: .*$`), false, func([]string) string { return state }},
		{"vault role files", regexp.MustCompile(`(?m)^(\s+(?:role_id_file|secret_id_file)): (.*)$`), false,
			func(m []string) string { return m[1] + ": " + abs(m[2]) }},
		{"metrics", regexp.MustCompile(`(?m)^metrics:\n(?:[ \t]+.*\n)*`), true, func([]string) string { return "" }},
		{"web", regexp.MustCompile(`(?m)^web:\n(?:[ \t]+.*\n)*`), true, func([]string) string { return "" }},
	}
	cfg := string(demo)
	for _, ed := range edits {
		if !ed.re.MatchString(cfg) {
			if ed.optional {
				continue
			}
			return nil, fmt.Errorf("the demo's config has no %s to change for a node", ed.what)
		}
		cfg = ed.re.ReplaceAllStringFunc(cfg, func(s string) string { return ed.repl(ed.re.FindStringSubmatch(s)) })
	}
	return []byte(cfg), nil
}

// postgresState is the state of a node on PostgreSQL database dsn.
func postgresState(dsn, node string) string {
	return "database:\n  url: " + dsn + "\nnode_name: " + node
}

// sqliteState is the state of a single node in an SQLite file of its own.
func sqliteState(node string) string {
	return "state: sekisho.db\nnode_name: " + node
}

// startNodes writes a config per node name in dir/NAME, with the state
// that state(name) gives, and starts them all at once; they are ready
// once each answers SSH (a node listens only once its store is open, its
// schema migrated, Vault checked and its recordings recovered).
func (e *env) startNodes(ctx context.Context, dir string, names []string, state func(name string) string) (clusterNodes, error) {
	demo, err := os.ReadFile(e.state.Config)
	if err != nil {
		return nil, err
	}
	var nodes clusterNodes
	for _, name := range names {
		n := &clusterNode{name: name, dir: filepath.Join(dir, name)}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nodes, err
		}
		port, err := freePort()
		if err != nil {
			return nodes, err
		}
		n.addr = "127.0.0.1:" + port
		cfg, err := nodeConfig(demo, e.demoDir, n.addr, state(name))
		if err != nil {
			return nodes, err
		}
		n.config = filepath.Join(n.dir, "sekisho.yaml")
		if err := os.WriteFile(n.config, cfg, 0o600); err != nil {
			return nodes, err
		}
		if n.proc, err = startChild(e.bin, filepath.Join(n.dir, "serve.out"), "serve", "--config", n.config); err != nil {
			return nodes, err
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		err := poll(ctx, 2*time.Minute, "node "+n.name+" to answer SSH", func() (bool, error) {
			if !n.proc.alive() {
				return false, fmt.Errorf("node %s exited at start: %s", n.name, tailFile(filepath.Join(n.dir, "serve.out"), 600))
			}
			return sshBanner(n.addr), nil
		})
		if err != nil {
			return nodes, err
		}
	}
	return nodes, nil
}

// stopNodes interrupts the nodes and waits for them to end.
func stopNodes(nodes clusterNodes) {
	for _, n := range nodes {
		n.proc.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range nodes {
		select {
		case <-n.proc.exited:
		case <-time.After(20 * time.Second):
			n.proc.cmd.Process.Kill()
			<-n.proc.exited
		}
	}
}

// nodeClients returns a Go client per node, logging in as aiko+db-jp-01
// with aiko's key, each node pinned to the demo's host key, which every
// node serves.
func (e *env) nodeClients(nodes clusterNodes) ([]*goClients, error) {
	g, err := e.goClients()
	if err != nil {
		return nil, err
	}
	f := strings.Fields(e.state.BastionHostKey)
	if len(f) < 3 {
		return nil, fmt.Errorf("demo.json: bad bastion host key %q", e.state.BastionHostKey)
	}
	var lines strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&lines, "%s %s %s\n", knownhosts.Normalize(n.addr), f[1], f[2])
	}
	kh := filepath.Join(filepath.Dir(nodes[0].dir), "known_hosts")
	if err := os.WriteFile(kh, []byte(lines.String()), 0o644); err != nil {
		return nil, err
	}
	hostKeys, err := knownhosts.New(kh)
	if err != nil {
		return nil, err
	}
	var out []*goClients
	for _, n := range nodes {
		cfg := *g.configs[loginTarget]
		cfg.HostKeyCallback = hostKeys
		out = append(out, &goClients{
			configs: map[login]*ssh.ClientConfig{loginTarget: &cfg},
			addrs:   map[login]string{loginTarget: n.addr},
		})
	}
	return out, nil
}

// registerEntry is the part of a session in `sekisho sessions --json`
// that the several-nodes part checks.
type registerEntry struct {
	ID                string    `json:"id"`
	Technician        string    `json:"technician"`
	Target            string    `json:"target"`
	Node              string    `json:"node"`
	StartedAt         time.Time `json:"started_at"`
	EndedAt           time.Time `json:"ended_at"`
	EndReason         string    `json:"end_reason"`
	Recording         string    `json:"recording"`
	RecordingHead     string    `json:"recording_head"`
	RecordingComplete bool      `json:"recording_complete"`
}

// register lists the register's sessions of technician through node n,
// as an operator would (`sekisho sessions --json`).
func (e *env) register(ctx context.Context, n *clusterNode) ([]registerEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, "sessions", "--config", n.config, "--json", "--technician", technician, "--limit", strconv.Itoa(1<<30))
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, runError("sekisho sessions", err, stderr.b)
	}
	var list []registerEntry
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("sekisho sessions --json: %w", err)
	}
	return list, nil
}

// tailFile returns the last n bytes of a file, for an error message.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "no output in " + path
}
