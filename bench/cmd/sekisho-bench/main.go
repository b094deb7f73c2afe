// Command sekisho-bench compares, in one run on one machine, three ways
// for an OpenSSH client to reach the same real sshd target on loopback:
//
//	A  ssh -J through an OpenSSH sshd jump host
//	B  through sekisho, with recording on and a Vault certificate signed
//	   per connection (the demo: `sekisho demo`, its dev Vault and targets)
//	D  directly (reference)
//
// It measures connection setup (`ssh HOST true`), bulk throughput both
// ways for each cipher, and what B's recordings take on disk, with the
// runs of the three paths interleaved so that noise hits all of them.
// Then, with many connections from an x/crypto/ssh load generator in this
// process: concurrent interactive sessions on B and D (echo latency,
// sekisho's memory, goroutines and CPU per session; then the echo again
// with sekisho alone on one CPU and the other parties on the others),
// idle authenticated connections held to sekisho, and certificate
// issuance (connections per second through B, Vault sign latency from the
// audit log). Last, several nodes: the same short sessions through one
// node on SQLite, one node on PostgreSQL and three nodes sharing
// PostgreSQL, with the three-node cluster's setup time and a check of the
// register. It prints Markdown
// tables and writes the results as JSON. `make bench` runs it;
// docs/BENCHMARKS.md describes the method and the last results.
//
// Usage, from the repository root after `make build`:
//
//	go run ./bench/cmd/sekisho-bench [-setup-runs 50] [-reps 3] [-bytes 1073741824] [-out bench/results/latest.json]
//	    [-concurrency 100,1000] [-echo-window 10s] [-echo-pinned=true] [-idle 10000] [-idle-hold 60s] [-cps-workers 4,16] [-cps-window 15s]
//	    [-cluster-sessions 1000] [-cluster-rounds 5] [-cluster-workers 4] [-cluster-only]
//
// BENCH_BYTES sets the default of -bytes, for quick runs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sekisho-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	defBytes := int64(1 << 30)
	if v := os.Getenv("BENCH_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1<<20 {
			return fmt.Errorf("BENCH_BYTES=%q: want a number of bytes, at least 1048576", v)
		}
		defBytes = n
	}
	fs := flag.NewFlagSet("sekisho-bench", flag.ContinueOnError)
	sekishoBin := fs.String("sekisho", "bin/sekisho", "sekisho binary (its dev Vault, bin/devvault, is found next to it)")
	setupRuns := fs.Int("setup-runs", 50, "connection setups per path")
	reps := fs.Int("reps", 3, "transfers per path, cipher and direction")
	nBytes := fs.Int64("bytes", defBytes, "bytes per transfer (default 1 GiB, or $BENCH_BYTES)")
	ptyBytes := fs.Int64("pty-bytes", 64<<20, "terminal output of the recording measurement")
	cipherList := fs.String("ciphers", "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com", "ciphers for the throughput runs")
	out := fs.String("out", "bench/results/latest.json", "JSON results file (empty: none)")
	sameKex := fs.String("same-kex", "curve25519-sha256", "a key exchange for a second connection-setup series with the same kex on every leg (empty: none); sekisho offers no sntrup761x25519, OpenSSH 9 prefers it")
	workdir := fs.String("workdir", "", "where the work directory (the demo, hence sekisho's recordings) is made (default: $TMPDIR or /tmp)")
	keep := fs.Bool("keep", false, "keep the work directory (demo, logs, configs) for inspection")
	hold := fs.Bool("hold", false, "set up, print how to reach each path, and wait for Ctrl-C without measuring")
	echoList := fs.String("concurrency", "100,1000", "concurrent pty sessions per path for the echo test, comma-separated (empty: none)")
	echoWindow := fs.Duration("echo-window", 10*time.Second, "how long the concurrent sessions type, at each number of sessions")
	echoPinned := fs.Bool("echo-pinned", true, "run the echo test again with sekisho alone on one CPU and the load generator, target sshd and Vault on the others (needs 2 CPUs)")
	idle := fs.Int("idle", 10000, "idle authenticated connections to sekisho to hold (0: none)")
	idleHold := fs.Duration("idle-hold", 60*time.Second, "how long the idle connections are held")
	cpsList := fs.String("cps-workers", "4,16", "concurrent workers of the certificate-issuance runs, comma-separated (empty: none)")
	cpsWindow := fs.Duration("cps-window", 15*time.Second, "how long each certificate-issuance run connects")
	cpsCommand := fs.String("cps-command", "true", "the command each certificate-issuance connection runs (empty: open the session channel only)")
	clusterSessions := fs.Int("cluster-sessions", 1000, "sessions per run of the several-nodes part: one node on SQLite, one and three nodes on PostgreSQL (0: none)")
	clusterRounds := fs.Int("cluster-rounds", 5, "rounds in which the several-nodes runs take turns")
	clusterWorkers := fs.Int("cluster-workers", 4, "concurrent workers of the several-nodes runs")
	clusterCommand := fs.String("cluster-command", "", "the command each session of the several-nodes runs executes (empty: open the session channel only)")
	clusterOnly := fs.Bool("cluster-only", false, "set up the demo and run only the several-nodes part")
	sekishoNice := fs.Int("sekisho-nice", 0, "nice value for sekisho's scheduler autogroup in the load parts, e.g. -19 to give it the CPU share of a host of its own (0: as is)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*sekishoBin); err != nil {
		return fmt.Errorf("%s is missing: run `make build` first", *sekishoBin)
	}
	bin, err := filepath.Abs(*sekishoBin)
	if err != nil {
		return err
	}
	ciphers := strings.Split(*cipherList, ",")
	cluster := clusterOptions{Sessions: *clusterSessions, Rounds: *clusterRounds, Workers: *clusterWorkers, Command: *clusterCommand}
	if *clusterOnly && cluster.Sessions < 1 {
		return fmt.Errorf("-cluster-only needs -cluster-sessions above 0")
	}
	if cluster.Sessions > 0 && (cluster.Workers < 1 || cluster.Rounds < 1 || cluster.Rounds > cluster.Sessions) {
		return fmt.Errorf("-cluster-workers and -cluster-rounds must be at least 1, and -cluster-rounds at most -cluster-sessions")
	}
	load := loadOptions{EchoWindow: *echoWindow, EchoPinned: *echoPinned, Idle: *idle, IdleHold: *idleHold, IdleSetups: 20, CPSWindow: *cpsWindow, CPSCommand: *cpsCommand, SekishoNice: *sekishoNice}
	if load.Echo, err = intList(*echoList); err != nil {
		return fmt.Errorf("-concurrency %w", err)
	}
	if load.CPSWorkers, err = intList(*cpsList); err != nil {
		return fmt.Errorf("-cps-workers %w", err)
	}

	began := time.Now()
	res := &results{
		Date:    began.UTC().Format(time.RFC3339),
		Machine: machineInfo(ctx),
		Settings: settings{SetupRuns: *setupRuns, Reps: *reps, Bytes: *nBytes, PTYBytes: *ptyBytes, Ciphers: ciphers,
			SameKex: *sameKex, Technician: technician, WorkDir: *workdir, Target: targetName, SekishoCommit: gitCommit(ctx)},
	}

	dir, err := os.MkdirTemp(*workdir, "sekisho-bench-")
	if err != nil {
		return err
	}
	if *keep {
		logf("work directory %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logf("starting the demo (dev Vault, sshd targets, sekisho) and a jump-host sshd")
	variants := ciphers
	if *sameKex != "" {
		variants = append(slices.Clone(ciphers), "kex:"+*sameKex)
	}
	e, err := setUp(ctx, dir, bin, variants)
	defer e.tearDown()
	if err != nil {
		return err
	}
	if *hold {
		cfg := e.configs[""]
		fmt.Printf("A: ssh -F %s -J %s %s\nB: ssh -F %s %s\nD: ssh -F %s %s\n(Ctrl-C ends)\n",
			cfg, hostJump, hostTarget, cfg, hostSekisho, cfg, hostTarget)
		<-ctx.Done()
		return nil
	}
	if !*clusterOnly {
		if err := e.comparison(ctx, res, load); err != nil {
			return err
		}
	}
	var clusterErr error
	if cluster.Sessions > 0 {
		res.Settings.Cluster = &cluster
		res.Cluster, clusterErr = e.clusterPart(ctx, cluster)
		if clusterErr != nil {
			if ctx.Err() != nil {
				return clusterErr
			}
			res.Cluster.Error = clusterErr.Error()
			logf("several nodes: %v", clusterErr)
		}
	}

	res.computeBars()
	res.computeTargets()
	res.Machine.LoadEnd = loadavg()
	res.Elapsed = time.Since(began).Round(time.Second).String()
	fmt.Println()
	res.printTables(os.Stdout)
	if *out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", *out)
	}
	// A several-nodes part whose sessions failed, or that the register
	// contradicts, fails the run once its results are written.
	return clusterErr
}

