package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// loadOptions are the flags of parts 3 and 4 (concurrency.go, certs.go).
type loadOptions struct {
	Echo       []int         `json:"echo_sessions"` // empty: no echo test
	EchoWindow time.Duration `json:"echo_window_ns"`
	// EchoPinned runs the echo test again with sekisho on a CPU of its
	// own (affinity.go).
	EchoPinned bool          `json:"echo_pinned"`
	Idle       int           `json:"idle_connections"` // 0: no idle test
	IdleHold   time.Duration `json:"idle_hold_ns"`
	IdleSetups int           `json:"idle_setups"`
	CPSWorkers []int         `json:"cps_workers"` // empty: no issuance test
	CPSWindow  time.Duration `json:"cps_window_ns"`
	CPSCommand string        `json:"cps_command"` // empty: the session channel only
	// SekishoNice, when not 0, is the nice value given to sekisho's
	// scheduler autogroup for these parts (see setAutogroupNice).
	SekishoNice int `json:"sekisho_autogroup_nice,omitempty"`
}

// intList parses "100,1000"; "" is an empty list.
func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want a comma-separated list of positive numbers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func (o loadOptions) any() bool { return len(o.Echo) > 0 || o.Idle > 0 || len(o.CPSWorkers) > 0 }

// loadParts runs parts 3 (concurrency: echo, idle connections) and 4
// (certificate issuance), each as its flags ask, into res.
func (e *env) loadParts(ctx context.Context, res *results, o loadOptions) error {
	if !o.any() {
		return nil
	}
	began := time.Now()
	res.Settings.Load = &o
	if o.SekishoNice != 0 {
		if err := setAutogroupNice(e.state.PID, o.SekishoNice); err != nil {
			return err
		}
		logf("sekisho's scheduler autogroup runs at nice %d", o.SekishoNice)
	}
	g, err := e.goClients()
	if err != nil {
		return err
	}
	if len(o.Echo) > 0 {
		t := time.Now()
		logf("concurrency: %v pty sessions per path (D, then B), a keystroke each every %s for %s", o.Echo, keystrokeEvery, o.EchoWindow)
		res.Echo, err = e.echoTest(ctx, g, o.Echo, o.EchoWindow, nil)
		if err := res.loadFailed(ctx, "echo test", err); err != nil {
			return err
		}
		res.LoadTimes = append(res.LoadTimes, partTime{"echo", time.Since(t).Round(time.Second).String()})
		if o.EchoPinned {
			t := time.Now()
			logf("concurrency again, sekisho on a CPU of its own and everything else on the others")
			res.EchoPinned, err = e.echoPinnedTest(ctx, g, o.Echo, o.EchoWindow)
			if err := res.loadFailed(ctx, "echo test, sekisho on its own CPU", err); err != nil {
				return err
			}
			if p := res.EchoPinned; p != nil && p.Skipped != "" {
				logf("  skipped: %s", p.Skipped)
			}
			res.LoadTimes = append(res.LoadTimes, partTime{"echo with sekisho on its own CPU", time.Since(t).Round(time.Second).String()})
		}
	}
	if o.Idle > 0 {
		t := time.Now()
		logf("idle connections: %d command logins held for %s, %d `ssh B true` meanwhile", o.Idle, o.IdleHold, o.IdleSetups)
		var part1 float64
		if s := res.Setup[pathB]; s != nil {
			part1 = s.Summary.Median
		}
		res.Idle, err = e.idleTest(ctx, g, o.Idle, o.IdleHold, o.IdleSetups, part1)
		if err := res.loadFailed(ctx, "idle test", err); err != nil {
			return err
		}
		res.LoadTimes = append(res.LoadTimes, partTime{"idle", time.Since(t).Round(time.Second).String()})
	}
	if len(o.CPSWorkers) > 0 {
		t := time.Now()
		what := "exec " + o.CPSCommand
		if o.CPSCommand == "" {
			what = "open a session channel"
		}
		logf("certificate issuance: connect, %s, close through B with %v workers, %s each", what, o.CPSWorkers, o.CPSWindow)
		res.Certs, err = e.certTest(ctx, g, o.CPSWorkers, o.CPSWindow, o.CPSCommand, began)
		if err := res.loadFailed(ctx, "certificate issuance", err); err != nil {
			return err
		}
		res.LoadTimes = append(res.LoadTimes, partTime{"certificate issuance", time.Since(t).Round(time.Second).String()})
	}
	return nil
}

// loadFailed notes a part that could not finish (a limit, a drain that
// timed out) in the results, so that the parts before it are still
// reported; it returns an error only when the run was interrupted.
func (r *results) loadFailed(ctx context.Context, part string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", part, err)
	}
	logf("  %s: %v", part, err)
	r.LoadErrors = append(r.LoadErrors, part+": "+err.Error())
	return nil
}

// setAutogroupNice sets the nice value of the scheduler autogroup of
// process pid (sched(7)). The kernel shares the CPUs between autogroups,
// one per session, and every sshd session of the targets is one: with
// hundreds of them, sekisho (one autogroup) gets a small share however
// much it needs, which a bastion on a host of its own would not suffer. A
// negative value (as root) gives it a larger share; the other parties are
// left as they are.
func setAutogroupNice(pid, nice int) error {
	p := fmt.Sprintf("/proc/%d/autogroup", pid)
	if err := os.WriteFile(p, []byte(strconv.Itoa(nice)), 0o644); err != nil {
		return fmt.Errorf("autogroup nice %d for sekisho: %w (are scheduler autogroups on, and is this root?)", nice, err)
	}
	return nil
}

// partTime is how long a part took.
type partTime struct {
	Part string `json:"part"`
	Took string `json:"took"`
}
