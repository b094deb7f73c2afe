package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the load parts (concurrency, idle connections, certificate
// issuance) read about processes: /proc for the kernel's view (RSS,
// threads, descriptors, CPU time) and sekisho's own Prometheus /metrics
// for the Go runtime's (goroutines, heap and stacks in use).

// procSnapshot is the sekisho process at one moment.
type procSnapshot struct {
	At         time.Time     `json:"-"`
	RSS        int64         `json:"rss_bytes"`         // VmRSS
	Threads    int           `json:"threads"`           // kernel threads
	FDs        int           `json:"fds"`               // open descriptors
	CPU        time.Duration `json:"cpu_ns"`            // user+system so far
	Goroutines int           `json:"goroutines"`        // go_goroutines
	HeapInuse  int64         `json:"heap_inuse_bytes"`  // go_memstats_heap_inuse_bytes
	StackInuse int64         `json:"stack_inuse_bytes"` // go_memstats_stack_inuse_bytes
	GoSys      int64         `json:"go_sys_bytes"`      // go_memstats_sys_bytes: all the runtime got from the OS
	GOMAXPROCS int           `json:"gomaxprocs"`        // go_sched_gomaxprocs_threads
}

// snapshot reads sekisho's process state and runtime metrics. A failed
// metrics scrape leaves the runtime fields zero and is returned.
func (e *env) snapshot(ctx context.Context) (procSnapshot, error) {
	s := procSnapshot{At: time.Now()}
	pid := e.state.PID
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.RSS = statusKB(status, "VmRSS") * 1024
	s.Threads = int(statusKB(status, "Threads"))
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(ents)
	}
	if s.CPU, err = procCPU(pid); err != nil {
		return s, err
	}
	m, err := e.scrapeMetrics(ctx)
	if err != nil {
		return s, err
	}
	s.Goroutines = int(m["go_goroutines"])
	s.HeapInuse = int64(m["go_memstats_heap_inuse_bytes"])
	s.StackInuse = int64(m["go_memstats_stack_inuse_bytes"])
	s.GoSys = int64(m["go_memstats_sys_bytes"])
	s.GOMAXPROCS = int(m["go_sched_gomaxprocs_threads"])
	return s, nil
}

// statusKB returns the number of a "Key:  N kB" (or "Key: N") line of
// /proc/PID/status.
func statusKB(status []byte, key string) int64 {
	for line := range strings.Lines(string(status)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && k == key {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// procCPU returns the CPU time (user+system) process pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	// After the command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ticks(ut + st), nil
}

// ticks converts clock ticks to time: USER_HZ is 100 on every Linux ABI
// Go supports.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / 100 }

// procTreeCPU returns the CPU time of process root and all its
// descendants alive now, each with the children it has waited for
// (cutime, cstime): the processes that ended count as long as their
// parent in the tree reaped them (an sshd listener and its connections).
func procTreeCPU(root int) (time.Duration, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type proc struct {
		ppid int
		cpu  int64
	}
	procs := map[int]proc{}
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", de.Name(), "stat"))
		if err != nil {
			continue // ended meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		p := proc{}
		p.ppid, _ = strconv.Atoi(f[1])
		for _, v := range f[11:15] { // utime, stime, cutime, cstime
			n, _ := strconv.ParseInt(v, 10, 64)
			p.cpu += n
		}
		procs[pid] = p
	}
	if _, ok := procs[root]; !ok {
		return 0, fmt.Errorf("no process %d", root)
	}
	kids := map[int][]int{}
	for pid, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], pid)
	}
	var sum int64
	todo := []int{root}
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		sum += procs[pid].cpu
		todo = append(todo, kids[pid]...)
	}
	return ticks(sum), nil
}

