package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Part 3's echo test again, with sekisho on a CPU of its own. On a small
// machine the 1,000-session window is decided by who gets a CPU: sekisho,
// the load generator (this process) and a thousand target sshd sessions
// all want one, and the kernel shares them out by scheduler autogroup,
// where sekisho is one group among a thousand. With sekisho alone on one
// CPU and everything else the benchmark started (the load generator, the
// dev Vault, the demo's sshd targets with their sessions, the jump sshd)
// on the others, sekisho has what a bastion on a host of its own has, and
// the latency it adds can be judged. D runs pinned the same way, so that
// B − D compares like with like. Other processes on the machine are left
// alone: they may run anywhere.
//
// Affinity belongs to threads, not processes. Every thread of each party
// is set; a thread or process started later inherits the mask of the
// thread that started it (a Go runtime's new threads, the sessions the
// sshd listener forks). The masks are set before the first session opens
// and again once each step's sessions are open, checked from /proc, and
// restored to this process's mask at start when the run ends.
//
// sekisho's Go runtime (go 1.25 and later, with GOMAXPROCS not set)
// follows its affinity: sysmon compares GOMAXPROCS with the CPUs its own
// thread may use about once a second and changes it, so sekisho runs with
// GOMAXPROCS 1 while pinned to one CPU; so does the load generator with
// one CPU to itself. The checks note both values.

// pinnedEcho is the echo test run with sekisho on a CPU of its own.
type pinnedEcho struct {
	// SekishoCPUs and OtherCPUs are CPU lists ("0", "1-3").
	SekishoCPUs string `json:"sekisho_cpus,omitempty"`
	OtherCPUs   string `json:"others_cpus,omitempty"`
	// Skipped says why the run did not happen.
	Skipped string     `json:"skipped,omitempty"`
	Rows    []*echoRow `json:"rows,omitempty"`
	// Restored is what /proc showed once every party had all its CPUs
	// back (and sekisho its GOMAXPROCS of before, if it came back in
	// time).
	Restored *affinityCheck `json:"restored,omitempty"`
}

// echoPinnedTest runs the echo test (D, then B, at each N) with sekisho
// pinned to one CPU and the other parties to the rest, then gives every
// party its CPUs back, also when the test fails.
func (e *env) echoPinnedTest(ctx context.Context, g *goClients, ns []int, window time.Duration) (res *pinnedEcho, err error) {
	pin, err := e.planPinning()
	if errors.Is(err, errOneCPU) {
		return &pinnedEcho{Skipped: "one CPU: nothing to pin sekisho apart from the others"}, nil
	}
	if err != nil {
		return nil, err
	}
	res = &pinnedEcho{SekishoCPUs: cpuList(&pin.sekisho), OtherCPUs: cpuList(&pin.others)}
	before := pin.check(ctx, e, &pin.all, &pin.all)
	defer func() {
		if rerr := pin.restore(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring: %w", rerr))
			return
		}
		// The Go runtimes take up to a second or so to notice: the
		// parts after this one start as the ones before did.
		var c affinityCheck
		werr := poll(ctx, 10*time.Second, "GOMAXPROCS as before the pinning", func() (bool, error) {
			c = pin.check(ctx, e, &pin.all, &pin.all)
			return c.SekishoGOMAXPROCS == before.SekishoGOMAXPROCS && c.LoadGeneratorGOMAXPROCS == before.LoadGeneratorGOMAXPROCS, nil
		})
		if werr != nil {
			logf("  %v", werr)
		}
		res.Restored = &c
		logf("  CPUs given back: %s", &c)
	}()
	if err := pin.apply(); err != nil {
		return res, err
	}
	res.Rows, err = e.echoTest(ctx, g, ns, window, pin)
	return res, err
}

// errOneCPU is returned by planPinning on a machine with one CPU to use,
// where there is nothing to split.
var errOneCPU = errors.New("this process may use one CPU only")

// cpuPinning splits the CPUs this process may use between sekisho and
// everything else the benchmark started.
type cpuPinning struct {
	all, sekisho, others unix.CPUSet
	sekishoPID           int
	// rest returns the processes whose trees run on the other CPUs:
	// every child of the demo (Vault, the sshd targets; sekisho is the
	// demo process itself), and the jump sshd.
	rest func() []int
	// target and vault find the processes the checks report on.
	target, vault func() int
}

// planPinning gives sekisho the first CPU this process may use and the
// other parties the rest.
func (e *env) planPinning() (*cpuPinning, error) {
	p := &cpuPinning{sekishoPID: e.state.PID}
	if err := unix.SchedGetaffinity(0, &p.all); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	if p.all.Count() < 2 {
		return nil, errOneCPU
	}
	p.others = p.all
	for cpu := range cpuBits {
		if p.all.IsSet(cpu) {
			p.sekisho.Set(cpu)
			p.others.Clear(cpu)
			break
		}
	}
	p.rest = func() []int {
		pids := children(e.state.PID)
		if e.jump != nil && e.jump.alive() {
			pids = append(pids, e.jump.cmd.Process.Pid)
		}
		return pids
	}
	p.target = e.targetSSHD
	p.vault = func() int { return childByCmdline(e.state.PID, "devvault") }
	return p, nil
}

// cpuBits is how many CPUs a unix.CPUSet can name.
const cpuBits = len(unix.CPUSet{}) * 64

// apply pins sekisho to its CPU, and the load generator and the trees of
// the other parties to the others.
func (p *cpuPinning) apply() error {
	return p.set(&p.sekisho, &p.others)
}

