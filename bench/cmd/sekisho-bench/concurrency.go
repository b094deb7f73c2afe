package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Part 3 of the benchmark: many interactive sessions at once, and many
// idle authenticated connections.
//
// Echo: for each path, D (direct) then B (sekisho, recording), sessions
// are opened up to each N in turn (100, then 900 more), each a pty
// running cat on the target: the echo of a keystroke comes from the
// target's terminal line discipline, as a shell's would in canonical
// mode. A session counts as open once cat itself has answered: the
// target's login shell runs the account's rc files first (here root's
// ~/.bashrc, which runs pyenv init: about 125 ms of CPU per session), and
// none may still run while latencies are measured. At most
// openConcurrency sessions are being opened at once (the target sshd's
// MaxStartups 10:30:100 drops unauthenticated connections beyond 10).
// Once N are open, each types one keystroke every 100 ms, from a random
// offset, for the window; the latency is from writing the byte to reading
// its echo. The load generator (this process), sekisho and the target's
// sessions share the machine's CPUs: each window notes who used how much
// (cpus_used), so that a saturated machine is not mistaken for a slow
// bastion.
//
// Idle: N command logins to sekisho (aiko, no target: authenticated, no
// channel, no recording) held open, while OpenSSH connection setups
// through B are timed.

const (
	// openConcurrency bounds the sessions being opened at once: below
	// the target sshd's MaxStartups start of 10.
	openConcurrency = 8
	// idleConcurrency bounds the handshakes in flight for command
	// logins: sekisho has no MaxStartups, and these reach no target.
	idleConcurrency = 32
	keystrokeEvery  = 100 * time.Millisecond
	keystroke       = 'k'
	syncByte        = '#'
	// maxTyped bounds the keystrokes a session types in all: they fill
	// one line of the terminal (cat gets no newline), whose buffer holds
	// 4095 bytes.
	maxTyped = 4000
	// drainTimeout bounds the wait for sessions to end after a phase.
	drainTimeout = 3 * time.Minute
)

// latencySummary is a summary with more tail percentiles.
type latencySummary struct {
	summary
	P90  float64 `json:"p90"`
	P999 float64 `json:"p99_9"`
}

func summarizeLatency(xs []float64) latencySummary {
	s := latencySummary{summary: summarize(xs)}
	if len(xs) > 0 {
		sorted := slices.Clone(xs)
		slices.Sort(sorted)
		s.P90, s.P999 = percentile(sorted, 90), percentile(sorted, 99.9)
	}
	return s
}

// echoPath is one path's echo test at one N.
type echoPath struct {
	Opened     int     `json:"opened"` // sessions open in the window
	Failed     int     `json:"failed"` // sessions that did not open
	FirstError string  `json:"first_error,omitempty"`
	OpenRate   float64 `json:"opened_per_s"` // of the sessions opened for this N
	Keystrokes int     `json:"keystrokes"`   // typed in the window
	Lost       int     `json:"lost"`         // typed, never echoed
	Unexpected int     `json:"unexpected_bytes,omitempty"`
	WriteErrs  int     `json:"write_errors,omitempty"`
	// LatencyMS is keystroke to echo, over every keystroke of the window.
	LatencyMS latencySummary `json:"echo_latency_ms"`
	// CPU is who kept the CPUs busy during the window; Disk what the
	// disk of the recordings did.
	CPU  cpuUse  `json:"cpus_used"`
	Disk *diskIO `json:"disk,omitempty"`
	// For B: sekisho before the first session of the path, with the N
	// sessions open (before the window) and at the end of the window; its
	// CPU time in the window.
	Before     *procSnapshot `json:"sekisho_before,omitempty"`
	Open       *procSnapshot `json:"sekisho_open,omitempty"`
	End        *procSnapshot `json:"sekisho_end,omitempty"`
	SekishoCPU float64       `json:"sekisho_cpu_s,omitempty"`
	// Affinity is what /proc showed of the parties' CPUs once the
	// sessions were open, in the run with sekisho on a CPU of its own.
	Affinity *affinityCheck `json:"affinity,omitempty"`
}

