package broker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestThrottleHoldsUnderParallelAttempts(t *testing.T) {
	var th throttle
	now := time.Now()
	var passed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if th.begin(now, "t:li", "s:192.0.2.1") {
				passed.Add(1) // and fails: the count stays
			}
		}()
	}
	wg.Wait()
	if n := passed.Load(); n != maxFailures {
		t.Errorf("%d parallel attempts were checked, want %d", n, maxFailures)
	}
	// A success is forgiven; failures expire after the window.
	var th2 throttle
	for i := 0; i < 10; i++ {
		at := now.Add(time.Duration(i) * time.Second)
		if !th2.begin(at, "t:aiko") {
			t.Fatalf("attempt %d refused although every earlier one succeeded", i)
		}
		th2.forgive(at, "t:aiko")
	}
	if !th.begin(now.Add(failureWindow+time.Second), "t:li", "s:192.0.2.1") {
		t.Error("failures did not expire after the window")
	}
	// Many technicians behind one address (an office): the address is
	// throttled only after maxSourceFailures, each technician after
	// maxFailures.
	var th3 throttle
	checked := 0
	for i := range 100 {
		if th3.begin(now, fmt.Sprintf("t:tech%d", i%50), "s:198.51.100.1") {
			checked++
		}
	}
	if checked != maxSourceFailures {
		t.Errorf("%d wrong codes of 50 technicians from one address were checked, want %d", checked, maxSourceFailures)
	}
	hardening.Report(t, "6", "300 parallel second-factor attempts for one technician and source: %d checked (the failure limit), %d refused; 10 successive successes never throttled; failures expire after the %s window", passed.Load(), 300-passed.Load(), failureWindow)
	hardening.Report(t, "24", "300 parallel wrong-code attempts from one source: only %d reach the code check, %d refused by the throttle for %s", passed.Load(), 300-passed.Load(), failureWindow)
}
