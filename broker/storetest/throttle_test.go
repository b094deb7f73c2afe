package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// The second-factor limits: 5 wrong codes per technician, 30 per address,
// in 5 minutes.
const (
	perTechnician = 5
	perSource     = 30
	window        = 5 * time.Minute
)

func limits(tech, source string) []broker.FailureLimit {
	return []broker.FailureLimit{{Key: "t:" + tech, Max: perTechnician}, {Key: "s:" + source, Max: perSource}}
}

// A guesser gets as many tries through three nodes as through one, in
// turn or in parallel: the sixth wrong code of a technician is refused.
func TestFailureThrottleAcrossNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		nodes := []store{e.open(t), e.open(t), e.open(t)}
		now := e.base
		for _, tc := range []struct {
			name  string
			nodes []store
		}{{"one node", nodes[:1]}, {"three nodes", nodes}} {
			tech := "li-" + tc.name
			passed := 0
			for i := range 8 {
				ok, err := tc.nodes[i%len(tc.nodes)].BeginAttempt(ctx, limits(tech, "192.0.2.1"), now.Add(time.Duration(i)*time.Second), window)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					passed++
				}
				if want := i < perTechnician; ok != want {
					t.Errorf("%s: attempt %d counted %v, want %v", tc.name, i+1, ok, want)
				}
			}
			if passed != perTechnician {
				t.Errorf("%s: %d of 8 wrong codes checked, want %d", tc.name, passed, perTechnician)
			}
		}

		var checked atomic.Int32
		var wg sync.WaitGroup
		for i := range 300 {
			wg.Go(func() {
				ok, err := nodes[i%3].BeginAttempt(ctx, limits("aiko", "192.0.2.2"), now, window)
				if err != nil {
					t.Error(err)
				}
				if ok {
					checked.Add(1) // and wrong: the count stays
				}
			})
		}
		wg.Wait()
		if n := checked.Load(); n != perTechnician {
			t.Errorf("%d of 300 parallel attempts on 3 nodes were checked, want %d", n, perTechnician)
		}
		hardening.Report(t, "6", "%s: 300 parallel second-factor attempts for one technician spread over 3 nodes sharing the store: %d checked (the failure limit), %d refused; 8 in turn over 1 node or over 3: the 6th refused either way",
			e.name, checked.Load(), 300-checked.Load())
	})
}

// Failures expire after the window; an attempt forgiven (the right code)
// leaves no count; many technicians behind one address are held to the
// address's limit.
func TestFailureThrottleWindowAndForgiveness(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := t.Context()
		node1, node2 := e.open(t), e.open(t)
		now := e.base
		for i := range perTechnician {
			if ok, err := node1.BeginAttempt(ctx, limits("li", "192.0.2.1"), now.Add(time.Duration(i)*e.tick), window); err != nil || !ok {
				t.Fatalf("attempt %d: %v, %v", i+1, ok, err)
			}
		}
		if ok, _ := node2.BeginAttempt(ctx, limits("li", "198.51.100.9"), now.Add(window), window); ok {
			t.Error("a 6th attempt from another address, within the window, was counted")
		}
		// The first failure is out of the window a tick after it ends.
		if ok, err := node2.BeginAttempt(ctx, limits("li", "198.51.100.9"), now.Add(window+e.tick), window); err != nil || !ok {
			t.Errorf("after the first failure left the window: %v, %v; want counted", ok, err)
		}

		// Ten right codes in a row, each forgiven through the other node.
		for i := range 10 {
			at := now.Add(time.Duration(i) * time.Second)
			ok, err := node1.BeginAttempt(ctx, limits("aiko", "192.0.2.3"), at, window)
			if err != nil || !ok {
				t.Fatalf("attempt %d refused although every earlier one was forgiven: %v", i+1, err)
			}
			if err := node2.ForgiveAttempt(ctx, []string{"t:aiko", "s:192.0.2.3"}, at); err != nil {
				t.Fatal(err)
			}
		}

		// An office: 50 technicians behind one address, 2 wrong codes
		// each; the address is held after 30.
		checked := 0
		for i := range 100 {
			ok, err := []store{node1, node2}[i%2].BeginAttempt(ctx, limits(fmt.Sprintf("tech%d", i%50), "203.0.113.1"), now, window)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				checked++
			}
		}
		if checked != perSource {
			t.Errorf("%d wrong codes of 50 technicians from one address were checked, want %d", checked, perSource)
		}
		hardening.Report(t, "24", "%s: wrong codes counted in the shared store: 100 from 50 technicians behind one address over 2 nodes, %d checked (the address's limit); 10 right codes in a row never throttled; failures expire after the %s window",
			e.name, checked, window)
	})
}
