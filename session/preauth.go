package session

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// preauth bounds the connections that have not finished authenticating,
// per source address and in all, so that banner-only or stalled
// handshakes (slowloris) cannot exhaust the node while real technicians
// log in. A connection over a limit is closed before sekisho sends its
// banner.
type preauth struct {
	maxPerSource, maxTotal int

	mu        sync.Mutex
	perSource map[string]int
	total     int

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
	return &preauth{maxPerSource: maxPerSource, maxTotal: maxTotal, perSource: map[string]int{},
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

// admit counts a new connection from host, or says which limit refused it.
func (p *preauth) admit(host string) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.failures[host]; f != nil && f.n >= p.maxFailures {
		if left := failWindow - p.now().Sub(f.start); left > 0 {
			return false, fmt.Sprintf("%d authentication attempts from %s failed within %s (ssh.max_auth_failures_per_source); refused for %s more",
				f.n, host, failWindow, left.Round(time.Second))
		}
	}
	if n := p.perSource[host]; n >= p.maxPerSource {
		return false, fmt.Sprintf("%d connections from %s are already authenticating (ssh.max_unauthenticated_per_source)", n, host)
	}
	if p.total >= p.maxTotal {
		return false, fmt.Sprintf("%d connections are already authenticating (ssh.max_unauthenticated)", p.total)
	}
	p.perSource[host]++
	p.total++
	return true, ""
}

// done releases a connection admitted from host.
func (p *preauth) done(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.perSource[host] <= 1 {
		delete(p.perSource, host)
	} else {
		p.perSource[host]--
	}
	p.total--
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
