package session

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// BenchmarkInteractiveEcho measures the echo latency sekisho adds to an
// interactive session. echoSessions technicians each hold a terminal on
// a target that echoes like a pty running cat, and type a key every
// 100 ms (each from a random offset); for every key typed in a window of
// echoWindow, the time from writing it to reading its echo is taken.
// B is through the Server in this process, recording as it does in
// production; D is as many terminals opened on the target directly, at
// the same rate, in a window of its own just after B's. The technicians'
// clients and the target are in a child process
// (TestInteractiveLoadProcess) in both, so the child does the same work
// in B and D, and B − D is what the Server adds: a second SSH connection
// each way, the recording, and waiting for a CPU. Run it with
//
//	go test -run=NONE -bench=InteractiveEcho -benchtime=1x ./session/
//	go test -run=NONE -bench=InteractiveEcho/pinned -benchtime=1x ./session/ -echo-sessions=100
//
// Unlike sekisho-bench, whose sshd targets and Go load generator
// saturate the second CPU of a two-CPU machine at 1,000 sessions (D's
// p99 there is its own queue), the load here is an x/crypto client and
// server in one Go process: light enough to leave CPU time to spare.
// load-B-cpu-% and load-D-cpu-% say whether it did: the child's CPU time
// in each window, in per cent of one CPU. Near 100 on its one CPU, D's
// latencies are the child's queue, and B − D means nothing.
//
// Two variants:
//
//   - pinned: this process, sekisho, on the first CPU it may use and the
//     child on the others (every thread of each, see pinThreads), each Go
//     runtime's GOMAXPROCS set to its CPUs: sekisho has a CPU of its own,
//     as on a bastion host of its own. The log line names the CPUs. Skipped
//     on a machine with one CPU. Each party gets its CPUs back when the
//     variant ends.
//   - shared: both processes wherever the kernel runs them.
//
// The metrics: B-p50-ms, B-p99-ms, B-p99.9-ms and the same for D;
// added-p50-ms and added-p99-ms, B's percentile less D's (percentiles do
// not subtract the way means do, but with the child's share equal in
// both, it is what the Server adds at that rank); B-keystrokes and
// D-keystrokes measured (echoSessions × echoWindow / 100 ms when none
// had to wait for a late echo); lost, the keys of either window whose
// echo had not come echoDrain after it; sekisho-cpu-%, this process's
// CPU time over B's window in per cent of one CPU, and sekisho-runq-%
// the time its threads waited for a CPU (on a run queue) over that
// window (its own threads count too: with GOMAXPROCS 1, one coming
// back from a system call waits for the one running). load-B-runq-% and
// load-D-runq-% are the child's. others-on-sekisho-cpu-% (pinned only)
// is the CPU time other processes had on sekisho's CPU in B's window:
// more than a few per cent, and the machine was not quiet enough to
// judge sekisho (see cpuBusy). others-on-load-B-cpu-% and
// others-on-load-D-cpu-% are the same for the child's CPUs in each
// window (kernel threads count: the writeback of the recordings may
// run there).
//
// Other work on the machine counts too: read /proc/loadavg with the
// numbers.
func BenchmarkInteractiveEcho(b *testing.B) {
	b.Run("pinned", func(b *testing.B) { benchmarkEcho(b, true) })
	b.Run("shared", func(b *testing.B) { benchmarkEcho(b, false) })
}

var echoSessions = flag.Int("echo-sessions", 1000,
	"BenchmarkInteractiveEcho: how many interactive sessions type at once")

var echoWindow = flag.Duration("echo-window", 5*time.Second,
	"BenchmarkInteractiveEcho: how long the keystrokes are measured, through the bastion and then directly")

const (
	// echoEvery is how often a technician types a key.
	echoEvery = 100 * time.Millisecond
	// echoWarmup is how long the terminals type before the window
	// opens: each has typed ten keys, and the buffers on the way grew.
	echoWarmup = time.Second
	// echoDrain bounds the wait for the echoes of the window's last keys.
	echoDrain = 10 * time.Second
	// echoLogins bounds the logins in flight: under the Server's 50 per
	// source address (MaxUnauthenticatedPerSource), beyond which a
	// login would close another.
	echoLogins = 32
)

