package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// Part 4 of the benchmark: certificate issuance. sekisho gets a Vault
// certificate for every target connection; its cert.issued audit event
// says how long that took (sign_ms: the key generation and the Vault
// call). W workers each loop connect → session → exec true → exit status
// → close through B for a window: the connections per second sekisho
// sustains, each connection's latency, and the sign latency of the
// window's certificates from the audit log. With -cps-command '' the
// session channel is opened and the connection closed, with nothing
// started on the target: what sekisho and the target's sshd do per
// connection without the target's shell (and its rc files).

// cpsRun is one sustained-connections run.
type cpsRun struct {
	Workers    int     `json:"workers"`
	Command    string  `json:"command"` // empty: the session channel only
	WindowS    float64 `json:"window_s"`
	Completed  int     `json:"completed"` // finished within the window
	Failed     int     `json:"failed"`
	FirstError string  `json:"first_error,omitempty"`
	PerSecond  float64 `json:"connections_per_s"`
	// LatencyMS is connect to exit status, per connection.
	LatencyMS latencySummary `json:"connection_ms"`
	// SignMS is sign_ms of the certificates issued in the run.
	SignMS latencySummary `json:"vault_sign_ms"`
	// CPU is who kept the CPUs busy; then the CPU time per connection of
	// sekisho, the dev Vault and the target's sshd (with the processes
	// of its connections, shell and command included).
	CPU          cpuUse  `json:"cpus_used"`
	Disk         *diskIO `json:"disk,omitempty"`
	SekishoCPUMS float64 `json:"sekisho_cpu_ms_per_connection"`
	VaultCPUMS   float64 `json:"vault_cpu_ms_per_connection"`
	TargetCPUMS  float64 `json:"target_sshd_cpu_ms_per_connection"`

	began, ended time.Time
}

// certResults is part 4.
type certResults struct {
	// Sequential is sign_ms of every certificate of parts 1 and 2, where
	// connections came one at a time.
	Sequential latencySummary `json:"sequential_vault_sign_ms"`
	Runs       []*cpsRun      `json:"sustained"`
}

// certTest runs the sustained-connections runs and reads the sign
// latencies from sekisho's audit log; loadBegan is when the load parts
// began (the certificates before it are those of parts 1 and 2).
func (e *env) certTest(ctx context.Context, g *goClients, workers []int, window time.Duration, command string, loadBegan time.Time) (*certResults, error) {
	res := &certResults{}
	for _, w := range workers {
		before, err := e.listSessions()
		if err != nil {
			return res, err
		}
		r := e.sustain(ctx, g, w, window, command)
		res.Runs = append(res.Runs, r)
		logf("  %d workers: %.1f connections/s, connection p50 %.0f ms, p99 %.0f ms, %d failed %s",
			w, r.PerSecond, r.LatencyMS.P50, r.LatencyMS.P99, r.Failed, r.FirstError)
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := e.drain(ctx, before, true); err != nil {
			return res, err
		}
	}
	events, err := e.certEvents(ctx)
	if err != nil {
		return res, err
	}
	var seq []float64
	for _, ev := range events {
		if ev.At.Before(loadBegan) {
			seq = append(seq, ev.SignMS)
		}
	}
	res.Sequential = summarizeLatency(seq)
	for _, r := range res.Runs {
		var xs []float64
		for _, ev := range events {
			if !ev.At.Before(r.began) && !ev.At.After(r.ended) {
				xs = append(xs, ev.SignMS)
			}
		}
		r.SignMS = summarizeLatency(xs)
		logf("  %d workers: Vault sign p50 %.1f ms, p99 %.1f ms (%d certificates); one at a time (parts 1–2): p50 %.1f ms, p99 %.1f ms",
			r.Workers, r.SignMS.P50, r.SignMS.P99, r.SignMS.N, res.Sequential.P50, res.Sequential.P99)
	}
	return res, nil
}

// sustain has w workers connect through B back to back for window.
func (e *env) sustain(ctx context.Context, g *goClients, w int, window time.Duration, command string) *cpsRun {
	r := &cpsRun{Workers: w, Command: command, WindowS: window.Seconds()}
	var mu sync.Mutex
	var lat []float64
	var wg sync.WaitGroup
	cpu, disk := e.startCPU(), readDiskCounters(e.recordingsDir())
	r.began = time.Now()
	end := r.began.Add(window)
	for range w {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				err := connectOnce(ctx, g, command)
				done := time.Now()
				mu.Lock()
				switch {
				case err != nil:
					r.Failed++
					if r.FirstError == "" {
						r.FirstError = err.Error()
					}
				default:
					lat = append(lat, float64(done.Sub(t0).Microseconds())/1000)
					if !done.After(end) {
						r.Completed++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	cpu.stop()
	r.ended = time.Now()
	r.PerSecond = float64(r.Completed) / window.Seconds()
	r.LatencyMS = summarizeLatency(lat)
	r.CPU, r.Disk = cpu.Use, readDiskCounters(e.recordingsDir()).since(disk)
	if n := float64(len(lat)); n > 0 {
		r.SekishoCPUMS = float64(cpu.Parts[1].Milliseconds()) / n
		r.TargetCPUMS = float64(cpu.Parts[2].Milliseconds()) / n
		r.VaultCPUMS = float64(cpu.Parts[3].Milliseconds()) / n
	}
	return r
}

// connectOnce logs in through B, runs command (or only opens the session
// channel) and closes.
func connectOnce(ctx context.Context, g *goClients, command string) error {
	c, err := g.dial(ctx, loginTarget)
	if err != nil {
		return err
	}
	defer c.Close()
	t := time.AfterFunc(handshakeTimeout, func() { c.Close() })
	defer t.Stop()
	s, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if command == "" {
		return nil
	}
	if err := s.Run(command); err != nil {
		return fmt.Errorf("exec %s: %w", command, err)
	}
	return nil
}

// certEvent is a cert.issued audit event.
type certEvent struct {
	At     time.Time
	SignMS float64
}

// certEvents reads every cert.issued event from sekisho's audit log (its
// store, as `sekisho audit` prints it).
func (e *env) certEvents(ctx context.Context) ([]certEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, "audit", "--config", e.state.Config, "--limit", "100000000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var events []certEvent
	dec := json.NewDecoder(out)
	for {
		var ev struct {
			At     time.Time        `json:"at"`
			Kind   broker.EventKind `json:"kind"`
			Detail string           `json:"detail"`
		}
		if err := dec.Decode(&ev); err != nil {
			if !errors.Is(err, io.EOF) {
				cmd.Process.Kill()
				cmd.Wait()
				return nil, fmt.Errorf("sekisho audit: %w", err)
			}
			break
		}
		if ev.Kind != broker.EventCertIssued {
			continue
		}
		var d struct {
			SignMS *float64 `json:"sign_ms"`
		}
		if err := json.Unmarshal([]byte(ev.Detail), &d); err != nil || d.SignMS == nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("sekisho audit: cert.issued without sign_ms (%s): build a newer bin/sekisho", ev.Detail)
		}
		events = append(events, certEvent{At: ev.At, SignMS: *d.SignMS})
	}
	if err := cmd.Wait(); err != nil {
		return nil, runError("sekisho audit", err, stderr.b)
	}
	return events, nil
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