// echoRow is the echo test at one N.
type echoRow struct {
	Sessions int                `json:"sessions"`
	WindowS  float64            `json:"window_s"`
	Paths    map[path]*echoPath `json:"paths"`
	// AddedP50MS and AddedP99MS are B − D.
	AddedP50MS float64 `json:"added_p50_ms"`
	AddedP99MS float64 `json:"added_p99_ms"`
	// Sekisho is what one more open session costs sekisho: the growth
	// from the previous N's end of window (before the first session, for
	// the first N) to this one's, per session added. A step, not a total:
	// memory a Go process got back from earlier sessions (or part 2's
	// transfers) and has not returned to the kernel is reused without
	// growing its RSS, which would make the first sessions look cheap.
	Sekisho *perSession `json:"sekisho_per_session,omitempty"`
}

// perSession is sekisho's cost per session (or idle connection).
type perSession struct {
	Added      int     `json:"added"`            // sessions added between the snapshots
	FromRSS    int64   `json:"from_rss_bytes"`   // RSS at the first snapshot
	ToRSS      int64   `json:"to_rss_bytes"`     // and at the second
	RSS        float64 `json:"rss_bytes"`        // RSS growth / sessions
	HeapStack  float64 `json:"heap_stack_bytes"` // Go heap + stacks in use, growth / sessions
	Goroutines float64 `json:"goroutines"`       // goroutine growth / sessions
	Threads    int     `json:"threads"`          // sekisho's threads with them open
	// CPU in the window: per keystroke, and per session as a share of
	// one CPU.
	CPUPerKeystrokeUS float64 `json:"cpu_per_keystroke_us,omitempty"`
	CPUPerSession     float64 `json:"cpu_share_per_session,omitempty"`
}

// growth is sekisho's growth from one snapshot to another per session
// (or connection) added between them.
func growth(from, to *procSnapshot, n int) *perSession {
	if n <= 0 {
		return nil
	}
	k := float64(n)
	return &perSession{
		Added: n, FromRSS: from.RSS, ToRSS: to.RSS,
		RSS:        float64(to.RSS-from.RSS) / k,
		HeapStack:  float64(to.HeapInuse+to.StackInuse-from.HeapInuse-from.StackInuse) / k,
		Goroutines: float64(to.Goroutines-from.Goroutines) / k,
		Threads:    to.Threads,
	}
}

// echoTest runs the echo test at each N (ascending) on D, then B. With
// pin, the parties are pinned to their CPUs again once each step's
// sessions are open (pin.apply), and checked.
func (e *env) echoTest(ctx context.Context, g *goClients, ns []int, window time.Duration, pin *cpuPinning) ([]*echoRow, error) {
	ns = slices.Sorted(slices.Values(ns))
	if typed := len(ns) * int(window/keystrokeEvery); typed > maxTyped {
		return nil, fmt.Errorf("%d windows of %s type %d keystrokes per session, more than a terminal line holds (%d): shorten -echo-window", len(ns), window, typed, maxTyped)
	}
	if err := raiseOpenFiles(ns[len(ns)-1] + 1000); err != nil {
		return nil, err
	}
	var rows []*echoRow
	for _, n := range ns {
		rows = append(rows, &echoRow{Sessions: n, WindowS: window.Seconds(), Paths: map[path]*echoPath{}})
	}
	for _, p := range []path{pathD, pathB} {
		if err := e.echoPath(ctx, g, p, rows, window, pin); err != nil {
			return rows, err
		}
	}
	var prev *echoPath
	for _, row := range rows {
		b, d := row.Paths[pathB], row.Paths[pathD]
		if b == nil || d == nil {
			continue
		}
		from, added := b.Before, b.Opened
		if prev != nil {
			from, added = prev.End, b.Opened-prev.Opened
		}
		prev = b
		if b.LatencyMS.N > 0 && d.LatencyMS.N > 0 {
			row.AddedP50MS = b.LatencyMS.P50 - d.LatencyMS.P50
			row.AddedP99MS = b.LatencyMS.P99 - d.LatencyMS.P99
		}
		if from != nil && b.End != nil {
			row.Sekisho = growth(from, b.End, added)
			if row.Sekisho != nil && b.Keystrokes > 0 {
				row.Sekisho.CPUPerKeystrokeUS = b.SekishoCPU * 1e6 / float64(b.Keystrokes)
				row.Sekisho.CPUPerSession = b.SekishoCPU / window.Seconds() / float64(b.Opened)
			}
		}
	}
	return rows, nil
}