func benchmarkEcho(b *testing.B, pinned bool) {
	load, srv, addr := startInteractiveBench(b)
	var pin *placement // shared: nil
	if pinned {
		pin = pinApart(b, load)
	}
	n, window := *echoSessions, *echoWindow
	var viaBastion, direct echoWindowResult
	for i := range b.N {
		viaBastion.add(measureEchoWindow(b, load, addr, n, window, filepath.Join(b.TempDir(), fmt.Sprintf("B%d", i)), pin))
		load.do(b, "close")
		awaitSessionsEnded(b, srv)
		direct.add(measureEchoWindow(b, load, load.target, n, window, filepath.Join(b.TempDir(), fmt.Sprintf("D%d", i)), pin))
		load.do(b, "close")
	}
	slices.Sort(viaBastion.latencies)
	slices.Sort(direct.latencies)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, p := range []struct {
		name string
		rank float64
	}{{"p50", 50}, {"p99", 99}, {"p99.9", 99.9}} {
		bp, dp := percentile(viaBastion.latencies, p.rank), percentile(direct.latencies, p.rank)
		b.ReportMetric(ms(bp), "B-"+p.name+"-ms")
		b.ReportMetric(ms(dp), "D-"+p.name+"-ms")
		if p.name != "p99.9" {
			b.ReportMetric(ms(bp-dp), "added-"+p.name+"-ms")
		}
	}
	b.ReportMetric(float64(len(viaBastion.latencies)), "B-keystrokes")
	b.ReportMetric(float64(len(direct.latencies)), "D-keystrokes")
	b.ReportMetric(float64(viaBastion.lost+direct.lost), "lost")
	b.ReportMetric(viaBastion.own.percent(viaBastion.own.used), "sekisho-cpu-%")
	b.ReportMetric(viaBastion.own.percent(viaBastion.own.waited), "sekisho-runq-%")
	if pinned {
		b.ReportMetric(viaBastion.own.percent(viaBastion.others), "others-on-sekisho-cpu-%")
		b.ReportMetric(viaBastion.load.percent(viaBastion.loadOthers), "others-on-load-B-cpu-%")
		b.ReportMetric(direct.load.percent(direct.loadOthers), "others-on-load-D-cpu-%")
	}
	b.ReportMetric(viaBastion.load.percent(viaBastion.load.used), "load-B-cpu-%")
	b.ReportMetric(viaBastion.load.percent(viaBastion.load.waited), "load-B-runq-%")
	b.ReportMetric(direct.load.percent(direct.load.used), "load-D-cpu-%")
	b.ReportMetric(direct.load.percent(direct.load.waited), "load-D-runq-%")
	b.ReportMetric(0, "ns/op") // the time of the whole run: opening, warming up, closing
}

// echoWindowResult is what the windows of one side (B or D) measured.
type echoWindowResult struct {
	latencies []time.Duration
	lost      int
	// own is this process's CPU in the windows, load the child's.
	own, load cpuShare
	// others is the CPU time others had on this process's CPU in the
	// windows, loadOthers on the child's, when pinned (see cpuBusy).
	others, loadOthers time.Duration
}

func (r *echoWindowResult) add(o echoWindowResult) {
	r.latencies = append(r.latencies, o.latencies...)
	r.lost += o.lost
	r.others += o.others
	r.loadOthers += o.loadOthers
	r.own.add(o.own)
	r.load.add(o.load)
}

// cpuShare is what a process's threads had of the CPUs in a time on the
// clock (wall): used is their CPU time, waited their time runnable but
// waiting for a CPU, which says how contested the CPUs were (by the
// other threads of the process or by any other process).
type cpuShare struct{ used, waited, wall time.Duration }

func (c *cpuShare) add(o cpuShare) {
	c.used += o.used
	c.waited += o.waited
	c.wall += o.wall
}

// percent is d in per cent of one CPU's time over the wall time.
func (c cpuShare) percent(d time.Duration) float64 {
	if c.wall == 0 {
		return 0
	}
	return 100 * float64(d) / float64(c.wall)
}

// sampleCPU reads the CPU time this process used so far (user and
// system) and how long its threads waited for a CPU.
func sampleCPU() (cpuShare, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return cpuShare{}, err
	}
	c := cpuShare{used: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	// The second number of each thread's schedstat is its time on a
	// run queue, in nanoseconds (the process's own counts its first
	// thread only). A thread that ended is not counted; Go's rarely do.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return cpuShare{}, err
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "schedstat"))
		if err != nil {
			continue // ended since
		}
		if f := strings.Fields(string(stat)); len(f) == 3 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			c.waited += time.Duration(ns)
		}
	}
	return c, nil
}

