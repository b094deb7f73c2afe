package session

import (
	"container/list"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// preauth bounds the connections that have not finished authenticating,
// per source address and in all, so that banner-only or stalled
// handshakes (slowloris) cannot exhaust the node while real technicians
// log in. A connection over a limit is closed before sekisho sends its
// banner.
//
// When all maxTotal places are taken, a newcomer does not simply wait for
// a place: the oldest pending connection of the source holding the most
// places is closed to make room, unless the newcomer's own source would
// then hold the most. An attacker spread over many addresses therefore
// keeps rotating its own connections out, and a technician's handshake,
// which takes milliseconds, is not starved by connections that only wait
// for the deadline.
type preauth struct {
	maxPerSource, maxTotal int

	mu        sync.Mutex
	perSource map[string]*list.List // of *pendingConn, oldest first
	total     int
	seq       uint64 // admissions so far: orders pending connections by age

	// Sources with maxFailures failed authentication attempts within
	// failWindow are refused before the handshake until that window ends.
	maxFailures int
	failures    map[string]*failWindowCount

	// Refusals are audited at most once per source per auditEvery, with
	// the count since the last one, so that a flood cannot fill the audit
	// log.
	refused map[string]*refusals
	now     func() time.Time
}

// pendingConn is one admitted connection that has not authenticated yet.
type pendingConn struct {
	seq     uint64
	host    string
	nc      io.Closer
	elem    *list.Element
	evicted bool
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

// admit counts a new connection nc from host. It returns the place
// taken, and a pending connection that was closed to make room (whose
// handshake will fail), or says which limit refused nc.
func (p *preauth) admit(host string, nc io.Closer) (pc, evicted *pendingConn, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.failures[host]; f != nil && f.n >= p.maxFailures {
		if left := failWindow - p.now().Sub(f.start); left > 0 {
			return nil, nil, fmt.Sprintf("%d authentication attempts from %s failed within %s (ssh.max_auth_failures_per_source); refused for %s more",
				f.n, host, failWindow, left.Round(time.Second))
		}
	}
	mine := p.perSource[host]
	n := 0
	if mine != nil {
		n = mine.Len()
	}
	if n >= p.maxPerSource {
		return nil, nil, fmt.Sprintf("%d connections from %s are already authenticating (ssh.max_unauthenticated_per_source)", n, host)
	}
	if p.total >= p.maxTotal {
		var heaviest *list.List
		for h, l := range p.perSource {
			if h == host {
				continue
			}
			if heaviest == nil || l.Len() > heaviest.Len() ||
				l.Len() == heaviest.Len() && l.Front().Value.(*pendingConn).seq < heaviest.Front().Value.(*pendingConn).seq {
				heaviest = l
			}
		}
		if heaviest == nil || heaviest.Len() < n+1 {
			return nil, nil, fmt.Sprintf("%d connections are already authenticating (ssh.max_unauthenticated) and %s holds as many places as any other source", p.total, host)
		}
		old := heaviest.Front().Value.(*pendingConn)
		p.release(old)
		old.evicted = true
		evicted = old
	}
	if mine == nil {
		mine = list.New()
		p.perSource[host] = mine
	}
	p.seq++
	pc = &pendingConn{seq: p.seq, host: host, nc: nc}
	pc.elem = mine.PushBack(pc)
	p.total++
	return pc, evicted, ""
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

// refusal notes a refused connection from host and returns how many to
// report now (this one and those held back), or 0 while the source's
// audit window is open.
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
