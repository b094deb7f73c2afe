package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// results is what a run found; it is written as JSON (bench/results/latest.json).
type results struct {
	Date     string   `json:"date"`
	Machine  machine  `json:"machine"`
	Settings settings `json:"settings"`
	// Setup is the connection setup in milliseconds, per path.
	Setup        map[path]*setupResult `json:"setup_ms"`
	SetupRatioBA float64               `json:"setup_median_ratio_b_a"`
	SetupRatioBD float64               `json:"setup_median_ratio_b_d"`
	// SetupRatioJA and SetupRatioJB compare ssh -J through sekisho with
	// ssh -J through OpenSSH and with TECHNICIAN+TARGET through sekisho.
	SetupRatioJA float64 `json:"setup_median_ratio_j_a,omitempty"`
	SetupRatioJB float64 `json:"setup_median_ratio_j_b,omitempty"`
	// SetupSameKex is the same with settings.same_kex on every leg.
	SetupSameKex   map[path]*setupResult `json:"setup_same_kex_ms,omitempty"`
	SameKexRatioBA float64               `json:"setup_same_kex_median_ratio_b_a,omitempty"`
	SameKexRatioBD float64               `json:"setup_same_kex_median_ratio_b_d,omitempty"`
	Throughput     []*throughputRow      `json:"throughput"`
	Recording      []recordingRow        `json:"recording"`
	Bars           []bar                 `json:"bars"`
	Targets        []target              `json:"targets,omitempty"`
	Elapsed        string                `json:"elapsed"`

	// Parts 3 and 4 (concurrency.go, certs.go), and how long each took.
	Echo []*echoRow `json:"concurrency_echo,omitempty"`
	// EchoPinned is the echo test again with sekisho on a CPU of its own.
	EchoPinned *pinnedEcho  `json:"concurrency_echo_pinned,omitempty"`
	Idle       *idleResult  `json:"idle_connections,omitempty"`
	Certs      *certResults `json:"certificate_issuance,omitempty"`
	LoadTimes  []partTime   `json:"load_part_times,omitempty"`
	// LoadErrors are the parts 3 and 4 that could not finish, and why.
	LoadErrors []string `json:"load_errors,omitempty"`

	// Cluster is the several-nodes part (cluster.go).
	Cluster *clusterResult `json:"several_nodes,omitempty"`
}

type settings struct {
	SetupRuns     int      `json:"setup_runs"`
	Reps          int      `json:"throughput_reps"`
	Bytes         int64    `json:"bytes"`
	PTYBytes      int64    `json:"pty_bytes"`
	Ciphers       []string `json:"ciphers"`
	SameKex       string   `json:"same_kex,omitempty"`
	WorkDir       string   `json:"workdir,omitempty"`
	Technician    string   `json:"technician"`
	Target        string   `json:"target"`
	SekishoCommit string   `json:"sekisho_commit"`

	Load    *loadOptions    `json:"load,omitempty"`
	Cluster *clusterOptions `json:"several_nodes,omitempty"`
}

type machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	MemTotal string `json:"mem_total"`
	Kernel   string `json:"kernel"`
	OpenSSH  string `json:"openssh"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	// Load averages when the run began and ended: other work on the
	// machine shows here.
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
}

type setupResult struct {
	SamplesMS  []float64 `json:"samples"`
	Summary    summary   `json:"summary"`
	Failures   int       `json:"failures"`
	FirstError string    `json:"first_error,omitempty"`
}

func (s *setupResult) add(d time.Duration, err error) {
	if err != nil {
		if s.Failures == 0 {
			s.FirstError = err.Error()
		}
		s.Failures++
		return
	}
	s.SamplesMS = append(s.SamplesMS, float64(d.Microseconds())/1000)
}

type throughputRow struct {
	Direction string                `json:"direction"` // download or upload
	Cipher    string                `json:"cipher"`
	Paths     map[path]*transferSet `json:"paths"`
	RatioBA   float64               `json:"median_ratio_b_a"`
	RatioBD   float64               `json:"median_ratio_b_d"`
}

// sekishoCPU returns sekisho's CPU time over B's transfers of the row:
// CPU seconds per GiB moved and per second of wall time; ok is false if
// no transfer of B succeeded.
func (row *throughputRow) sekishoCPU() (perGiB, perWall float64, ok bool) {
	var cpu, wall time.Duration
	var n int64
	for _, t := range row.Paths[pathB].Runs {
		cpu += t.SekishoCPU
		wall += t.Wall
		n += t.Bytes
	}
	if n == 0 {
		return 0, 0, false
	}
	return cpu.Seconds() / (float64(n) / (1 << 30)), cpu.Seconds() / wall.Seconds(), true
}

type transferSet struct {
	Runs       []transfer `json:"runs"`
	MiBps      summary    `json:"mib_per_s"`
	Failures   int        `json:"failures"`
	FirstError string     `json:"first_error,omitempty"`
}

func (s *transferSet) add(t transfer, err error) {
	if err != nil {
		if s.Failures == 0 {
			s.FirstError = err.Error()
		}
		s.Failures++
		return
	}
	s.Runs = append(s.Runs, t)
}

type recordingRow struct {
	Channel      string  `json:"channel"`
	PayloadBytes int64   `json:"payload_bytes"`
	Apparent     int64   `json:"apparent_bytes"`
	Disk         int64   `json:"disk_bytes"`
	PerPayload   float64 `json:"disk_bytes_per_payload_byte"`
	MBps         float64 `json:"mib_per_s,omitempty"`
	// Exact is set for the channels recorded as exact bytes (the
	// downloads' exec stdout, the uploads' SFTP), not as terminal text.
	Exact bool `json:"exact_bytes"`
}

// bar is one of the targets and whether this run met it.
type bar struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
	// NotJudged says the run measured it where it cannot be judged.
	NotJudged bool `json:"not_judged,omitempty"`
}

func machineInfo(ctx context.Context) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	m.MemTotal = procField("/proc/meminfo", "MemTotal")
	m.LoadStart = loadavg()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	// ssh -V prints on stderr.
	if out, err := exec.CommandContext(ctx, "ssh", "-V").CombinedOutput(); err == nil {
		m.OpenSSH = strings.TrimSpace(string(out))
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(file, key string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// gitCommit names the sekisho source measured, "+dirty" if it has
// uncommitted changes.
func gitCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--", "cmd", "broker", "session", "recording").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

// computeBars checks the targets: connection setup through
// sekisho ≤ 0.8 × ProxyJump (median), Vault signature included;
// throughput through sekisho with recording on ≥ 1.0 × ProxyJump for both
// ciphers (both directions here).
func (r *results) computeBars() {
	if r.Setup == nil { // -cluster-only
		return
	}
	a, b := r.Setup[pathA].Summary.Median, r.Setup[pathB].Summary.Median
	got := ratio(b, a)
	sb := bar{Name: "connection setup", Want: "B/A median ≤ 0.80", Got: got, Met: got > 0 && got <= 0.8}
	switch {
	case got == 0:
		sb.Detail = "not measured: a path failed"
	case sb.Met:
		sb.Detail = fmt.Sprintf("met: B %.0f ms vs A %.0f ms, B/A = %.2f (%.0f ms below the bar of %.0f ms)", b, a, got, 0.8*a-b, 0.8*a)
	default:
		sb.Detail = fmt.Sprintf("missed: B %.0f ms vs A %.0f ms, B/A = %.2f; B would need %.0f ms less (the bar is %.0f ms)", b, a, got, b-0.8*a, 0.8*a)
	}
	if r.SameKexRatioBA > 0 {
		sb.Detail += fmt.Sprintf("; with %s on every leg B/A = %.2f", r.Settings.SameKex, r.SameKexRatioBA)
	}
	r.Bars = append(r.Bars, sb)
	for _, c := range r.Settings.Ciphers {
		tb := bar{Name: "throughput " + c, Want: "B/A median ≥ 1.00, download and upload", Met: true}
		var parts []string
		worst := 0.0
		for _, row := range r.Throughput {
			if row.Cipher != c {
				continue
			}
			if row.RatioBA == 0 {
				tb.Met = false
				parts = append(parts, row.Direction+" not measured")
				continue
			}
			if worst == 0 || row.RatioBA < worst {
				worst = row.RatioBA
			}
			if row.RatioBA < 1 {
				tb.Met = false
			}
			parts = append(parts, fmt.Sprintf("%s %.2f × A (%.0f vs %.0f MiB/s)", row.Direction, row.RatioBA,
				row.Paths[pathB].MiBps.Median, row.Paths[pathA].MiBps.Median))
		}
		tb.Got = worst
		switch {
		case tb.Met:
			tb.Detail = "met: " + strings.Join(parts, ", ")
		case worst > 0:
			tb.Detail = fmt.Sprintf("missed: %s; B would need %.1f× its throughput", strings.Join(parts, ", "), 1/worst)
		default:
			tb.Detail = "missed: " + strings.Join(parts, ", ")
		}
		r.Bars = append(r.Bars, tb)
	}
	r.Bars = append(r.Bars, r.loadBars()...)
}

// printTables writes the results as Markdown tables, ready for
// docs/BENCHMARKS.md.
func (r *results) printTables(w io.Writer) {
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s, %s; sekisho %s; %s\n\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.OpenSSH, r.Machine.Go, r.Settings.SekishoCommit, r.Date)
	if r.Setup != nil {
		r.printComparison(w)
	}
	if r.Cluster != nil {
		r.Cluster.printCluster(w, r.Machine.CPUs)
	}
	fmt.Fprintf(w, "\nRun took %s; load average %s at the start, %s at the end.\n", r.Elapsed, r.Machine.LoadStart, r.Machine.LoadEnd)
}

// printComparison writes the tables of parts 1 to 4 and the bars.
func (r *results) printComparison(w io.Writer) {
	fmt.Fprintf(w, "Connection setup: `ssh HOST true`, a fresh connection each time, OpenSSH's defaults, ms\n\n")
	printSetup(w, r.Setup)
	fmt.Fprintf(w, "\nB/A = %s, B/D = %s, J/A = %s, J/B = %s (medians)\n\n", fmtRatio(r.SetupRatioBA), fmtRatio(r.SetupRatioBD),
		fmtRatio(r.SetupRatioJA), fmtRatio(r.SetupRatioJB))
	if r.SetupSameKex != nil {
		fmt.Fprintf(w, "Connection setup with KexAlgorithms %s on every leg, ms\n\n", r.Settings.SameKex)
		printSetup(w, r.SetupSameKex)
		fmt.Fprintf(w, "\nB/A = %s, B/D = %s, J/A = %s, J/B = %s (medians)\n\n", fmtRatio(r.SameKexRatioBA), fmtRatio(r.SameKexRatioBD),
			fmtRatio(setupRatio(r.SetupSameKex, pathJ, pathA)), fmtRatio(setupRatio(r.SetupSameKex, pathJ, pathB)))
	}

	fmt.Fprintf(w, "Throughput: %s per run, MiB/s, median [min–max] of %d runs\n\n", sizeString(r.Settings.Bytes), r.Settings.Reps)
	fmt.Fprintf(w, "| transfer | cipher | A | B | D | B/A | B/D |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, row := range r.Throughput {
		fmt.Fprintf(w, "| %s | %s |", row.Direction, shortCipher(row.Cipher))
		for _, p := range paths {
			s := row.Paths[p]
			cell := fmt.Sprintf(" %.0f [%.0f–%.0f]", s.MiBps.Median, s.MiBps.Min, s.MiBps.Max)
			if s.MiBps.N == 0 {
				cell = " failed"
			} else if s.Failures > 0 {
				cell += fmt.Sprintf(" (%d failed)", s.Failures)
			}
			fmt.Fprintf(w, "%s |", cell)
		}
		fmt.Fprintf(w, " %s | %s |\n", fmtRatio(row.RatioBA), fmtRatio(row.RatioBD))
	}
	fmt.Fprintf(w, "\nsekisho's own CPU time during B's transfers (the bastion process; 2 CPUs = 2 s per second):\n\n")
	fmt.Fprintf(w, "| transfer | cipher | CPU s per GiB | CPU s per wall s |\n|---|---|--:|--:|\n")
	for _, row := range r.Throughput {
		if perGiB, perWall, ok := row.sekishoCPU(); ok {
			fmt.Fprintf(w, "| %s | %s | %.1f | %.2f |\n", row.Direction, shortCipher(row.Cipher), perGiB, perWall)
		}
	}

	fmt.Fprintf(w, "\nRecording on disk (B):\n\n| channel | payload | on disk (du) | on disk per payload byte |\n|---|--:|--:|--:|\n")
	for _, rr := range r.Recording {
		fmt.Fprintf(w, "| %s | %s | %s | %.2f |\n", rr.Channel, sizeString(rr.PayloadBytes), sizeString(rr.Disk), rr.PerPayload)
	}

	r.printLoad(w)

	fmt.Fprintf(w, "\nBars (from the issue):\n\n")
	for _, b := range r.Bars {
		mark := "MISSED"
		switch {
		case b.NotJudged:
			mark = "NOT JUDGED"
		case b.Met:
			mark = "MET"
		}
		fmt.Fprintf(w, "- %s (%s): **%s** — %s\n", b.Name, b.Want, mark, b.Detail)
	}
	r.printTargets(w)
}

func printSetup(w io.Writer, m map[path]*setupResult) {
	fmt.Fprintf(w, "| path | runs | median (p50) | p99 | min | max | failed |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range setupPaths {
		s := m[p]
		if s == nil {
			continue // a result of a run before path J existed
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %d |\n", p, s.Summary.N, s.Summary.Median, s.Summary.P99, s.Summary.Min, s.Summary.Max, s.Failures)
	}
}

// setupRatio is the ratio of p's median setup over q's in m; 0 when
// either is missing.
func setupRatio(m map[path]*setupResult, p, q path) float64 {
	if m[p] == nil || m[q] == nil {
		return 0
	}
	return ratio(m[p].Summary.Median, m[q].Summary.Median)
}

func fmtRatio(x float64) string {
	if x == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", x)
}

func shortCipher(c string) string { return strings.SplitN(c, "@", 2)[0] }

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}

// printLoad writes the tables of parts 3 and 4, those that ran.
func (r *results) printLoad(w io.Writer) {
	if l := r.Settings.Load; l != nil && l.SekishoNice != 0 {
		fmt.Fprintf(w, "\nIn the parts below, sekisho's scheduler autogroup ran at nice %d (-sekisho-nice).\n", l.SekishoNice)
	}
	if len(r.Echo) > 0 {
		fmt.Fprintf(w, "\nConcurrent interactive sessions: a pty running cat per session, one keystroke each every %s (random offsets) for %.0f s; echo latency from writing the byte to reading its echo, ms. CPUs used and waiting for a CPU are CPU seconds per second (the machine has %d CPUs); other is the kernel's own work and any other process\n\n",
			keystrokeEvery, r.Echo[0].WindowS, r.Machine.CPUs)
		printEchoTable(w, r.Echo)
		fmt.Fprintf(w, "\nAdded by sekisho (B − D):")
		for i, row := range r.Echo {
			sep := ";"
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(w, "%s %d sessions p50 %+.2f ms, p99 %+.2f ms", sep, row.Sessions, row.AddedP50MS, row.AddedP99MS)
		}
		fmt.Fprintf(w, "\n\nsekisho with B's sessions open: RSS, Go heap + stacks and goroutines per session are the growth from the previous row's end of window (for the first, from before the first session) per session added; CPU in the window:\n\n")
		fmt.Fprintf(w, "| sessions | RSS from → to | RSS per session | heap + stacks per session | goroutines per session | threads | CPU per keystroke | CPU per session | disk: writes/s, flushes/s (ms each) |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, row := range r.Echo {
			b, c := row.Paths[pathB], row.Sekisho
			if b == nil || c == nil {
				continue
			}
			fmt.Fprintf(w, "| %d | %s → %s | %.0f KiB | %.0f KiB | %.1f | %d | %.0f µs | %.2f%% of a CPU | %s |\n", row.Sessions,
				sizeString(c.FromRSS), sizeString(c.ToRSS), c.RSS/1024, c.HeapStack/1024, c.Goroutines, c.Threads, c.CPUPerKeystrokeUS, 100*c.CPUPerSession, b.Disk.cell())
		}
	}
	r.printEchoPinned(w)
	if i := r.Idle; i != nil {
		fmt.Fprintf(w, "\nIdle connections: %d command logins to sekisho (authenticated, no target, no channel) held for %.0f s; per connection: the growth from half of them open to all, per connection\n\n", i.Connections, i.HoldS)
		fmt.Fprintf(w, "| opened (failed) | open in | alive at the end | RSS before → held → end | RSS per connection | heap + stacks per connection | goroutines per connection | threads | fds (limit) | CPU in the hold |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		var perRSS, perHeap, perG float64
		if c := i.PerConn; c != nil {
			perRSS, perHeap, perG = c.RSS, c.HeapStack, c.Goroutines
		}
		fmt.Fprintf(w, "| %d (%d) | %.1f s | %d | %s → %s → %s | %.1f KiB | %.1f KiB | %.1f | %d | %d (%d) | %.1f s |\n", i.Opened, i.Failed, i.OpenS, i.Alive,
			sizeString(i.Before.RSS), sizeString(i.Open.RSS), sizeString(i.End.RSS), perRSS/1024, perHeap/1024, perG, i.End.Threads, i.End.FDs, i.FDLimit, i.SekishoCPU)
		if s := i.Setup; s != nil {
			fmt.Fprintf(w, "\n`ssh B true` while they were held: median %.1f ms, p99 %.1f ms (%d runs, %d failed); %s × part 1's median\n",
				s.Summary.Median, s.Summary.P99, s.Summary.N, s.Failures, fmtRatio(i.SetupRatio))
		}
	}
	if c := r.Certs; c != nil {
		what := "exec " + r.Settings.Load.CPSCommand + ", exit status"
		if r.Settings.Load.CPSCommand == "" {
			what = "open a session channel, nothing started on the target"
		}
		fmt.Fprintf(w, "\nCertificate issuance: workers each connecting through B back to back (connect, %s, close); Vault sign latency from sekisho's cert.issued events (sign_ms: key generation and Vault call)\n\n", what)
		fmt.Fprintf(w, "| workers | connections/s | completed (failed) | connection p50 | p99 | Vault sign p50 | p99 | max | CPU per connection: sekisho | Vault | target sshd | CPUs used: load generator, sekisho, target sshd, other |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, run := range c.Runs {
			fmt.Fprintf(w, "| %d | %.1f | %d (%d) | %.0f ms | %.0f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %s |\n", run.Workers, run.PerSecond, run.Completed, run.Failed,
				run.LatencyMS.P50, run.LatencyMS.P99, run.SignMS.P50, run.SignMS.P99, run.SignMS.Max, run.SekishoCPUMS, run.VaultCPUMS, run.TargetCPUMS, run.CPU.cells())
		}
		q := c.Sequential
		fmt.Fprintf(w, "\nOne connection at a time (parts 1–2, %d certificates): Vault sign p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", q.N, q.P50, q.P99, q.Max)
	}
	for _, e := range r.LoadErrors {
		fmt.Fprintf(w, "\n**Not finished:** %s\n", e)
	}
	if len(r.LoadTimes) > 0 {
		fmt.Fprintf(w, "\nTime taken:")
		for i, t := range r.LoadTimes {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(w, "%s %s %s", sep, t.Part, t.Took)
		}
		fmt.Fprintln(w)
	}
}

// printEchoTable writes the echo latency and who used the CPUs, per N
// and path.
func printEchoTable(w io.Writer, rows []*echoRow) {
	fmt.Fprintf(w, "| sessions | path | open (failed) | opened per s | keystrokes (lost) | p50 | p90 | p99 | p99.9 | max | CPUs used: load generator, sekisho, target sshd, other | waiting for a CPU: load generator, sekisho |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		for _, p := range []path{pathD, pathB} {
			e := row.Paths[p]
			if e == nil {
				continue
			}
			l := e.LatencyMS
			fmt.Fprintf(w, "| %d | %s | %d (%d) | %.1f | %d (%d) | %.2f | %.2f | %.2f | %.2f | %.1f | %s | %.2f, %.2f |\n", row.Sessions, p, e.Opened, e.Failed,
				e.OpenRate, e.Keystrokes, e.Lost, l.P50, l.P90, l.P99, l.P999, l.Max, e.CPU.cells(), e.CPU.ClientWait, e.CPU.SekishoWait)
		}
	}
}

// printEchoPinned writes the echo test with sekisho on a CPU of its own
// next to the one where all share the CPUs, and what /proc showed of
// the pinning.
func (r *results) printEchoPinned(w io.Writer) {
	pe := r.EchoPinned
	switch {
	case pe == nil:
		return
	case pe.Skipped != "":
		fmt.Fprintf(w, "\nThe echo test with sekisho on a CPU of its own did not run: %s.\n", pe.Skipped)
		return
	case len(pe.Rows) == 0:
		return
	}
	fmt.Fprintf(w, "\nThe same with **sekisho alone on CPU %s; the load generator, the target sshd (listener and sessions), Vault and the jump sshd on CPU %s** "+
		"(sched_setaffinity on every thread, set before the first session and again once each step's sessions were open; other processes on the machine were not pinned). D ran pinned the same way, so that B − D compares like with like. "+
		"sekisho's GOMAXPROCS during B's windows (go_sched_gomaxprocs_threads): %s (with GOMAXPROCS not set, the Go runtime follows the CPUs its affinity allows, looking about once a second).\n\n",
		pe.SekishoCPUs, pe.OtherCPUs, intsString(pinnedGOMAXPROCS(pe.Rows)))
	printEchoTable(w, pe.Rows)
	fmt.Fprintf(w, "\nAdded by sekisho (B − D), ms, with all sharing the CPUs and with sekisho on CPU %s alone:\n\n", pe.SekishoCPUs)
	fmt.Fprintf(w, "| sessions | shared: p50 | shared: p99 | sekisho alone: p50 | sekisho alone: p99 |\n|--:|--:|--:|--:|--:|\n")
	for _, pr := range pe.Rows {
		shared := "n/a | n/a"
		for _, sr := range r.Echo {
			if sr.Sessions == pr.Sessions {
				shared = fmt.Sprintf("%+.2f | %+.2f", sr.AddedP50MS, sr.AddedP99MS)
			}
		}
		fmt.Fprintf(w, "| %d | %s | %+.2f | %+.2f |\n", pr.Sessions, shared, pr.AddedP50MS, pr.AddedP99MS)
	}
	fmt.Fprintf(w, "\nThe pinning as /proc showed it once each step's sessions were open (Cpus_allowed_list: threads):\n\n")
	for _, row := range pe.Rows {
		for _, p := range []path{pathD, pathB} {
			if e := row.Paths[p]; e != nil && e.Affinity != nil {
				verdict := "as planned"
				if !e.Affinity.AsPlanned {
					verdict = "**not as planned**"
				}
				fmt.Fprintf(w, "- %s, %d sessions: %s; %s\n", p, row.Sessions, e.Affinity, verdict)
			}
		}
	}
	if c := pe.Restored; c != nil {
		verdict := "every party on every CPU again"
		if !c.AsPlanned {
			verdict = "**not every party on every CPU again**"
		}
		fmt.Fprintf(w, "- at the end, CPUs given back: %s; %s\n", c, verdict)
	}
}

// pinnedGOMAXPROCS returns the values of sekisho's GOMAXPROCS seen in B's
// windows.
func pinnedGOMAXPROCS(rows []*echoRow) []int {
	var out []int
	for _, row := range rows {
		if b := row.Paths[pathB]; b != nil {
			for _, s := range []*procSnapshot{b.Open, b.End} {
				if s != nil && s.GOMAXPROCS > 0 && !slices.Contains(out, s.GOMAXPROCS) {
					out = append(out, s.GOMAXPROCS)
				}
			}
		}
	}
	return out
}

func intsString(xs []int) string {
	if len(xs) == 0 {
		return "not known"
	}
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.Itoa(x))
	}
	return strings.Join(parts, ", then ")
}

// loadBars checks the targets of parts 3 and 4: with 1,000 concurrent
// recorded sessions, echo p99 through sekisho at most 5 ms above direct
// and sekisho's memory under 200 KB per session; 10,000 idle connections
// under 2 GB RSS. KB and GB are read as 1000 and 10⁹ bytes, the stricter
// reading.
func (r *results) loadBars() []bar {
	var bars []bar
	if row := barRow(r.Echo); row != nil {
		bars = append(bars, echoBar("concurrent sessions: echo latency", row))
		at := row.at()
		b := row.Paths[pathB]
		mb := bar{Name: "concurrent sessions: memory", Want: "sekisho RSS growth < 200 KB (200,000 bytes) per session with 1,000 sessions"}
		if c := row.Sekisho; c != nil && row.complete() {
			mb.Got = c.RSS
			mb.Met = c.RSS < 200e3 && row.Sessions >= 1000
			verdict := "missed"
			if mb.Met {
				verdict = "met"
			}
			mb.Detail = fmt.Sprintf("%s: %.0f KB per session (RSS %s → %s for %d more sessions, up to %d; Go heap + stacks %.0f KB per session, %.1f goroutines per session)%s",
				verdict, c.RSS/1e3, sizeString(c.FromRSS), sizeString(c.ToRSS), c.Added, b.Opened, c.HeapStack/1e3, c.Goroutines, at)
		} else {
			mb.Detail = "not measured" + at
		}
		bars = append(bars, mb)
	}
	if pe := r.EchoPinned; pe != nil {
		if row := barRow(pe.Rows); row != nil {
			bars = append(bars, echoBar(fmt.Sprintf("concurrent sessions: echo latency, sekisho alone on CPU %s, the others on CPU %s", pe.SekishoCPUs, pe.OtherCPUs), row))
		}
	}
	if i := r.Idle; i != nil {
		ib := bar{Name: "idle connections: memory", Want: "sekisho RSS < 2 GB (2·10⁹ bytes) with 10,000 idle connections", Got: float64(i.End.RSS)}
		at := ""
		if i.Connections != 10000 {
			at = fmt.Sprintf(" (measured with %d connections, not the bar's 10,000)", i.Connections)
		}
		switch {
		case i.Opened != i.Connections || i.Alive != i.Connections:
			ib.Detail = fmt.Sprintf("not measured: %d of %d opened, %d alive at the end%s", i.Opened, i.Connections, i.Alive, at)
		default:
			ib.Met = i.End.RSS < 2e9 && i.Connections >= 10000
			verdict := "missed"
			if ib.Met {
				verdict = "met"
			}
			ib.Detail = fmt.Sprintf("%s: %s after %.0f s held (%s before), %.1f KB per connection%s; `ssh B true` median %.0f ms meanwhile (%s × part 1)",
				verdict, sizeString(i.End.RSS), i.HoldS, sizeString(i.Before.RSS), i.PerConn.RSS/1e3, at, i.Setup.Summary.Median, fmtRatio(i.SetupRatio))
		}
		bars = append(bars, ib)
	}
	return bars
}

// barRow is the row of the echo test the bars judge: 1,000 sessions, or
// the most measured if there is none.
func barRow(rows []*echoRow) *echoRow {
	var row *echoRow
	for _, er := range rows {
		if row == nil || er.Sessions == 1000 || (row.Sessions != 1000 && er.Sessions > row.Sessions) {
			row = er
		}
	}
	return row
}

// at says that a row is not the bars' 1,000 sessions.
func (row *echoRow) at() string {
	if row.Sessions == 1000 {
		return ""
	}
	return fmt.Sprintf(" (measured at %d sessions, not the bar's 1,000)", row.Sessions)
}

// complete reports whether every session opened on both paths and typed.
func (row *echoRow) complete() bool {
	b, d := row.Paths[pathB], row.Paths[pathD]
	return b != nil && d != nil && b.Opened == row.Sessions && d.Opened == row.Sessions && b.LatencyMS.N > 0 && d.LatencyMS.N > 0
}

// saturatedReferenceMS is the direct path's echo p99 beyond which the run
// judges nothing: on a host with a CPU to spare a pty echoes within a
// millisecond or two, so a reference this slow waited for a CPU, and B − D
// then measures the load generator's and the target's queue, not sekisho.
const saturatedReferenceMS = 50

// saturated says why B − D of the row cannot be judged, or "".
func (row *echoRow) saturated() string {
	d := row.Paths[pathD]
	if d == nil || d.LatencyMS.P99 <= saturatedReferenceMS {
		return ""
	}
	return fmt.Sprintf("the direct reference itself had an echo p99 of %.0f ms (over %d ms): the CPU the load generator and the target shared was saturated", d.LatencyMS.P99, saturatedReferenceMS)
}

// echoBar judges a row of the echo test: B − D echo p99 below 5 ms with
// 1,000 recorded sessions.
func echoBar(name string, row *echoRow) bar {
	eb := bar{Name: name, Want: "B − D echo p99 < 5 ms with 1,000 recorded sessions", Got: row.AddedP99MS}
	if !row.complete() {
		eb.Detail = "not measured: not every session opened on both paths" + row.at()
		return eb
	}
	b, d := row.Paths[pathB], row.Paths[pathD]
	if why := row.saturated(); why != "" {
		eb.NotJudged = true
		eb.Detail = fmt.Sprintf("not judged: %s; p99 B %.2f ms vs D %.2f ms%s", why, b.LatencyMS.P99, d.LatencyMS.P99, row.at())
		return eb
	}
	eb.Met = row.AddedP99MS < 5 && row.Sessions >= 1000
	verdict := "missed"
	if eb.Met {
		verdict = "met"
	}
	eb.Detail = fmt.Sprintf("%s: p99 B %.2f ms vs D %.2f ms, %+.2f ms (p50 %+.2f ms)%s; %d of %d keystrokes lost through B",
		verdict, b.LatencyMS.P99, d.LatencyMS.P99, row.AddedP99MS, row.AddedP50MS, row.at(), b.Lost, b.Keystrokes)
	return eb
}

// cell shows the disk's writes and flushes per second.
func (d *diskIO) cell() string {
	if d == nil {
		return "no block device"
	}
	return fmt.Sprintf("%.0f, %.0f (%.2f ms)", d.WritesPerS, d.FlushesPerS, d.FlushMS)
}

// cells shows the CPUs used by each party (Vault counts as other: it
// matters only in part 4, which shows it per connection).
func (u cpuUse) cells() string {
	return fmt.Sprintf("%.2f, %.2f, %.2f, %.2f", u.Client, u.Sekisho, u.Target, u.Other+u.Vault)
}
