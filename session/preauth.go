package session

import (
	"container/list"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// preauth bounds the connections that have not finished authenticating,
// per source address and in all, so that banner-only or stalled
// handshakes (slowloris) cannot exhaust the node while real technicians
// log in.
//
// A newcomer does not simply wait for a place. When its source holds
// maxPerSource places, one of that source's pending connections is
// closed to make room: an office behind one NAT address shares it with
// whoever floods from there, so refusing the newcomer would lock the
// office out for as long as the flood holds its places. When all
// maxTotal places are taken, one of the source holding the most places
// gives way, unless the newcomer's own source would then hold the most:
// an attacker spread over many addresses keeps rotating its own
// connections out.
//
// The one that gives way is a silent one if there is any (the one
// silent longest), else the one that went longest without getting
// further in its handshake (see stage). An SSH client sends its version
// as soon as it is connected, in the same flight as the end of the TCP
// handshake, so a technician's connection is silent for no longer than
// it takes sekisho to read it: a flood of connections that say nothing
// only ever closes its own, however fast it dials. A flood that speaks,
// or stops after the key exchange, stops progressing, while a
// technician's client takes the next step every round trip: such a
// flood pushes out a login only if it dials again faster than its
// address's places per round trip of the login (and every place it
// takes is in the audit count). Only steps of the protocol count, not
// bytes: a client that trickles bytes does not look busy. Neither the
// oldest connection (a flood that dials reaches a slow login) nor the
// least advanced (a flood that completes key exchanges closes every
// newcomer before its own key exchange) would do.
//
// A connection whose technician has proven their key (the decision is
// being made, or a second-factor code typed) never gives way: only a
// holder of a registered key gets there, and ssh.auth_timeout still
// bounds it. A connection
// that finished authenticating is no longer counted here at all, so no
// flood can close it.
type preauth struct {
	maxPerSource, maxTotal int

	mu        sync.Mutex
	perSource map[string]*list.List // of *pendingConn, oldest first
	total     int
	seq       uint64 // admissions so far: orders pending connections by age

	// Sources with maxFailures failed authentication attempts within
	// failWindow are refused before the handshake until that window ends.
	//
	// This count stays in the node's memory, unlike the second-factor
	// throttle (broker.Store.BeginAttempt): it sheds load, it does not
	// bound guessing. A failure here is a key that is not registered, or
	// a refusal, and no number of tries makes a key registered; the
	// guesses that could succeed, verification codes, are counted in the
	// shared store per technician and per address. Asking the store
	// before every handshake would instead turn a flood of connections
	// into a flood of queries to the database every node depends on. So
	// a source spread over n nodes is refused after n times the limit.
	maxFailures int
	failures    map[string]*failWindowCount

	// Refusals and connections closed to make room are audited at most
	// once per source per auditEvery, with the count since the last
	// one, so that a flood cannot fill the audit log; heldBack reports
	// the counts of windows that ended.
	refused map[string]*refusals
	now     func() time.Time
}

// stage is how far a pending connection got in its handshake; reaching
// the next is progress.
type stage int32

const (
	stageSilent stage = iota // nothing received from the client yet
	stageSpoke               // the client sent something (its version, a key exchange)
	stageKeyed               // the key exchange is done; authentication goes on
	stageProven              // a technician's key is proven (the decision, a second-factor code follow): never closed to make room
)

// pendingConn is one admitted connection that has not authenticated yet.
type pendingConn struct {
	seq     uint64
	host    string
	nc      io.Closer
	elem    *list.Element
	evicted bool

	stage      atomic.Int32 // a stage; only ever goes up
	progressed atomic.Int64 // when it was admitted or last reached a stage, in Unix nanoseconds
}

// advance notes that the connection reached s at now, if it had not.
func (pc *pendingConn) advance(s stage, now time.Time) {
	for {
		old := pc.stage.Load()
		if old >= int32(s) {
			return
		}
		if pc.stage.CompareAndSwap(old, int32(s)) {
			pc.progressed.Store(now.UnixNano())
			return
		}
	}
}

// progressConn advances its pending connection to stageSpoke once the
// client has sent anything.
type progressConn struct {
	net.Conn
	pc *pendingConn
}

func (c *progressConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && stage(c.pc.stage.Load()) == stageSilent {
		c.pc.advance(stageSpoke, time.Now())
	}
	return n, err
}

type failWindowCount struct {
	start time.Time
	n     int
}

const failWindow = time.Minute

type refusals struct {
	since   time.Time // when the last audited refusal was
	pending int       // refused since then, not yet audited
}

const (
	auditEvery     = 10 * time.Second
	refusalSources = 10000 // sources remembered for throttling; beyond, the oldest window is dropped
)

func newPreauth(maxPerSource, maxTotal, maxFailures int) *preauth {
	return &preauth{maxPerSource: maxPerSource, maxTotal: maxTotal, perSource: map[string]*list.List{},
		maxFailures: maxFailures, failures: map[string]*failWindowCount{},
		refused: map[string]*refusals{}, now: time.Now}
}

// failed counts a failed authentication attempt from host.
func (p *preauth) failed(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	f := p.failures[host]
	if f == nil || now.Sub(f.start) >= failWindow {
		if f == nil && len(p.failures) >= refusalSources {
			for h, o := range p.failures {
				if now.Sub(o.start) >= failWindow {
					delete(p.failures, h)
				}
			}
			if len(p.failures) >= refusalSources {
				return // a flood from that many sources: the caps still hold
			}
		}
		f = &failWindowCount{start: now}
		p.failures[host] = f
	}
	f.n++
}

// sourceHost is the address of source without its port.
func sourceHost(source string) string {
	if h, _, err := net.SplitHostPort(source); err == nil {
		return h
	}
	return source
}

// Why a pending connection was closed to make room.
const (
	gaveWayPerSource = "per-source"
	gaveWayTotal     = "total"
)

// admit counts a new connection nc from host. It returns the place
// taken and, if a pending connection was closed to make room (its
// handshake will fail), that one and which limit made it give way
// (gaveWayPerSource or gaveWayTotal). When a limit refuses nc, pc is
// nil and why says which.
func (p *preauth) admit(host string, nc io.Closer) (pc, evicted *pendingConn, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.failures[host]; f != nil && f.n >= p.maxFailures {
		if left := failWindow - p.now().Sub(f.start); left > 0 {
			return nil, nil, fmt.Sprintf("%d authentication attempts from %s failed within %s (ssh.max_auth_failures_per_source); refused for %s more",
				f.n, host, failWindow, left.Round(time.Second))
		}
	}
	n := 0
	if mine := p.perSource[host]; mine != nil {
		n = mine.Len()
	}
	switch {
	case n >= p.maxPerSource:
		v := giveWay(p.perSource[host])
		if v == nil {
			return nil, nil, fmt.Sprintf("%d connections from %s are already authenticating (ssh.max_unauthenticated_per_source), each with a technician's key proven and a second factor asked", n, host)
		}
		p.evict(v)
		evicted, why = v, gaveWayPerSource
	case p.total >= p.maxTotal:
		var from *list.List
		var v *pendingConn
		for h, l := range p.perSource {
			if h == host {
				continue
			}
			c := giveWay(l)
			if c != nil && (from == nil || l.Len() > from.Len() || l.Len() == from.Len() && c.seq < v.seq) {
				from, v = l, c
			}
		}
		if from == nil || from.Len() < n+1 {
			return nil, nil, fmt.Sprintf("%d connections are already authenticating (ssh.max_unauthenticated) and %s holds as many places as any other source", p.total, host)
		}
		p.evict(v)
		evicted, why = v, gaveWayTotal
	}
	mine := p.perSource[host] // evict may have removed an emptied list
	if mine == nil {
		mine = list.New()
		p.perSource[host] = mine
	}
	p.seq++
	pc = &pendingConn{seq: p.seq, host: host, nc: nc}
	pc.progressed.Store(p.now().UnixNano())
	pc.elem = mine.PushBack(pc)
	p.total++
	return pc, evicted, why
}

// giveWay returns the pending connection of l that gives way to a
// newcomer: the oldest silent one, else the one that went longest
// without progress (the oldest among equals); nil if every one has a
// technician's key proven.
func giveWay(l *list.List) *pendingConn {
	var v *pendingConn
	var since int64
	for e := l.Front(); e != nil; e = e.Next() {
		c := e.Value.(*pendingConn)
		switch stage(c.stage.Load()) {
		case stageSilent:
			return c // the list is oldest first
		case stageProven:
			continue
		}
		if t := c.progressed.Load(); v == nil || t < since {
			v, since = c, t
		}
	}
	return v
}

// evict gives back pc's place for a newcomer; p.mu is held. The caller
// closes pc's connection.
func (p *preauth) evict(pc *pendingConn) {
	p.release(pc)
	pc.evicted = true
}

// release gives back pc's place; p.mu is held.
func (p *preauth) release(pc *pendingConn) {
	l := p.perSource[pc.host]
	l.Remove(pc.elem)
	if l.Len() == 0 {
		delete(p.perSource, pc.host)
	}
	p.total--
}

// done gives back the place of a connection that finished or failed its
// handshake.
func (p *preauth) done(pc *pendingConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !pc.evicted {
		p.release(pc)
	}
}

// refusal notes a refused connection, or one closed to make room, from
// host and returns how many to report now (this one and those held
// back), or 0 while the source's audit window is open.
func (p *preauth) refusal(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	r := p.refused[host]
	if r == nil {
		if len(p.refused) >= refusalSources {
			for h, o := range p.refused {
				if now.Sub(o.since) >= auditEvery || o.pending == 0 {
					delete(p.refused, h)
				}
			}
		}
		r = &refusals{}
		p.refused[host] = r
	} else if now.Sub(r.since) < auditEvery {
		r.pending++
		return 0
	}
	n := r.pending + 1
	r.since, r.pending = now, 0
	return n
}

// heldBack returns, per source, the refusals held back in audit windows
// that have ended (all of them when all is set, at shutdown), and
// forgets them: each burst is audited when it starts and, if more came
// within its window, once more with their count when the window ends.
func (p *preauth) heldBack(all bool) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var out map[string]int
	for h, r := range p.refused {
		if r.pending > 0 && (all || now.Sub(r.since) >= auditEvery) {
			if out == nil {
				out = map[string]int{}
			}
			out[h] = r.pending
			r.pending = 0
		}
	}
	return out
}