// echoSession is one open pty session typing keystrokes.
type echoSession struct {
	client *ssh.Client
	in     io.Writer
	out    io.Reader

	mu         sync.Mutex
	sent       []time.Time // keystrokes not yet echoed, oldest first
	latencies  []float64   // ms
	unexpected int
	writeErrs  int
	typed      int
}

// openEcho opens a session with a pty running cat and waits until cat
// runs and whatever the target printed first is behind.
func openEcho(ctx context.Context, g *goClients, p path) (*echoSession, error) {
	c, err := g.dial(ctx, loginFor(p))
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	// A session that does not answer in time is given up.
	t := time.AfterFunc(handshakeTimeout, func() { c.Close() })
	defer t.Stop()
	sess, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		return nil, fmt.Errorf("pty: %w", err)
	}
	in, err := sess.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := sess.Start("cat"); err != nil {
		return nil, fmt.Errorf("start cat: %w", err)
	}
	// A line: the terminal echoes it at once, cat prints it once the
	// shell's rc files have run and cat reads.
	if _, err := in.Write([]byte{syncByte, '\r'}); err != nil {
		return nil, err
	}
	buf := make([]byte, 256)
	for seen := 0; seen < 2; {
		k, err := out.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("waiting for cat: %w", err)
		}
		seen += bytes.Count(buf[:k], []byte{syncByte})
	}
	if !t.Stop() {
		return nil, errors.New("cat did not answer in time")
	}
	ok = true
	return &echoSession{client: c, in: in, out: out}, nil
}

