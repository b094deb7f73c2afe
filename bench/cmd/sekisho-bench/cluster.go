package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sekisho/sekisho/internal/pgtest"
)

// The last part of the benchmark: several nodes. sekisho can run as
// equal nodes sharing one PostgreSQL database. This part starts a
// PostgreSQL server of its own (internal/pgtest, as the e2e suite does)
// and three sets of nodes, each on empty state of its own:
//
//	three nodes on one PostgreSQL database (its setup timed from nothing)
//	one node on PostgreSQL
//	one node on SQLite (the state a single bastion has)
//
// and runs the same number of short sessions through each set. The sets
// take turns in rounds, a share of the sessions each, the order rotating
// every round, so that drift and other work on the machine hit all three;
// within a set the sessions go round-robin over its nodes.
//
// Every node is a `sekisho serve` of the demo's config with its own
// listen address and directory, the demo's host key (hence its recording
// key), Vault role and targets. A session is a Go client logging in
// through a node as aiko+db-jp-01: connect, authenticate, the session
// channel, the command if any, close. Logins per second are a set's
// sessions over the wall time of its rounds, with a fixed number of
// workers connecting back to back, as in part 4.
//
// A run counts only if the register agrees with the client: once every
// session has ended, `sekisho sessions` through the set's first node must
// list each session of the run, ended by the client, served by the node
// the client reached, and that node must hold its recording sealed
// complete (seal.json: a session that recorded no bytes, as one that only
// opens the session channel, has no seal head for the register). A failed
// session, or anything else, fails the benchmark.

// clusterOptions are the flags of the several-nodes part.
type clusterOptions struct {
	Sessions int    `json:"sessions"` // per run; 0: no several-nodes part
	Rounds   int    `json:"rounds"`   // the runs take turns, a share of the sessions each
	Workers  int    `json:"workers"`
	Command  string `json:"command"` // empty: the session channel only
}

// clusterResult is the several-nodes part.
type clusterResult struct {
	Options clusterOptions `json:"options"`
	// PostgreSQL is the server's major version (Debian's package).
	PostgreSQL string `json:"postgresql"`
	// Setup is the three-node cluster's setup from nothing.
	Setup clusterSetup  `json:"three_node_setup"`
	Runs  []*clusterRun `json:"runs"`
	Took  string        `json:"took"`
	// Error is why the part failed, if it did; the run then fails.
	Error string `json:"error,omitempty"`
}

// clusterSetup is how long a three-node cluster took to come up.
type clusterSetup struct {
	// PostgresMS is pgtest.Start (initdb, the server started and
	// accepting connections) and an empty database created.
	PostgresMS float64 `json:"postgres_ready_ms"`
	// FirstNodeMS is n1 started until it answered SSH: the schema
	// migrations applied to the empty database (under the cluster's
	// migration lock), Vault checked.
	FirstNodeMS float64 `json:"first_node_ready_ms"`
	// OtherNodesMS is n2 and n3, started together once n1 answered,
	// until both answered (the schema already there).
	OtherNodesMS float64 `json:"other_nodes_ready_ms"`
	// AllNodesMS is n1 started until all three answered.
	AllNodesMS float64 `json:"all_nodes_ready_ms"`
	// TotalMS is from nothing to three nodes answering.
	TotalMS float64 `json:"total_ms"`
}

// clusterRun is one set of nodes and the sessions through it.
type clusterRun struct {
	Name  string   `json:"name"`
	Store string   `json:"store"` // sqlite or postgresql
	Nodes []string `json:"nodes"`
	// ReadyMS is the nodes started (on empty state) until all answered.
	ReadyMS    float64 `json:"nodes_ready_ms"`
	Completed  int     `json:"completed"`
	Failed     int     `json:"failed"`
	FirstError string  `json:"first_error,omitempty"`
	WallS      float64 `json:"wall_s"`
	PerSecond  float64 `json:"logins_per_s"`
	// LatencyMS is connect to close, per session.
	LatencyMS latencySummary `json:"session_ms"`
	// Register is the run's sessions in the register, per node.
	Register map[string]int `json:"register_per_node"`
	// CPU is the CPU time per session of each party: sekisho (all the
	// nodes), PostgreSQL (the server and its backends), the target's
	// sshd (with its sessions), the dev Vault and the load generator.
	CPU clusterCPU `json:"cpu_ms_per_session"`
	// Busy is the busy share of the machine's CPUs during the rounds.
	Busy float64 `json:"machine_busy"`
}