// comparison compares the three paths (connection setup, throughput,
// the recording's size), then runs the load parts.
func (e *env) comparison(ctx context.Context, res *results, load loadOptions) error {
	st := res.Settings
	upload, err := makeUploadFile(e.dir, st.Bytes)
	if err != nil {
		return err
	}

	// One untimed connection per path: caches, the Vault token, the
	// host certificate, and a check that every path works before
	// anything is timed.
	for _, p := range setupPaths {
		if _, err := e.setupOnce(ctx, p, ""); err != nil {
			logf("warm-up: %v", err)
		}
	}

	logf("connection setup: %d × %d paths, interleaved, OpenSSH's default key exchange", st.SetupRuns, len(setupPaths))
	res.Setup, err = e.setupSeries(ctx, st.SetupRuns, "")
	if err != nil {
		return err
	}
	res.SetupRatioBA = ratio(res.Setup[pathB].Summary.Median, res.Setup[pathA].Summary.Median)
	res.SetupRatioBD = ratio(res.Setup[pathB].Summary.Median, res.Setup[pathD].Summary.Median)
	res.SetupRatioJA = ratio(res.Setup[pathJ].Summary.Median, res.Setup[pathA].Summary.Median)
	res.SetupRatioJB = ratio(res.Setup[pathJ].Summary.Median, res.Setup[pathB].Summary.Median)
	if st.SameKex != "" {
		logf("connection setup: %d × %d paths, interleaved, every leg with %s", st.SetupRuns, len(setupPaths), st.SameKex)
		res.SetupSameKex, err = e.setupSeries(ctx, st.SetupRuns, "kex:"+st.SameKex)
		if err != nil {
			return err
		}
		res.SameKexRatioBA = ratio(res.SetupSameKex[pathB].Summary.Median, res.SetupSameKex[pathA].Summary.Median)
		res.SameKexRatioBD = ratio(res.SetupSameKex[pathB].Summary.Median, res.SetupSameKex[pathD].Summary.Median)
	}

	logf("throughput: %s × %d runs × %d ciphers × 2 directions × 3 paths, interleaved", sizeString(st.Bytes), st.Reps, len(st.Ciphers))
	rows := map[string]*throughputRow{}
	for _, dirn := range []string{"download", "upload"} {
		for _, c := range st.Ciphers {
			row := &throughputRow{Direction: dirn, Cipher: c, Paths: map[path]*transferSet{}}
			for _, p := range paths {
				row.Paths[p] = &transferSet{}
			}
			rows[dirn+c] = row
			res.Throughput = append(res.Throughput, row)
		}
	}
	var recExec, recSFTP []*diskUse
	round := 0
	for range st.Reps {
		for _, c := range st.Ciphers {
			for _, dirn := range []string{"download", "upload"} {
				for _, p := range rotation(round) {
					if err := ctx.Err(); err != nil {
						return err
					}
					t, err := e.timedTransfer(ctx, p, dirn, c, upload, st.Bytes, res.Setup[p].Summary.Median)
					rows[dirn+c].Paths[p].add(t, err)
					if err != nil {
						logf("  %s %s %s: %v", dirn, shortCipher(c), p, err)
						continue
					}
					logf("  %s %-10s %s: %6.0f MiB/s (%.1f s)", dirn, shortCipher(c), p, t.MiBps(), t.Wall.Seconds())
					if t.Recording != nil && dirn == "download" {
						recExec = append(recExec, t.Recording)
					} else if t.Recording != nil {
						recSFTP = append(recSFTP, t.Recording)
					}
				}
				round++
			}
		}
	}
	for _, row := range res.Throughput {
		for _, p := range paths {
			s := row.Paths[p]
			var xs []float64
			for _, t := range s.Runs {
				xs = append(xs, t.MiBps())
			}
			s.MiBps = summarize(xs)
		}
		row.RatioBA = ratio(row.Paths[pathB].MiBps.Median, row.Paths[pathA].MiBps.Median)
		row.RatioBD = ratio(row.Paths[pathB].MiBps.Median, row.Paths[pathD].MiBps.Median)
	}

	logf("recording: a terminal printing %s through sekisho", sizeString(st.PTYBytes))
	before, err := e.listSessions()
	if err != nil {
		return err
	}
	term, wall, err := e.ptyOnce(ctx, st.PTYBytes)
	if err != nil {
		logf("  %v", err)
	} else if u, err := e.newRecording(ctx, before, false); err != nil {
		logf("  %v", err)
	} else {
		res.Recording = append(res.Recording, recordingRow{Channel: "terminal (pty) output, base64 text", PayloadBytes: term,
			Apparent: u.Apparent, Disk: u.Disk, PerPayload: float64(u.Disk) / float64(term), MBps: float64(term) / (1 << 20) / wall.Seconds()})
	}
	res.Recording = appendRecording(res.Recording, "exec stdout (the downloads), exact bytes", recExec, st.Bytes)
	res.Recording = appendRecording(res.Recording, "sftp upload (scp), exact bytes", recSFTP, st.Bytes)

	return e.loadParts(ctx, res, load)
}

