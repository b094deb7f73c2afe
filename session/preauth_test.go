package session

import (
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// closer records that a pending connection was closed to make room.
type closer struct{ closed bool }

func (c *closer) Close() error { c.closed = true; return nil }

func TestPreauthLimits(t *testing.T) {
	p := newPreauth(3, 4, 100)
	var places []*pendingConn
	for range 3 {
		pc, _, why := p.admit("10.0.0.1", &closer{})
		if pc == nil {
			t.Fatalf("admit(10.0.0.1) refused: %s", why)
		}
		places = append(places, pc)
	}
	pc, _, why := p.admit("10.0.0.1", &closer{})
	if pc != nil || !strings.Contains(why, "max_unauthenticated_per_source") || !strings.Contains(why, "10.0.0.1") {
		t.Fatalf("fourth from one source: %v %q; want refused naming the per-source limit", pc, why)
	}
	other, _, _ := p.admit("10.0.0.2", &closer{})
	if other == nil {
		t.Fatal("another source refused under the global limit")
	}
	// All four places are taken: a second from 10.0.0.2 takes the place
	// of the oldest from 10.0.0.1, which holds more.
	second, ev, why := p.admit("10.0.0.2", &closer{})
	if second == nil || ev != places[0] {
		t.Fatalf("second from 10.0.0.2 with all places taken: %v, closed %v, %q; want the oldest from 10.0.0.1 closed", second, ev, why)
	}
	p.done(places[0]) // its handshake fails
	// A third from 10.0.0.2 would make it hold the most: refused.
	pc, ev, why = p.admit("10.0.0.2", &closer{})
	if pc != nil || ev != nil || !strings.Contains(why, "(ssh.max_unauthenticated)") {
		t.Fatalf("third from 10.0.0.2 with all places taken: %v %v %q; want refused naming the global limit", pc, ev, why)
	}
	p.done(second)
	third, _, why := p.admit("10.0.0.3", &closer{})
	if third == nil {
		t.Fatalf("after one finished, a new source refused: %s", why)
	}
	for _, pc := range []*pendingConn{places[1], places[2], other, third} {
		p.done(pc)
	}
	if p.total != 0 || len(p.perSource) != 0 {
		t.Fatalf("after all finished: total %d, sources %v", p.total, p.perSource)
	}
	hardening.Report(t, "21", "unauthenticated connections against limits of 3 per source and 4 in all: the 4th from one source refused naming the per-source limit, a newcomer takes the heaviest source's oldest place, one that would become the heaviest refused naming the global limit; every place given back")
}

// When every place is taken, a newcomer from a lightly used source takes
// the place of the oldest pending connection of the heaviest source.
func TestPreauthMakesRoomFromTheHeaviestSource(t *testing.T) {
	p := newPreauth(50, 4, 100)
	conns := map[*pendingConn]*closer{}
	admit := func(h string) *pendingConn {
		t.Helper()
		c := &closer{}
		pc, ev, why := p.admit(h, c)
		if pc == nil {
			t.Fatalf("admit(%s) refused: %s", h, why)
		}
		conns[pc] = c
		if ev != nil {
			ev.nc.Close()
		}
		return pc
	}
	flood := []*pendingConn{admit("attacker"), admit("attacker"), admit("attacker")}
	admit("other")
	tech := admit("technician")
	if !conns[flood[0]].closed || conns[flood[1]].closed {
		t.Fatal("the attacker's oldest connection was not the one closed to make room")
	}
	if p.total != 4 || p.perSource["attacker"].Len() != 2 {
		t.Fatalf("after making room: total %d, attacker holds %d; want 4 and 2", p.total, p.perSource["attacker"].Len())
	}
	// The evicted connection's handshake fails and gives its place back:
	// nothing is counted twice.
	p.done(flood[0])
	if p.total != 4 {
		t.Fatalf("done on an evicted connection changed the count to %d", p.total)
	}
	admit("fourth")
	if !conns[flood[1]].closed {
		t.Fatal("with the attacker holding 2 places, a newcomer closed nothing")
	}
	// Every source holds one place: the oldest of all goes.
	admit("fifth")
	if !conns[flood[2]].closed {
		t.Fatal("with every source holding one place, the oldest connection was not the one closed")
	}
	for pc := range conns {
		p.done(pc)
	}
	if p.total != 0 || len(p.perSource) != 0 {
		t.Fatalf("after all finished: total %d, sources %v", p.total, p.perSource)
	}
	if conns[tech].closed {
		t.Fatal("the technician's connection was closed although older ones were pending")
	}
}

func TestPreauthRefusalsAuditedOncePerWindow(t *testing.T) {
	p := newPreauth(1, 1, 100)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	if n := p.refusal("h"); n != 1 {
		t.Fatalf("first refusal: report %d, want 1", n)
	}
	for range 99 {
		if n := p.refusal("h"); n != 0 {
			t.Fatalf("refusal inside the window reported (%d)", n)
		}
	}
	if n := p.refusal("other"); n != 1 {
		t.Fatalf("another source's first refusal: report %d, want 1", n)
	}
	now = now.Add(auditEvery)
	if n := p.refusal("h"); n != 100 {
		t.Fatalf("after the window: report %d, want 100 (99 held back and this one)", n)
	}
	hardening.Report(t, "24", "101 pre-auth refusals from one source and 1 from another: 3 audit events, the first of each source at once and 99 held back, then one counting 100 after the %s window", auditEvery)
}

func TestPreauthAuthFailuresBlockTheSourceForTheWindow(t *testing.T) {
	p := newPreauth(50, 1000, 3)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	for range 3 {
		pc, _, why := p.admit("bad", &closer{})
		if pc == nil {
			t.Fatalf("refused before the failures: %s", why)
		}
		p.done(pc)
		p.failed("bad")
	}
	pc, _, why := p.admit("bad", &closer{})
	if pc != nil || !strings.Contains(why, "max_auth_failures_per_source") || !strings.Contains(why, "3 authentication attempts from bad") {
		t.Fatalf("after 3 failures: %v %q; want refused naming the limit", pc, why)
	}
	good, _, _ := p.admit("good", &closer{})
	if good == nil {
		t.Fatal("another source refused")
	}
	p.done(good)
	now = now.Add(failWindow)
	if pc, _, why := p.admit("bad", &closer{}); pc == nil {
		t.Fatalf("after the window: refused: %s", why)
	}
}
