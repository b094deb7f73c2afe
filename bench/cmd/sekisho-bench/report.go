package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
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
	// SetupSameKex is the same with settings.same_kex on every leg.
	SetupSameKex   map[path]*setupResult `json:"setup_same_kex_ms,omitempty"`
	SameKexRatioBA float64               `json:"setup_same_kex_median_ratio_b_a,omitempty"`
	SameKexRatioBD float64               `json:"setup_same_kex_median_ratio_b_d,omitempty"`
	Throughput     []*throughputRow      `json:"throughput"`
	Recording      []recordingRow        `json:"recording"`
	Bars           []bar                 `json:"bars"`
	Elapsed        string                `json:"elapsed"`
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
}

// bar is one of the targets and whether this run met it.
type bar struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
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
}

// printTables writes the results as Markdown tables, ready for
// docs/BENCHMARKS.md.
func (r *results) printTables(w io.Writer) {
	fmt.Fprintf(w, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s, %s; sekisho %s; %s\n\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.OpenSSH, r.Machine.Go, r.Settings.SekishoCommit, r.Date)

	fmt.Fprintf(w, "Connection setup: `ssh HOST true`, a fresh connection each time, OpenSSH's defaults, ms\n\n")
	printSetup(w, r.Setup)
	fmt.Fprintf(w, "\nB/A = %s, B/D = %s (medians)\n\n", fmtRatio(r.SetupRatioBA), fmtRatio(r.SetupRatioBD))
	if r.SetupSameKex != nil {
		fmt.Fprintf(w, "Connection setup with KexAlgorithms %s on every leg, ms\n\n", r.Settings.SameKex)
		printSetup(w, r.SetupSameKex)
		fmt.Fprintf(w, "\nB/A = %s, B/D = %s (medians)\n\n", fmtRatio(r.SameKexRatioBA), fmtRatio(r.SameKexRatioBD))
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
		var cpu, wall time.Duration
		var n int64
		for _, t := range row.Paths[pathB].Runs {
			cpu += t.SekishoCPU
			wall += t.Wall
			n += t.Bytes
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.2f |\n", row.Direction, shortCipher(row.Cipher), cpu.Seconds()/(float64(n)/(1<<30)), cpu.Seconds()/wall.Seconds())
	}

	fmt.Fprintf(w, "\nRecording on disk (B):\n\n| channel | payload | on disk (du) | on disk per payload byte |\n|---|--:|--:|--:|\n")
	for _, rr := range r.Recording {
		fmt.Fprintf(w, "| %s | %s | %s | %.2f |\n", rr.Channel, sizeString(rr.PayloadBytes), sizeString(rr.Disk), rr.PerPayload)
	}

	fmt.Fprintf(w, "\nBars (from the issue):\n\n")
	for _, b := range r.Bars {
		mark := "MISSED"
		if b.Met {
			mark = "MET"
		}
		fmt.Fprintf(w, "- %s (%s): **%s** — %s\n", b.Name, b.Want, mark, b.Detail)
	}
	fmt.Fprintf(w, "\nRun took %s; load average %s at the start, %s at the end.\n", r.Elapsed, r.Machine.LoadStart, r.Machine.LoadEnd)
}

func printSetup(w io.Writer, m map[path]*setupResult) {
	fmt.Fprintf(w, "| path | runs | median (p50) | p99 | min | max | failed |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range paths {
		s := m[p]
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %d |\n", p, s.Summary.N, s.Summary.Median, s.Summary.P99, s.Summary.Min, s.Summary.Max, s.Failures)
	}
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