// setupSeries times runs connection setups per path with a client
// variant, interleaved.
func (e *env) setupSeries(ctx context.Context, runs int, variant string) (map[path]*setupResult, error) {
	res := map[path]*setupResult{}
	for _, p := range setupPaths {
		res[p] = &setupResult{}
	}
	for i := range runs {
		for _, p := range rotationOf(setupPaths, i) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			d, err := e.setupOnce(ctx, p, variant)
			res[p].add(d, err)
		}
	}
	for _, p := range setupPaths {
		s := res[p]
		s.Summary = summarize(s.SamplesMS)
		logf("  %s: median %.1f ms, %d failed %s", p, s.Summary.Median, s.Failures, s.FirstError)
	}
	return res, nil
}

// timedTransfer runs one download or upload; for B it also notes
// sekisho's CPU time and, once the session's recording is sealed, its
// size on disk (then removes it).
func (e *env) timedTransfer(ctx context.Context, p path, dirn, cipher, upload string, n int64, setupMS float64) (transfer, error) {
	var before map[string]bool
	var cpu0 time.Duration
	if p == pathB {
		var err error
		if before, err = e.listSessions(); err != nil {
			return transfer{}, err
		}
		if cpu0, err = e.sekishoCPU(); err != nil {
			return transfer{}, err
		}
	}
	var t transfer
	var err error
	if dirn == "download" {
		t, err = e.downloadOnce(ctx, p, cipher, n)
	} else {
		t, err = e.uploadOnce(ctx, p, cipher, upload, n, time.Duration(setupMS*float64(time.Millisecond)))
	}
	if p != pathB || err != nil {
		return t, err
	}
	if cpu1, cerr := e.sekishoCPU(); cerr == nil {
		t.SekishoCPU = cpu1 - cpu0
	}
	// Waiting for the seal is outside the timed part: the next run starts
	// on a quiet bastion.
	t.Recording, err = e.newRecording(ctx, before, true)
	return t, err
}

// appendRecording adds a row for the recordings of a channel recorded as
// exact bytes: their mean size, and the bytes on disk per payload byte.
func appendRecording(rows []recordingRow, channel string, uses []*diskUse, payload int64) []recordingRow {
	if len(uses) == 0 {
		return rows
	}
	var app, disk int64
	for _, u := range uses {
		app += u.Apparent
		disk += u.Disk
	}
	k := int64(len(uses))
	return append(rows, recordingRow{Channel: channel, PayloadBytes: payload, Apparent: app / k, Disk: disk / k,
		PerPayload: float64(disk) / float64(payload*k), Exact: true})
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