// restore gives every party back every CPU this process had at start.
func (p *cpuPinning) restore() error {
	return p.set(&p.all, &p.all)
}

func (p *cpuPinning) set(sekisho, others *unix.CPUSet) error {
	errs := []error{pinThreads(p.sekishoPID, sekisho), pinThreads(os.Getpid(), others)}
	for _, pid := range p.rest() {
		if pid != p.sekishoPID {
			errs = append(errs, pinTree(pid, others))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("CPU affinity: %w", err)
	}
	return nil
}

// pinThreads sets the CPU affinity of every thread of process pid. It
// lists the threads again until a pass finds none it has not set: a
// thread started meanwhile by one not yet set would keep the old mask.
func pinThreads(pid int, set *unix.CPUSet) error {
	done := map[int]bool{}
	for {
		tids, err := threadIDs(pid)
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh++
			done[tid] = true
			// A thread that ended meanwhile needs no mask.
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("process %d thread %d: %w", pid, tid, err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
}

// pinTree sets the CPU affinity of every thread of process root and of
// its descendants; a process that ended meanwhile is skipped.
func pinTree(root int, set *unix.CPUSet) error {
	for _, pid := range append([]int{root}, descendants(root)...) {
		if err := pinThreads(pid, set); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// threadIDs lists the threads of process pid.
func threadIDs(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, de := range ents {
		if tid, err := strconv.Atoi(de.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// affinityCheck is what /proc showed of the parties' CPU affinity once a
// step's sessions were open: for each party, how many of its threads
// were allowed which CPUs (Cpus_allowed_list → threads), and the
// GOMAXPROCS of the two Go programs.
type affinityCheck struct {
	Sekisho       map[string]int `json:"sekisho_threads"`
	LoadGenerator map[string]int `json:"load_generator_threads"`
	// Target is the target sshd's listener, its sessions and what they
	// run (the shell, cat).
	Target map[string]int `json:"target_sshd_threads"`
	Vault  map[string]int `json:"vault_threads"`
	// SekishoGOMAXPROCS is sekisho's go_sched_gomaxprocs_threads (0 if
	// its metrics did not answer).
	SekishoGOMAXPROCS       int `json:"sekisho_gomaxprocs"`
	LoadGeneratorGOMAXPROCS int `json:"load_generator_gomaxprocs"`
	// AsPlanned is whether every thread of every party was on the CPUs
	// it should have been on at that point.
	AsPlanned bool `json:"as_planned"`
}

// check reads the parties' affinity from /proc; AsPlanned says whether
// sekisho's threads may use exactly the CPUs of sekisho and the others'
// exactly those of others.
func (p *cpuPinning) check(ctx context.Context, e *env, sekisho, others *unix.CPUSet) affinityCheck {
	c := affinityCheck{
		Sekisho:                 allowedCPUs(p.sekishoPID),
		LoadGenerator:           allowedCPUs(os.Getpid()),
		LoadGeneratorGOMAXPROCS: runtime.GOMAXPROCS(0),
		Target:                  map[string]int{},
		Vault:                   map[string]int{},
	}
	if t := p.target(); t != 0 {
		for _, pid := range append([]int{t}, descendants(t)...) {
			for l, n := range allowedCPUs(pid) {
				c.Target[l] += n
			}
		}
	}
	if v := p.vault(); v != 0 {
		c.Vault = allowedCPUs(v)
	}
	if m, err := e.scrapeMetrics(ctx); err == nil {
		c.SekishoGOMAXPROCS = int(m["go_sched_gomaxprocs_threads"])
	}
	only := func(m map[string]int, want string) bool { return len(m) == 1 && m[want] > 0 }
	rest := cpuList(others)
	c.AsPlanned = only(c.Sekisho, cpuList(sekisho)) && only(c.LoadGenerator, rest) && only(c.Target, rest) && only(c.Vault, rest)
	return c
}

// String reads as "sekisho 17 threads on 0; load generator 9 on 1; …".
func (c *affinityCheck) String() string {
	party := func(name string, m map[string]int) string {
		if len(m) == 0 {
			return name + " not found"
		}
		var parts []string
		for _, l := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("%d on %s", m[l], l))
		}
		return name + " " + strings.Join(parts, ", ")
	}
	return fmt.Sprintf("threads: %s; %s; %s; %s; GOMAXPROCS: sekisho %d, load generator %d",
		party("sekisho", c.Sekisho), party("load generator", c.LoadGenerator), party("target sshd", c.Target), party("Vault", c.Vault),
		c.SekishoGOMAXPROCS, c.LoadGeneratorGOMAXPROCS)
}

// allowedCPUs counts the threads of process pid by the CPUs they may use
// (Cpus_allowed_list of /proc/PID/task/TID/status).
func allowedCPUs(pid int) map[string]int {
	m := map[string]int{}
	tids, _ := threadIDs(pid)
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
		if err != nil {
			continue // ended meanwhile
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				m[strings.TrimSpace(v)]++
			}
		}
	}
	return m
}

// cpuList writes a CPU set as the kernel's lists do ("0", "1-3", "0,2").
func cpuList(set *unix.CPUSet) string {
	var parts []string
	for cpu := 0; cpu < cpuBits; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		last := cpu
		for last+1 < cpuBits && set.IsSet(last+1) {
			last++
		}
		if last == cpu {
			parts = append(parts, strconv.Itoa(cpu))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpu, last))
		}
		cpu = last
	}
	return strings.Join(parts, ",")
}