// scrapeMetrics reads the unlabelled samples of sekisho's /metrics (the
// demo serves it when started with --metrics).
func (e *env) scrapeMetrics(ctx context.Context) (map[string]float64, error) {
	if e.metricsAddr == "" {
		return nil, errors.New("sekisho serves no metrics")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sekisho metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sekisho metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m, sc.Err()
}

// machineCPU returns the busy and total CPU time of the whole machine so
// far (/proc/stat, all CPUs), in clock ticks: busy excludes idle and
// iowait.
func machineCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, errors.New("unexpected /proc/stat format")
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// cpuUse is how many CPUs each party kept busy over a window (CPU
// seconds per second): the load generator (this process), sekisho, the
// target's sshd with its sessions, the dev Vault, and everything else on
// the machine (other work shows there).
type cpuUse struct {
	Client  float64 `json:"load_generator"`
	Sekisho float64 `json:"sekisho"`
	Target  float64 `json:"target_sshd"`
	Vault   float64 `json:"vault"`
	Other   float64 `json:"other"`
	// Busy is the busy share of all CPUs (not idle, not waiting for I/O).
	Busy float64 `json:"machine_busy"`
	// ClientWait and SekishoWait are how long the threads of the load
	// generator and of sekisho were runnable but waited for a CPU, in
	// seconds per second: a process starved by the others shows here.
	ClientWait  float64 `json:"load_generator_runqueue_wait"`
	SekishoWait float64 `json:"sekisho_runqueue_wait"`
}

// cpuMeter measures the CPU time of the parties of cpuUse between start
// and stop.
type cpuMeter struct {
	clocks    []func() (time.Duration, error)
	busy, tot int64
	at        []time.Duration
	waits     [2]time.Duration // run-queue waits of the load generator, sekisho
	pid       int              // sekisho's
	began     time.Time

	Wall  time.Duration
	Parts []time.Duration // CPU time of each party, in cpuUse's order
	Use   cpuUse
}

// startCPU starts measuring the parties' CPU time.
func (e *env) startCPU() *cpuMeter {
	vault := childByCmdline(e.state.PID, "devvault")
	m := &cpuMeter{began: time.Now(), pid: e.state.PID, clocks: []func() (time.Duration, error){
		func() (time.Duration, error) { return procCPU(os.Getpid()) },
		func() (time.Duration, error) { return procCPU(e.state.PID) },
		func() (time.Duration, error) { return procTreeCPU(e.targetSSHD()) },
		func() (time.Duration, error) { return procCPU(vault) },
	}}
	m.busy, m.tot, _ = machineCPU()
	for _, c := range m.clocks {
		d, _ := c()
		m.at = append(m.at, d)
	}
	m.waits = [2]time.Duration{runQueueWait(os.Getpid()), runQueueWait(e.state.PID)}
	return m
}

func (m *cpuMeter) stop() {
	m.Wall = time.Since(m.began)
	b, t, _ := machineCPU()
	for i, c := range m.clocks {
		d, _ := c()
		m.Parts = append(m.Parts, d-m.at[i])
	}
	w := m.Wall.Seconds()
	u := &m.Use
	u.Client, u.Sekisho, u.Target, u.Vault = m.Parts[0].Seconds()/w, m.Parts[1].Seconds()/w, m.Parts[2].Seconds()/w, m.Parts[3].Seconds()/w
	u.Other = max(0, ticks(b-m.busy).Seconds()/w-u.Client-u.Sekisho-u.Target-u.Vault)
	if t > m.tot {
		u.Busy = float64(b-m.busy) / float64(t-m.tot)
	}
	u.ClientWait = (runQueueWait(os.Getpid()) - m.waits[0]).Seconds() / w
	u.SekishoWait = (runQueueWait(m.pid) - m.waits[1]).Seconds() / w
}

// runQueueWait returns how long the threads of process pid alive now have
// waited on a run queue (/proc/PID/task/*/schedstat, second field).
func runQueueWait(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 1 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n
		}
	}
	return time.Duration(sum)
}

// parents maps every process alive now to its parent.
func parents() map[int]int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	m := map[int]int{}
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", de.Name(), "stat"))
		if err != nil {
			continue // ended meanwhile
		}
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
				m[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	return m
}

// children returns the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	for c, parent := range parents() {
		if parent == pid {
			out = append(out, c)
		}
	}
	return out
}

// descendants returns the processes below root alive now: its children,
// theirs, and so on.
func descendants(root int) []int {
	kids := map[int][]int{}
	for pid, parent := range parents() {
		kids[parent] = append(kids[parent], pid)
	}
	var out []int
	todo := slices.Clone(kids[root])
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		out = append(out, pid)
		todo = append(todo, kids[pid]...)
	}
	return out
}

// childByCmdline returns the child of pid whose command line contains s.
func childByCmdline(pid int, s string) int {
	for _, c := range children(pid) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); err == nil && bytes.Contains(b, []byte(s)) {
			return c
		}
	}
	return 0
}

// openFileLimit returns the soft RLIMIT_NOFILE of process pid as
// /proc/PID/limits shows it.
func openFileLimit(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if f[0] == "unlimited" {
					return 1 << 30, nil
				}
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, errors.New("no Max open files line in /proc/PID/limits")
}

// raiseOpenFiles makes sure this process may open want descriptors,
// raising its soft RLIMIT_NOFILE up to the hard limit if needed.
func raiseOpenFiles(want int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= uint64(want) {
		return nil
	}
	if rl.Max < uint64(want) {
		return fmt.Errorf("the open-file limit is %d (hard %d), %d are needed: raise it (ulimit -Hn) or ask for fewer connections", rl.Cur, rl.Max, want)
	}
	rl.Cur = uint64(want)
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

// diskIO is what the disk holding sekisho's recordings did over a
// window, from /proc/diskstats: the recordings' writes and fsyncs (a
// flush each) show here.
type diskIO struct {
	Device      string  `json:"device"`
	WritesPerS  float64 `json:"writes_per_s"`
	FlushesPerS float64 `json:"flushes_per_s"`
	// FlushMS is the device's mean time per flush.
	FlushMS float64 `json:"ms_per_flush"`
}

// diskCounters are the cumulative counters of one /proc/diskstats line.
type diskCounters struct {
	name            string
	writes, flushes int64
	flushMS         int64
	at              time.Time
	found           bool
}

// readDiskCounters reads the counters of the block device holding path;
// found is false for a file system without one (tmpfs).
func readDiskCounters(path string) diskCounters {
	c := diskCounters{at: time.Now()}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return c
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return c
	}
	want := fmt.Sprintf("%d %d ", major, minor)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 20 || f[0]+" "+f[1]+" " != want {
			continue
		}
		num := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
		// Counting from the one after the name: writes completed is
		// the 5th, flushes completed the 16th, ms flushing the 17th.
		c.name, c.writes, c.flushes, c.flushMS, c.found = f[2], num(7), num(18), num(19), true
	}
	return c
}

// since returns the disk's activity from c0 to c, nil without a device.
func (c diskCounters) since(c0 diskCounters) *diskIO {
	if !c.found || !c0.found {
		return nil
	}
	s := c.at.Sub(c0.at).Seconds()
	d := &diskIO{Device: c.name, WritesPerS: float64(c.writes-c0.writes) / s, FlushesPerS: float64(c.flushes-c0.flushes) / s}
	if n := c.flushes - c0.flushes; n > 0 {
		d.FlushMS = float64(c.flushMS-c0.flushMS) / float64(n)
	}
	return d
}
