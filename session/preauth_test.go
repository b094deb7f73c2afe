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
		pc.advance(stageProven)
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

// One address (an office behind NAT) holding all its places with silent
// connections: each newcomer from it takes the place of the least
// advanced, oldest of them, never of one further in its handshake, and
// never of one whose technician types a code.
func TestPreauthSourceAtItsLimitMakesRoomFromItself(t *testing.T) {
	const limit = 50
	p := newPreauth(limit, 1000, 100)
	type place struct {
		pc *pendingConn
		c  *closer
	}
	admit := func() place {
		t.Helper()
		c := &closer{}
		pc, ev, why := p.admit("203.0.113.7", c)
		if pc == nil {
			t.Fatalf("admit refused: %s", why)
		}
		if ev != nil {
			ev.nc.Close()
			p.done(ev) // its handshake fails
		}
		return place{pc, c}
	}
	typist := admit()
	typist.pc.advance(stageProven) // key proven, typing a code
	keyed := admit()
	keyed.pc.advance(stageKeyed)
	var flood []place
	for range limit - 3 {
		flood = append(flood, admit())
	}
	tech := admit()
	tech.pc.advance(stageSpoke) // its version is in: it speaks
	// Hundreds more silent ones from the same address: each closes the
	// oldest silent one, and the technician's handshake, the keyed one
	// and the typist stay.
	for range 300 {
		flood = append(flood, admit())
	}
	for _, pl := range []place{typist, keyed, tech} {
		if pl.c.closed {
			t.Fatalf("a connection at stage %d was closed to make room for silent ones", pl.pc.stage.Load())
		}
	}
	closed := 0
	for _, pl := range flood {
		if pl.c.closed {
			closed++
		}
	}
	if want := len(flood) - (limit - 3); closed != want || p.perSource["203.0.113.7"].Len() != limit || p.total != limit {
		t.Fatalf("closed %d of %d silent ones, source holds %d, total %d; want %d closed and %d held", closed, len(flood), p.perSource["203.0.113.7"].Len(), p.total, want, limit)
	}
	// Once only the technician's and the keyed one are left to give way,
	// the one that spoke goes before the one that is keyed.
	for _, pl := range flood {
		if !pl.c.closed {
			p.done(pl.pc) // their deadline
		}
	}
	for range limit - 3 {
		admit().pc.advance(stageKeyed)
	}
	next := admit()
	if !tech.c.closed || keyed.c.closed || typist.c.closed {
		t.Fatalf("with no silent one left: technician closed %v, keyed closed %v, typist closed %v; want only the one that spoke closed", tech.c.closed, keyed.c.closed, typist.c.closed)
	}
	next.pc.advance(stageKeyed)
	admit()
	if !keyed.c.closed || typist.c.closed {
		t.Fatalf("with only keyed ones left: oldest keyed closed %v, typist closed %v; want the oldest keyed closed, never the typist", keyed.c.closed, typist.c.closed)
	}
	hardening.Report(t, "21", "one address at its %d places (an office behind NAT): 300 more silent connections from it each closed its oldest silent one; a handshake that had spoken, one keyed and one typing a second-factor code stayed; with no silent one left, one that spoke gave way before one keyed, and the typist never", limit)
}

// A connection typing a second-factor code does not give way to the
// global limit either: the heaviest source with one that can give way does.
func TestPreauthGlobalLimitSparesTypists(t *testing.T) {
	p := newPreauth(50, 4, 100)
	var typists []*closer
	for range 3 {
		c := &closer{}
		pc, _, _ := p.admit("office", c)
		pc.advance(stageProven)
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
