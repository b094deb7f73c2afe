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
	// A fourth from the same source takes the place of its oldest.
	fourth, ev, why := p.admit("10.0.0.1", &closer{})
	if fourth == nil || ev != places[0] || why != gaveWayPerSource {
		t.Fatalf("fourth from one source: %v, closed %v, %q; want the source's oldest closed for the per-source limit", fourth, ev, why)
	}
	p.done(places[0]) // its handshake fails
	places = append(places[1:], fourth)
	other, _, _ := p.admit("10.0.0.2", &closer{})
	if other == nil {
		t.Fatal("another source refused under the global limit")
	}
	// All four places are taken: a second from 10.0.0.2 takes the place
	// of the oldest from 10.0.0.1, which holds more.
	second, ev, why := p.admit("10.0.0.2", &closer{})
	if second == nil || ev != places[0] || why != gaveWayTotal {
		t.Fatalf("second from 10.0.0.2 with all places taken: %v, closed %v, %q; want the oldest from 10.0.0.1 closed", second, ev, why)
	}
	p.done(places[0])
	// A third from 10.0.0.2 would make it hold the most: refused.
	pc, ev, why := p.admit("10.0.0.2", &closer{})
	if pc != nil || ev != nil || !strings.Contains(why, "(ssh.max_unauthenticated)") {
		t.Fatalf("third from 10.0.0.2 with all places taken: %v %v %q; want refused naming the global limit", pc, ev, why)
	}
	p.done(second)
	third, _, why := p.admit("10.0.0.3", &closer{})
	if third == nil {
		t.Fatalf("after one finished, a new source refused: %s", why)
	}
	// Every place of a source has a technician typing a code: nothing
	// gives way, and the newcomer is refused naming the per-source limit.
	q := newPreauth(2, 10, 100)
	for range 2 {
		pc, _, _ := q.admit("10.0.0.9", &closer{})
		pc.advance(stageProven, time.Now())
	}
	if pc, ev, why := q.admit("10.0.0.9", &closer{}); pc != nil || ev != nil || !strings.Contains(why, "max_unauthenticated_per_source") || !strings.Contains(why, "10.0.0.9") {
		t.Fatalf("third from a source whose two places both wait for a code: %v %v %q; want refused naming the per-source limit", pc, ev, why)
	}
	for _, pc := range []*pendingConn{places[1], places[2], other, third} {
		p.done(pc)
	}
	if p.total != 0 || len(p.perSource) != 0 {
		t.Fatalf("after all finished: total %d, sources %v", p.total, p.perSource)
	}
	hardening.Report(t, "21", "unauthenticated connections against limits of 3 per source and 4 in all: the 4th from one source takes the place of that source's oldest, a newcomer from another takes the heaviest source's oldest place, one that would become the heaviest refused naming the global limit; a source whose every place waits for a second-factor code refused naming the per-source limit; every place given back")
}

// natFlood plays one address (an office behind NAT) at its 50 places:
// a technician typing a second-factor code, and a flood whose
// connections reach flood and stop there, dialling again, once a
// millisecond, each one sekisho closes. A technician of the office then
// logs in: its version comes at once, then a step of the handshake (key
// exchange done, key proven) every rtt. It reports whether the login
// got through, and checks that the typist was never closed.
func natFlood(t *testing.T, flood stage, rtt time.Duration) bool {
	t.Helper()
	const places = 50
	p := newPreauth(places, 1000, 100)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	closed := map[*pendingConn]bool{}
	admit := func() *pendingConn {
		t.Helper()
		pc, ev, why := p.admit("203.0.113.7", &closer{})
		if pc == nil {
			t.Fatalf("admit refused: %s", why)
		}
		if ev != nil {
			closed[ev] = true
			p.done(ev) // its handshake fails
		}
		return pc
	}
	dial := func() {
		now = now.Add(time.Millisecond)
		admit().advance(flood, now)
	}
	typist := admit()
	typist.advance(stageProven, now)
	for range places - 1 {
		dial()
	}
	tech := admit()
	tech.advance(stageSpoke, now)
	steps := []stage{stageKeyed, stageProven}
	next := now.Add(rtt)
	for {
		if closed[typist] {
			t.Fatal("the connection typing a code was closed to make room")
		}
		if closed[tech] {
			return false
		}
		if !now.Before(next) {
			if len(steps) == 0 {
				p.done(tech) // authenticated, past the decision
				return true
			}
			tech.advance(steps[0], now)
			steps, next = steps[1:], now.Add(rtt)
		}
		dial()
	}
}