// readEchoes pairs every echoed keystroke with the oldest one typed,
// until the session ends.
func (s *echoSession) readEchoes() {
	buf := make([]byte, 256)
	for {
		k, err := s.out.Read(buf)
		now := time.Now()
		s.mu.Lock()
		for _, b := range buf[:k] {
			if b == keystroke && len(s.sent) > 0 {
				s.latencies = append(s.latencies, float64(now.Sub(s.sent[0]).Microseconds())/1000)
				s.sent = s.sent[1:]
			} else {
				s.unexpected++
			}
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// typeKeys types a keystroke every keystrokeEvery from first until end.
func (s *echoSession) typeKeys(first, end time.Time) {
	t := time.NewTimer(time.Until(first))
	<-t.C
	tick := time.NewTicker(keystrokeEvery)
	defer tick.Stop()
	for now := first; now.Before(end); now = <-tick.C {
		s.mu.Lock()
		s.sent = append(s.sent, time.Now())
		s.typed++
		s.mu.Unlock()
		if _, err := s.in.Write([]byte{keystroke}); err != nil {
			s.mu.Lock()
			s.writeErrs++
			s.mu.Unlock()
			return
		}
	}
}

// reset forgets the last window's keystrokes.
func (s *echoSession) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent, s.latencies = nil, nil
	s.typed, s.unexpected, s.writeErrs = 0, 0, 0
}

func (s *echoSession) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// bounded runs f(0..n-1) with at most conc at once and returns how many
// failed and the first error.
func bounded(ctx context.Context, n, conc int, f func(i int) error) (failed int, first error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	for i := range n {
		if ctx.Err() != nil {
			mu.Lock()
			failed += n - i
			first = cmpErr(first, ctx.Err())
			mu.Unlock()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				failed++
				first = cmpErr(first, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed, first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// echoPath opens sessions on path p up to each row's N in turn, has
// them all type for the window at each, then closes them and waits until
// the target (and for B sekisho, whose recordings must be sealed) is done
// with them.
func (e *env) echoPath(ctx context.Context, g *goClients, p path, rows []*echoRow, window time.Duration, pin *cpuPinning) error {
	var before map[string]bool
	var base *procSnapshot
	if p == pathB {
		var err error
		if before, err = e.listSessions(); err != nil {
			return err
		}
		s, err := e.snapshot(ctx)
		if err != nil {
			return err
		}
		base = &s
	}
	var sessions []*echoSession
	var readers sync.WaitGroup
	defer func() {
		for _, s := range sessions {
			s.client.Close()
		}
		readers.Wait()
	}()
	for _, row := range rows {
		r := &echoPath{Before: base}
		row.Paths[p] = r
		more := make([]*echoSession, max(0, row.Sessions-len(sessions)))
		began := time.Now()
		var firstErr error
		r.Failed, firstErr = bounded(ctx, len(more), openConcurrency, func(i int) error {
			s, err := openEcho(ctx, g, p)
			more[i] = s
			return err
		})
		took := time.Since(began)
		if firstErr != nil {
			r.FirstError = firstErr.Error()
		}
		more = slices.DeleteFunc(more, func(s *echoSession) bool { return s == nil })
		r.OpenRate = float64(len(more)) / took.Seconds()
		for _, s := range more {
			readers.Go(s.readEchoes)
		}
		sessions = append(sessions, more...)
		r.Opened = len(sessions)
		logf("  %s: %d sessions open (%d more in %.1f s), %d failed %s", p, r.Opened, len(more), took.Seconds(), r.Failed, r.FirstError)
		if err := ctx.Err(); err != nil {
			return err
		}
		if pin != nil {
			if err := pin.apply(); err != nil {
				return err
			}
			c := pin.check(ctx, e, &pin.sekisho, &pin.others)
			r.Affinity = &c
			logf("  %s, %d sessions: %s", p, r.Opened, r.Affinity)
		}
		if err := e.typeWindow(ctx, p, sessions, window, r); err != nil {
			return err
		}
		logf("  %s, %d sessions: %d keystrokes, echo p50 %.2f ms, p99 %.2f ms, max %.1f ms, %d lost; CPUs used: load generator %.2f, sekisho %.2f, target %.2f, other %.2f",
			p, r.Opened, r.Keystrokes, r.LatencyMS.P50, r.LatencyMS.P99, r.LatencyMS.Max, r.Lost, r.CPU.Client, r.CPU.Sekisho, r.CPU.Target, r.CPU.Other)
	}
	for _, s := range sessions {
		s.client.Close()
	}
	readers.Wait()
	sessions = nil
	return e.drain(ctx, before, p == pathB)
}

// typeWindow has every session type for the window and notes the echo
// latencies (and for B, sekisho's state) in r.
func (e *env) typeWindow(ctx context.Context, p path, sessions []*echoSession, window time.Duration, r *echoPath) error {
	for _, s := range sessions {
		s.reset()
	}
	if p == pathB {
		s, err := e.snapshot(ctx)
		if err != nil {
			return err
		}
		r.Open = &s
	}
	var typists sync.WaitGroup
	start := time.Now().Add(200 * time.Millisecond)
	end := start.Add(window)
	for _, s := range sessions {
		first := start.Add(rand.N(keystrokeEvery))
		typists.Go(func() { s.typeKeys(first, end) })
	}
	t := time.NewTimer(time.Until(start))
	<-t.C
	cpu, disk := e.startCPU(), readDiskCounters(e.recordingsDir())
	typists.Wait()
	cpu.stop()
	r.CPU, r.Disk = cpu.Use, readDiskCounters(e.recordingsDir()).since(disk)
	if p == pathB {
		r.SekishoCPU = cpu.Parts[1].Seconds()
		s, err := e.snapshot(ctx)
		if err != nil {
			return err
		}
		r.End = &s
	}
	// The last echoes are waited for (a few seconds at most); the ones
	// that do not come are lost.
	poll(ctx, 5*time.Second, "the last echoes", func() (bool, error) {
		for _, s := range sessions {
			if s.pending() > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	var lat []float64
	for _, s := range sessions {
		s.mu.Lock()
		lat = append(lat, s.latencies...)
		r.Keystrokes += s.typed
		r.Lost += len(s.sent)
		r.Unexpected += s.unexpected
		r.WriteErrs += s.writeErrs
		s.mu.Unlock()
	}
	r.LatencyMS = summarizeLatency(lat)
	return ctx.Err()
}

// drain waits until the target sshd has no connection left and, for
// sessions through sekisho, until every recording made since before is
// sealed; it then removes those recordings.
func (e *env) drain(ctx context.Context, before map[string]bool, recorded bool) error {
	sshd := e.targetSSHD()
	err := poll(ctx, drainTimeout, "the target's sessions to end", func() (bool, error) {
		return sshd == 0 || len(children(sshd)) == 0, nil
	})
	if err != nil || !recorded {
		return err
	}
	var fresh []string
	err = poll(ctx, drainTimeout, "sekisho to seal the recordings", func() (bool, error) {
		now, err := e.listSessions()
		if err != nil {
			return false, err
		}
		fresh = fresh[:0]
		for d := range now {
			if before[d] {
				continue
			}
			fresh = append(fresh, d)
			if _, err := os.Stat(filepath.Join(e.recordingsDir(), d, "seal.json")); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, d := range fresh {
		if err := os.RemoveAll(filepath.Join(e.recordingsDir(), d)); err != nil {
			return err
		}
	}
	return nil
}

// targetSSHD returns the pid of the target's sshd listener (a child of
// the demo), 0 if it is not found.
func (e *env) targetSSHD() int {
	for _, t := range e.state.Targets {
		if t.Name == targetName && t.Config != "" {
			return childByCmdline(e.state.PID, t.Config)
		}
	}
	return 0
}

// idleResult is the idle-connections test.
type idleResult struct {
	Connections int     `json:"connections"`
	Opened      int     `json:"opened"`
	Failed      int     `json:"failed"`
	FirstError  string  `json:"first_error,omitempty"`
	OpenS       float64 `json:"open_seconds"`
	HoldS       float64 `json:"hold_seconds"`
	// Alive is how many answered a request at the end of the hold.
	Alive int `json:"alive_at_end"`
	// FDLimit is sekisho's open-file limit (soft).
	FDLimit int `json:"sekisho_fd_limit"`
	// sekisho before the first connection, with half of them open, with
	// all open, and at the end of the hold. PerConn is the growth from
	// half to all, per connection: memory kept from earlier parts is
	// reused by the first connections without growing the RSS.
	Before  procSnapshot `json:"sekisho_before"`
	Half    procSnapshot `json:"sekisho_half"`
	Open    procSnapshot `json:"sekisho_open"`
	End     procSnapshot `json:"sekisho_end"`
	PerConn *perSession  `json:"sekisho_per_connection,omitempty"`
	// SekishoCPU is sekisho's CPU time during the hold (the setups
	// below included).
	SekishoCPU float64 `json:"sekisho_cpu_s"`
	// Setup is OpenSSH's `ssh B true` while the connections are held,
	// and SetupRatio its median over part 1's.
	Setup      *setupResult `json:"setup_ms"`
	SetupRatio float64      `json:"setup_median_ratio_to_part1"`
}

// idleTest holds n authenticated command logins to sekisho for hold and
// times setups of path B meanwhile.
func (e *env) idleTest(ctx context.Context, g *goClients, n int, hold time.Duration, setups int, part1 float64) (*idleResult, error) {
	r := &idleResult{Connections: n, HoldS: hold.Seconds()}
	if err := raiseOpenFiles(n + 1000); err != nil {
		return r, err
	}
	lim, err := openFileLimit(e.state.PID)
	if err != nil {
		return r, err
	}
	r.FDLimit = lim
	if lim < n+500 {
		return r, fmt.Errorf("sekisho may open %d files, %d idle connections need more: raise its limit", lim, n)
	}
	if r.Before, err = e.snapshot(ctx); err != nil {
		return r, err
	}
	conns := make([]*ssh.Client, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	began := time.Now()
	half := n / 2
	open := func(from, to int) {
		failed, err := bounded(ctx, to-from, idleConcurrency, func(i int) error {
			c, err := g.dial(ctx, loginCommand)
			conns[from+i] = c
			return err
		})
		r.Failed += failed
		if err != nil && r.FirstError == "" {
			r.FirstError = err.Error()
		}
	}
	open(0, half)
	if r.Half, err = e.snapshot(ctx); err != nil {
		return r, err
	}
	opened := half - r.Failed
	open(half, n)
	r.OpenS = time.Since(began).Seconds()
	r.Opened = n - r.Failed
	logf("  %d idle connections open in %.1f s, %d failed %s", r.Opened, r.OpenS, r.Failed, r.FirstError)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.Open, err = e.snapshot(ctx); err != nil {
		return r, err
	}
	held := time.NewTimer(hold)
	defer held.Stop()
	cpu := e.startCPU()
	r.Setup = &setupResult{}
	for range setups {
		d, err := e.setupOnce(ctx, pathB, "")
		r.Setup.add(d, err)
	}
	r.Setup.Summary = summarize(r.Setup.SamplesMS)
	r.SetupRatio = ratio(r.Setup.Summary.Median, part1)
	logf("  B setups while they are held: median %.1f ms (part 1: %.1f ms), %d failed %s",
		r.Setup.Summary.Median, part1, r.Setup.Failures, r.Setup.FirstError)
	select {
	case <-held.C:
	case <-ctx.Done():
		return r, ctx.Err()
	}
	cpu.stop()
	r.SekishoCPU = cpu.Parts[1].Seconds()
	if r.End, err = e.snapshot(ctx); err != nil {
		return r, err
	}
	// Every connection still answers (sekisho refuses the global request,
	// which is an answer).
	var mu sync.Mutex
	bounded(ctx, len(conns), 64, func(i int) error {
		if conns[i] == nil {
			return nil
		}
		if _, _, err := conns[i].SendRequest("keepalive@openssh.com", true, nil); err != nil {
			return err
		}
		mu.Lock()
		r.Alive++
		mu.Unlock()
		return nil
	})
	r.PerConn = growth(&r.Half, &r.Open, r.Opened-opened)
	logf("  after %s: %d alive; sekisho RSS %s (%s before), %d goroutines, %d threads",
		hold, r.Alive, sizeString(r.End.RSS), sizeString(r.Before.RSS), r.End.Goroutines, r.End.Threads)

	for i, c := range conns {
		if c != nil {
			c.Close()
			conns[i] = nil
		}
	}
	// Until sekisho has let go of them (its goroutines back near where
	// they were).
	return r, poll(ctx, drainTimeout, "sekisho to close the idle connections", func() (bool, error) {
		m, err := e.scrapeMetrics(ctx)
		if err != nil {
			return false, err
		}
		return int(m["go_goroutines"]) <= r.Before.Goroutines+50, nil
	})
}