// cpuBusy is the time the kernel counted the CPUs not idle (user, nice,
// system, irq, softirq and steal in /proc/stat: all but idle and
// iowait), in its ticks of 10 ms (USER_HZ is 100 wherever Go runs on
// Linux). On a pinned process's CPU, the busy time less the process's
// own CPU time is what others had of it, give or take a few ticks: other
// processes, kernel threads, the hypervisor (steal). A tick that finds
// the process in an interrupt or softirq (its loopback packets) counts
// as busy and as the process's system time, so it is not counted twice.
func cpuBusy(cpus []int) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	var ticks int64
	found := 0
	for line := range strings.Lines(string(stat)) {
		name, rest, _ := strings.Cut(line, " ")
		cpu, err := strconv.Atoi(strings.TrimPrefix(name, "cpu"))
		if err != nil || !strings.HasPrefix(name, "cpu") || !slices.Contains(cpus, cpu) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 8 {
			return 0, fmt.Errorf("/proc/stat: %q", line)
		}
		for i, v := range f[:8] { // user nice system idle iowait irq softirq steal
			if i == 3 || i == 4 {
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
		found++
	}
	if found != len(cpus) {
		return 0, fmt.Errorf("/proc/stat has lines for %d of CPUs %s", found, cpuNames(cpus))
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// since is what the process had of the CPUs from sample s0, at wall0,
// to now.
func since(s0 cpuShare, wall0 time.Time) (cpuShare, error) {
	s, err := sampleCPU()
	return cpuShare{used: s.used - s0.used, waited: s.waited - s0.waited, wall: time.Since(wall0)}, err
}

// measureEchoWindow has the child open n terminals at addr and measure
// a window of their keystrokes, and returns what it measured and what
// each process had of the CPUs in the window; pin is where each is
// pinned, nil when they are not.
func measureEchoWindow(b *testing.B, load *interactiveLoad, addr string, n int, window time.Duration, file string, pin *placement) echoWindowResult {
	if _, err := fmt.Fprintf(load.in, "echo %s %d %s %s\n", addr, n, window, file); err != nil {
		b.Fatal(err)
	}
	load.answer(b, "window")
	wall0 := time.Now()
	cpu0, err := sampleCPU()
	if err != nil {
		b.Fatal(err)
	}
	var busy0, loadBusy0 time.Duration
	if pin != nil {
		busy0, loadBusy0 = pin.busy(b)
	}
	load.answer(b, "ended")
	var r echoWindowResult
	if r.own, err = since(cpu0, wall0); err != nil {
		b.Fatal(err)
	}
	var busy, loadBusy time.Duration
	if pin != nil {
		busy, loadBusy = pin.busy(b)
		r.others = max(busy-busy0-r.own.used, 0)
	}
	f := strings.Fields(load.answer(b, "echo"))
	if len(f) != 5 {
		b.Fatalf("interactive load: echo %q", f)
	}
	r.lost, _ = strconv.Atoi(f[1])
	r.load.used, _ = time.ParseDuration(f[2])
	r.load.waited, _ = time.ParseDuration(f[3])
	r.load.wall, _ = time.ParseDuration(f[4])
	if pin != nil {
		r.loadOthers = max(loadBusy-loadBusy0-r.load.used, 0)
	}
	if r.latencies, err = readLatencies(file); err != nil {
		b.Fatal(err)
	}
	if want, _ := strconv.Atoi(f[0]); len(r.latencies) != want {
		b.Fatalf("%s holds %d latencies, the child measured %d", file, len(r.latencies), want)
	}
	return r
}

// percentile is the latency at rank (0-100] of sorted latencies: the
// smallest that at least rank per cent of them do not exceed.
func percentile(sorted []time.Duration, rank float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*rank/100)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// readLatencies reads a file of latencies in nanoseconds, one a line.
func readLatencies(name string) ([]time.Duration, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lat []time.Duration
	s := bufio.NewScanner(f)
	for s.Scan() {
		ns, err := strconv.ParseInt(s.Text(), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		lat = append(lat, time.Duration(ns))
	}
	return lat, s.Err()
}

// pinApart puts every thread of this process on the first CPU it may use
// and the child's on the others, sets each Go runtime's GOMAXPROCS to
// its CPUs, and undoes both for this process when b ends (the child ends
// with b); it returns where each runs. It skips b with one CPU to use.
//
// The testing package has set GOMAXPROCS, which stops the runtime from
// following its affinity by itself (about once a second, since go 1.25):
// runtime.SetDefaultGOMAXPROCS starts it again, and applies it at once.
func pinApart(b *testing.B, load *interactiveLoad) *placement {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	cpus := cpusIn(&all)
	if len(cpus) < 2 {
		b.Skip("one CPU to use: nothing to pin sekisho apart from its load")
	}
	loadProcs := load.do(b, "pin "+cpuNames(cpus[1:]))
	procs := runtime.GOMAXPROCS(0)
	b.Cleanup(func() {
		if err := pinThreads(os.Getpid(), &all); err != nil {
			b.Errorf("giving this process its CPUs back: %v", err)
		}
		runtime.GOMAXPROCS(procs)
	})
	var own unix.CPUSet
	own.Set(cpus[0])
	if err := pinThreads(os.Getpid(), &own); err != nil {
		b.Fatal(err)
	}
	runtime.SetDefaultGOMAXPROCS()
	b.Logf("sekisho (this process) on CPU %d, GOMAXPROCS %d; technicians and target (child) on CPU %s, GOMAXPROCS %s",
		cpus[0], runtime.GOMAXPROCS(0), cpuNames(cpus[1:]), loadProcs)
	return &placement{own: cpus[:1], load: cpus[1:]}
}

// placement is where the two processes run when pinned apart.
type placement struct{ own, load []int }

// busy reads how long the kernel counted this process's CPU and the
// child's busy so far.
func (p *placement) busy(b *testing.B) (own, load time.Duration) {
	own, err := cpuBusy(p.own)
	if err == nil {
		load, err = cpuBusy(p.load)
	}
	if err != nil {
		b.Fatal(err)
	}
	return own, load
}

// pinSelf is the child's side of pinApart: it runs on the CPUs listed
// (as cpuNames writes them) and returns its new GOMAXPROCS.
func pinSelf(list string) (int, error) {
	var set unix.CPUSet
	for name := range strings.SplitSeq(list, ",") {
		cpu, err := strconv.Atoi(name)
		if err != nil {
			return 0, fmt.Errorf("CPU list %q: %w", list, err)
		}
		set.Set(cpu)
	}
	if err := pinThreads(os.Getpid(), &set); err != nil {
		return 0, err
	}
	runtime.SetDefaultGOMAXPROCS()
	return runtime.GOMAXPROCS(0), nil
}

// pinThreads sets the CPU affinity of every thread of process pid.
// Affinity belongs to threads, and a thread started later inherits the
// mask of the thread that started it, which may not have been set yet
// when it did: so /proc/PID/task is read again until a pass finds no
// thread it had not set.
func pinThreads(pid int, cpus *unix.CPUSet) error {
	set := map[int]bool{}
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		fresh := false
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil || set[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, cpus); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("CPU affinity of thread %d: %w", tid, err)
			}
			set[tid], fresh = true, true
		}
		if !fresh {
			return nil
		}
	}
}

// cpusIn lists the CPUs of a set.
func cpusIn(set *unix.CPUSet) []int {
	var cpus []int
	for cpu := 0; len(cpus) < set.Count(); cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus
}

func cpuNames(cpus []int) string {
	names := make([]string, len(cpus))
	for i, cpu := range cpus {
		names[i] = strconv.Itoa(cpu)
	}
	return strings.Join(names, ",")
}

// measureEcho is the child's echo command. n technicians log in at addr
// as user (echoLogins at a time) and open a terminal; all then type a
// key every echoEvery, each from a random offset, and read its echo.
// After echoWarmup, it says "window" and measures, for each key typed in
// the window, the time from writing it to reading its echo; at the end
// of the window it says "ended", and the technicians stop typing. Once
// the echo of every key typed came back, or echoDrain passed (then the
// keys still waiting are lost), it writes the latencies to file, in
// nanoseconds one a line, and says "echo KEYSTROKES LOST USED WAITED
// WALL", what this process had of the CPUs in the window (a cpuShare).
// It returns the
// typists, who stay logged in until the close command.
func measureEcho(say func(string, ...any), addr, user string, key ssh.Signer, hostKey ssh.PublicKey, n int, window time.Duration, file string) ([]*typist, error) {
	typists, err := openTypistsAtOnce(addr, user, key, hostKey, n)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	w := echoSchedule{start: start, from: start.Add(echoWarmup), to: start.Add(echoWarmup + window)}
	records := make([]echoRecord, n)
	var typing sync.WaitGroup
	var closing atomic.Bool
	for i, ty := range typists {
		typing.Go(func() { ty.typeMeasured(w, &records[i], &closing) })
	}
	time.Sleep(time.Until(w.from))
	wall0 := time.Now()
	cpu0, err := sampleCPU()
	if err != nil {
		return typists, err
	}
	say("window")
	time.Sleep(time.Until(w.to))
	cpu, err := since(cpu0, wall0)
	if err != nil {
		return typists, err
	}
	say("ended")

	typed := make(chan struct{})
	go func() {
		typing.Wait()
		close(typed)
	}()
	drain := time.NewTimer(echoDrain)
	defer drain.Stop()
	select {
	case <-typed:
	case <-drain.C:
		closing.Store(true)
		for _, ty := range typists {
			ty.client.Close()
		}
		<-typed
	}

	out, err := os.Create(file)
	if err != nil {
		return typists, err
	}
	defer out.Close()
	bw := bufio.NewWriter(out)
	keystrokes, lost := 0, 0
	var errs []error
	for _, r := range records {
		for _, d := range r.latencies {
			fmt.Fprintln(bw, int64(d))
		}
		keystrokes += len(r.latencies)
		lost += r.lost
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return typists, fmt.Errorf("%d of %d terminals failed, the first: %w", len(errs), n, errs[0])
	}
	if err := bw.Flush(); err != nil {
		return typists, err
	}
	if err := out.Close(); err != nil {
		return typists, err
	}
	say("echo %d %d %s %s %s", keystrokes, lost, cpu.used, cpu.waited, cpu.wall)
	return typists, nil
}

// echoSchedule is when the typing starts, and the window measured.
type echoSchedule struct{ start, from, to time.Time }

// echoRecord is what one terminal measured in the window.
type echoRecord struct {
	latencies []time.Duration
	lost      int   // keys typed in the window whose echo did not come
	err       error // what ended the terminal, if not the drain's end
}

// openTypistsAtOnce logs n technicians in, echoLogins at a time, and
// returns them once all have a terminal; none types yet.
func openTypistsAtOnce(addr, user string, key ssh.Signer, hostKey ssh.PublicKey, n int) ([]*typist, error) {
	typists := make([]*typist, n)
	errs := make([]error, n)
	logins := make(chan struct{}, echoLogins)
	var wg sync.WaitGroup
	for i := range typists {
		logins <- struct{}{}
		wg.Go(func() {
			defer func() { <-logins }()
			typists[i], errs[i] = openTypist(addr, user, key, hostKey)
		})
	}
	wg.Wait()
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed == 0 {
		return typists, nil
	}
	for _, ty := range typists {
		if ty != nil {
			ty.client.Close()
		}
	}
	return nil, fmt.Errorf("%d of %d logins at %s failed, the first: %w", failed, n, addr, first)
}

// typeMeasured types a key every echoEvery, from a random offset after
// w.start, and reads its echo; it records how long the echo of each key
// typed in [w.from, w.to) took, and stops typing at w.to. closing tells
// an error that the drain ended (the key is lost) from one that broke
// the terminal.
func (ty *typist) typeMeasured(w echoSchedule, r *echoRecord, closing *atomic.Bool) {
	defer close(ty.done)
	first := time.NewTimer(time.Until(w.start.Add(mrand.N(echoEvery))))
	defer first.Stop()
	select {
	case <-first.C:
	case <-ty.stop:
		return
	}
	tick := time.NewTicker(echoEvery)
	defer tick.Stop()
	key, echo := []byte{0}, []byte{0}
	for i := 0; ; i++ {
		typed := time.Now()
		if !typed.Before(w.to) {
			return
		}
		measured := !typed.Before(w.from)
		key[0] = 'a' + byte(i%26)
		_, err := ty.ch.Write(key)
		if err == nil {
			_, err = io.ReadFull(ty.ch, echo)
		}
		took := time.Since(typed)
		switch {
		case err != nil && closing.Load():
			if measured {
				r.lost++
			}
			return
		case err != nil:
			r.err = fmt.Errorf("key %d: %w", i, err)
			return
		case echo[0] != key[0]:
			r.err = fmt.Errorf("key %d: typed %q, read %q", i, key, echo)
			return
		}
		if measured {
			r.latencies = append(r.latencies, took)
		}
		select {
		case <-tick.C:
		case <-ty.stop:
			return
		}
	}
}