type clusterCPU struct {
	Sekisho    float64 `json:"sekisho"`
	PostgreSQL float64 `json:"postgresql"`
	Target     float64 `json:"target_sshd"`
	Vault      float64 `json:"vault"`
	Client     float64 `json:"load_generator"`
	// OtherCPUs is the CPUs the rest of the machine kept busy meanwhile
	// (the kernel's own work, the idle nodes, any other process), in CPU
	// seconds per second.
	OtherCPUs float64 `json:"other_cpus"`
}

// clusterPart runs the several-nodes part in WORK/cluster.
func (e *env) clusterPart(ctx context.Context, o clusterOptions) (*clusterResult, error) {
	began := time.Now()
	res := &clusterResult{Options: o}
	defer func() { res.Took = time.Since(began).Round(time.Second).String() }()
	dir := filepath.Join(e.dir, "cluster")
	if bin, err := pgtest.Bin(); err == nil {
		res.PostgreSQL = filepath.Base(filepath.Dir(bin))
	}

	logf("several nodes: PostgreSQL %s; %d sessions per run in %d rounds, the runs interleaved", res.PostgreSQL, o.Sessions, o.Rounds)
	t := time.Now()
	pg, err := pgtest.Start(ctx)
	if err != nil {
		return res, fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer pg.Stop()
	dsn, err := pg.Database(ctx)
	if err != nil {
		return res, err
	}
	res.Setup.PostgresMS = ms(time.Since(t))
	logf("  PostgreSQL ready in %.0f ms", res.Setup.PostgresMS)

	// The three-node cluster first, on the database made while
	// PostgreSQL's setup was timed; the one-node runs then get an empty
	// state of their own. All stay up until the end, idle but for their
	// rounds.
	specs := []struct {
		run   *clusterRun
		state func(node string) string
	}{
		{&clusterRun{Name: "PostgreSQL, three nodes", Store: "postgresql", Nodes: []string{"n1", "n2", "n3"}}, pgState(dsn)},
		{&clusterRun{Name: "PostgreSQL, one node", Store: "postgresql", Nodes: []string{"n1"}}, nil},
		{&clusterRun{Name: "SQLite, one node", Store: "sqlite", Nodes: []string{"n1"}}, sqliteState},
	}
	var sets []*nodeSet
	defer func() {
		for _, set := range sets {
			stopNodes(set.nodes)
		}
	}()
	for i, spec := range specs {
		if spec.state == nil {
			one, err := pg.Database(ctx)
			if err != nil {
				return res, err
			}
			spec.state = pgState(one)
		}
		set, err := e.startSet(ctx, filepath.Join(dir, strconv.Itoa(i+1)), spec.run, o, spec.state, &res.Setup)
		if set != nil {
			sets = append(sets, set)
		}
		if err != nil {
			return res, fmt.Errorf("%s: %w", spec.run.Name, err)
		}
	}
	res.Setup.TotalMS = res.Setup.PostgresMS + res.Setup.AllNodesMS
	// Reported SQLite first, as the reference.
	for i := len(sets) - 1; i >= 0; i-- {
		res.Runs = append(res.Runs, sets[i].run)
	}

	meter := e.clusterMeter(pg)
	for round := range o.Rounds {
		n := o.Sessions / o.Rounds
		if round < o.Sessions%o.Rounds {
			n++
		}
		for k := range sets {
			set := sets[(round+k)%len(sets)]
			if err := set.batch(ctx, n, o, meter); err != nil {
				for _, s := range sets {
					s.finish() // what the rounds so far measured
				}
				return res, fmt.Errorf("%s: %w", set.run.Name, err)
			}
		}
	}
	for _, set := range sets {
		set.finish()
		r := set.run
		logf("  %s: %d sessions, %.1f logins/s, p50 %.0f ms, p99 %.0f ms, %d failed %s",
			r.Name, r.Completed, r.PerSecond, r.LatencyMS.P50, r.LatencyMS.P99, r.Failed, r.FirstError)
		if err := e.checkRegister(ctx, set); err != nil {
			return res, fmt.Errorf("%s: %w", r.Name, err)
		}
	}
	return res, nil
}

func pgState(dsn string) func(string) string {
	return func(node string) string { return postgresState(dsn, node) }
}

// nodeSet is the nodes of one run, a client for each, and what the run's
// rounds measured so far.
type nodeSet struct {
	run     *clusterRun
	nodes   clusterNodes
	clients []*goClients

	began  time.Time // of the first round
	next   int       // the next session's number: it goes to node next mod nodes
	lat    []float64
	served map[string]int
	wall   time.Duration
	cpu    []time.Duration // per party, as clusterMeter's clocks
	busy   [2]int64        // busy and total CPU ticks of the machine
}

// startSet starts the run's nodes and has one untimed session go through
// each. A run of several nodes starts n1 first and the others once it
// answers, and notes the times in setup.
func (e *env) startSet(ctx context.Context, dir string, r *clusterRun, o clusterOptions, state func(string) string, setup *clusterSetup) (*nodeSet, error) {
	set := &nodeSet{run: r, served: map[string]int{}}
	t := time.Now()
	var err error
	set.nodes, err = e.startNodes(ctx, dir, r.Nodes[:1], state)
	if err != nil {
		return set, err
	}
	first := time.Since(t)
	if len(r.Nodes) > 1 {
		t2 := time.Now()
		more, err := e.startNodes(ctx, dir, r.Nodes[1:], state)
		set.nodes = append(set.nodes, more...)
		if err != nil {
			return set, err
		}
		setup.FirstNodeMS, setup.OtherNodesMS = ms(first), ms(time.Since(t2))
		setup.AllNodesMS = ms(time.Since(t))
	}
	r.ReadyMS = ms(time.Since(t))
	logf("  %s: %d node(s) ready in %.0f ms", r.Name, len(set.nodes), r.ReadyMS)
	if set.clients, err = e.nodeClients(set.nodes); err != nil {
		return set, err
	}
	for i, g := range set.clients {
		if err := connectOnce(ctx, g, o.Command); err != nil {
			return set, fmt.Errorf("warm-up session through %s: %w", set.nodes[i].name, err)
		}
	}
	return set, nil
}

// clusterMeter returns the CPU clocks of a run's parties: sekisho (the
// run's nodes), PostgreSQL (the server and its backends), the target's
// sshd (with its sessions), the dev Vault and the load generator.
func (e *env) clusterMeter(pg *pgtest.Server) func(nodes clusterNodes) []time.Duration {
	vault := childByCmdline(e.state.PID, "devvault")
	postgres := func() (time.Duration, error) {
		b, err := os.ReadFile(filepath.Join(pg.Dir, "data", "postmaster.pid"))
		if err != nil {
			return 0, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
		if err != nil {
			return 0, fmt.Errorf("postmaster.pid: %w", err)
		}
		return procTreeCPU(pid)
	}
	return func(nodes clusterNodes) []time.Duration {
		return readClocks([]func() (time.Duration, error){
			func() (time.Duration, error) {
				var sum time.Duration
				for _, n := range nodes {
					d, err := procCPU(n.proc.cmd.Process.Pid)
					if err != nil {
						return 0, err
					}
					sum += d
				}
				return sum, nil
			},
			postgres,
			func() (time.Duration, error) { return procTreeCPU(e.targetSSHD()) },
			func() (time.Duration, error) { return procCPU(vault) },
			func() (time.Duration, error) { return procCPU(os.Getpid()) },
		})
	}
}

// batch runs n sessions through the set's nodes, round-robin, with
// o.Workers back to back, and adds what it measured to the set. Any
// failed session fails the run.
func (set *nodeSet) batch(ctx context.Context, n int, o clusterOptions, meter func(clusterNodes) []time.Duration) error {
	var mu sync.Mutex
	first := set.next
	set.next += n
	cpu0 := meter(set.nodes)
	busy0, total0, _ := machineCPU()
	t := time.Now()
	if set.began.IsZero() {
		set.began = t
	}
	failed, err := bounded(ctx, n, o.Workers, func(i int) error {
		k := (first + i) % len(set.nodes)
		t0 := time.Now()
		if err := connectOnce(ctx, set.clients[k], o.Command); err != nil {
			return fmt.Errorf("through %s: %w", set.nodes[k].name, err)
		}
		d := time.Since(t0)
		mu.Lock()
		set.lat = append(set.lat, float64(d.Microseconds())/1000)
		set.served[set.nodes[k].name]++
		mu.Unlock()
		return nil
	})
	set.wall += time.Since(t)
	cpu1 := meter(set.nodes)
	busy1, total1, _ := machineCPU()
	if set.cpu == nil {
		set.cpu = make([]time.Duration, len(cpu1))
	}
	for j := range cpu1 {
		set.cpu[j] += cpu1[j] - cpu0[j]
	}
	set.busy[0] += busy1 - busy0
	set.busy[1] += total1 - total0
	r := set.run
	r.Failed += failed
	if err != nil && r.FirstError == "" {
		r.FirstError = err.Error()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d sessions failed: %s", failed, n, err)
	}
	return nil
}

// finish summarizes the set's rounds in its run.
func (set *nodeSet) finish() {
	r := set.run
	r.Completed = len(set.lat)
	r.WallS = set.wall.Seconds()
	if r.WallS > 0 {
		r.PerSecond = float64(r.Completed) / r.WallS
	}
	r.LatencyMS = summarizeLatency(set.lat)
	if set.busy[1] > 0 {
		r.Busy = float64(set.busy[0]) / float64(set.busy[1])
	}
	if n := float64(r.Completed); n > 0 && len(set.cpu) == 5 {
		per := func(j int) float64 { return float64(set.cpu[j].Microseconds()) / 1000 / n }
		r.CPU = clusterCPU{Sekisho: per(0), PostgreSQL: per(1), Target: per(2), Vault: per(3), Client: per(4)}
		var parts time.Duration
		for _, d := range set.cpu {
			parts += d
		}
		r.CPU.OtherCPUs = max(0, (ticks(set.busy[0])-parts).Seconds()/r.WallS)
	}
}

// checkRegister waits until the register, read through the set's first
// node, shows every session of the run (those started since its first
// round) ended, and the node that served it holds its recording sealed;
// it then checks that the register lists exactly the sessions the client
// completed, node by node, each ended by the client.
func (e *env) checkRegister(ctx context.Context, set *nodeSet) error {
	nodes, r, n := set.nodes, set.run, set.nodes[0]
	var list []registerEntry
	sealed := map[string]bool{}
	err := poll(ctx, 3*time.Minute, "the register to show the run's sessions ended, and their recordings sealed", func() (bool, error) {
		all, err := e.register(ctx, n)
		if err != nil {
			return false, err
		}
		list = slices.DeleteFunc(all, func(s registerEntry) bool { return s.StartedAt.Before(set.began) })
		if len(list) < r.Completed {
			return false, nil
		}
		for _, s := range list {
			if s.EndedAt.IsZero() {
				return false, nil
			}
			if !sealed[s.ID] {
				if sealed[s.ID], err = nodes.sealedComplete(s); !sealed[s.ID] {
					return false, err
				}
			}
		}
		return true, nil
	})
	r.Register = map[string]int{}
	var bad []string
	for _, s := range list {
		r.Register[s.Node]++
		if s.EndReason != "client closed" || s.Target != targetName || (s.RecordingHead != "" && !s.RecordingComplete) {
			bad = append(bad, fmt.Sprintf("%s on %s: target %s, ended %q, recording complete %v", s.ID, s.Node, s.Target, s.EndReason, s.RecordingComplete))
		}
	}
	logf("  %s: the register lists %d sessions of the run, per node %v", r.Name, len(list), r.Register)
	switch {
	case err != nil:
		return fmt.Errorf("register: %w (%d sessions listed, %d completed)", err, len(list), r.Completed)
	case len(list) != r.Completed:
		return fmt.Errorf("register: %d sessions of the run, the client completed %d", len(list), r.Completed)
	case len(bad) > 0:
		return fmt.Errorf("register: %d sessions not ended by the client or sealed incomplete, first %s", len(bad), bad[0])
	}
	for node, k := range set.served {
		if r.Register[node] != k {
			return fmt.Errorf("register: %v sessions per node, the client completed %v", r.Register, set.served)
		}
	}
	return nil
}

// readClocks reads each CPU clock; one that cannot be read counts 0.
func readClocks(clocks []func() (time.Duration, error)) []time.Duration {
	out := make([]time.Duration, len(clocks))
	for i, c := range clocks {
		out[i], _ = c()
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// printCluster writes the several-nodes part's table.
func (r *clusterResult) printCluster(w io.Writer, cpus int) {
	what := "exec " + r.Options.Command
	if r.Options.Command == "" {
		what = "open the session channel, nothing started on the target"
	}
	s := r.Setup
	fmt.Fprintf(w, "\nSeveral nodes (PostgreSQL %s): setup from nothing to three nodes answering SSH: PostgreSQL ready (initdb, start, a database) %.0f ms; n1 ready (schema migrations on the empty database) %.0f ms; n2 and n3 ready (started together) %.0f ms more; in all %.1f s\n",
		r.PostgreSQL, s.PostgresMS, s.FirstNodeMS, s.OtherNodesMS, s.TotalMS/1000)
	fmt.Fprintf(w, "\n%d sessions per run (connect, %s, close) through sekisho as aiko+db-jp-01, %d workers back to back, round-robin over the nodes, the runs taking turns in %d rounds; logins per second over the run's wall time; session latency connect to close, ms; register: the run's sessions `sekisho sessions` lists per node, all ended, their recordings sealed complete; CPU per session, ms; other: CPUs kept busy by the rest of the machine (the machine has %d CPUs)\n\n",
		r.Options.Sessions, what, r.Options.Workers, r.Options.Rounds, cpus)
	fmt.Fprintf(w, "| state | nodes ready | completed (failed) | logins/s | p50 | p90 | p99 | max | register per node | CPU per session: sekisho | PostgreSQL | target sshd | Vault | load generator | other | machine busy |\n|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, run := range r.Runs {
		var per []string
		for _, n := range run.Nodes {
			per = append(per, fmt.Sprintf("%s %d", n, run.Register[n]))
		}
		l := run.LatencyMS
		fmt.Fprintf(w, "| %s | %.0f ms | %d (%d) | %.1f | %.0f | %.0f | %.0f | %.0f | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.0f%% |\n",
			run.Name, run.ReadyMS, run.Completed, run.Failed, run.PerSecond, l.P50, l.P90, l.P99, l.Max, strings.Join(per, ", "),
			run.CPU.Sekisho, run.CPU.PostgreSQL, run.CPU.Target, run.CPU.Vault, run.CPU.Client, run.CPU.OtherCPUs, 100*run.Busy)
	}
	if len(r.Runs) == 3 && r.Runs[0].PerSecond > 0 {
		fmt.Fprintf(w, "\nLogins per second against SQLite, one node: PostgreSQL one node %s, three nodes %s\n",
			fmtRatio(ratio(r.Runs[1].PerSecond, r.Runs[0].PerSecond)), fmtRatio(ratio(r.Runs[2].PerSecond, r.Runs[0].PerSecond)))
	}
	if r.Error != "" {
		fmt.Fprintf(w, "\n**Failed:** %s\n", r.Error)
	}
	fmt.Fprintf(w, "\nThe several-nodes part took %s\n", r.Took)
}