// One address at its places, flooded by connections that stall (silent,
// after their version, after a key exchange) and are dialled again as
// they are closed: a login from that address gets through a silent
// flood however slow its round trips, and through one that speaks when
// each of its steps comes sooner than the flood can dial the address's
// places; a connection typing a code never gives way; and bytes without
// a step of the protocol are not progress.
func TestPreauthSourceAtItsLimitMakesRoomFromItself(t *testing.T) {
	for _, tc := range []struct {
		flood stage
		rtt   time.Duration
		in    bool
	}{
		{stageSilent, 20 * time.Millisecond, true},
		{stageSilent, 2 * time.Second, true},
		{stageSpoke, 45 * time.Millisecond, true},
		{stageKeyed, 20 * time.Millisecond, true},
		// A flood that speaks and dials 50 places in less than the
		// login's round trip pushes it out: the bound, in the audit
		// count.
		{stageKeyed, 80 * time.Millisecond, false},
	} {
		if got := natFlood(t, tc.flood, tc.rtt); got != tc.in {
			t.Errorf("flood stalling at stage %d dialling 1000/s, login with a step every %s: got through %v, want %v", tc.flood, tc.rtt, got, tc.in)
		}
	}
	var pc pendingConn
	pc.advance(stageSpoke, time.Unix(1, 0))
	pc.advance(stageSpoke, time.Unix(2, 0)) // more bytes
	if pc.progressed.Load() != time.Unix(1, 0).UnixNano() {
		t.Error("bytes at the same stage counted as progress")
	}
	hardening.Report(t, "21", "one address at its 50 places, flooded by connections dialled again 1000 times a second as they are closed: through a silent flood a login gets through with round trips of 20 ms or 2 s; through one stalling after its version or its key exchange, a login taking a step every 20 ms or 45 ms gets through, one every 80 ms is pushed out (the bound: the address's places per round trip); a connection typing a second-factor code never gives way; bytes without a step of the protocol are not progress")
}

// A connection typing a second-factor code does not give way to the
// global limit either: the heaviest source with one that can give way does.
func TestPreauthGlobalLimitSparesTypists(t *testing.T) {
	p := newPreauth(50, 4, 100)
	var typists []*closer
	for range 3 {
		c := &closer{}
		pc, _, _ := p.admit("office", c)
		pc.advance(stageProven, time.Now())
		typists = append(typists, c)
	}
	quiet := &closer{}
	p.admit("other", quiet)
	pc, ev, why := p.admit("newcomer", &closer{})
	if pc == nil || ev == nil || ev.host != "other" {
		t.Fatalf("newcomer with every place taken, the heaviest source's all typing: %v, closed %v, %q; want the other source's one closed", pc, ev, why)
	}
	for _, c := range typists {
		if c.closed {
			t.Fatal("a connection typing a code was closed to make room")
		}
	}
	p.done(ev)
	// The office's three wait for codes: the one place that can give
	// way is the newcomer's, as among sources of one place each.
	if pc, ev, why := p.admit("late", &closer{}); pc == nil || ev == nil || ev.host != "newcomer" {
		t.Fatalf("with only typists and one newcomer: %v, closed %v, %q; want the newcomer's place taken", pc, ev, why)
	}
	for _, c := range typists {
		if c.closed {
			t.Fatal("a connection typing a code was closed to make room")
		}
	}
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
	if held := p.heldBack(false); held != nil {
		t.Fatalf("held back reported inside the window: %v", held)
	}
	now = now.Add(auditEvery)
	if n := p.refusal("h"); n != 100 {
		t.Fatalf("after the window: report %d, want 100 (99 held back and this one)", n)
	}
	// A burst that just ends is reported when its window does, once.
	for range 5 {
		p.refusal("h")
	}
	if held := p.heldBack(false); held != nil {
		t.Fatalf("held back reported inside the window: %v", held)
	}
	now = now.Add(auditEvery)
	if held := p.heldBack(false); len(held) != 1 || held["h"] != 5 {
		t.Fatalf("after the window: held back %v, want h: 5", held)
	}
	if held := p.heldBack(false); held != nil {
		t.Fatalf("held back reported twice: %v", held)
	}
	if n := p.refusal("h"); n != 1 {
		t.Fatalf("the next burst's first refusal: report %d, want 1", n)
	}
	p.refusal("h")
	if held := p.heldBack(true); held["h"] != 1 {
		t.Fatalf("at shutdown: held back %v, want h: 1", held)
	}
	hardening.Report(t, "24", "101 pre-auth refusals from one source and 1 from another: 3 audit events, the first of each source at once and 99 held back, then one counting 100 after the %s window; a burst of 5 more audited once with its count when its window ended, and what was held back at shutdown audited then", auditEvery)
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
