package peer

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// limits bound what unauthenticated connections may take, per source
// address and in all, as the main listener's do: handshakes under way,
// and failures in a window, after which a source is refused before its
// handshake until the window ends. Only nodes of the cluster have reason
// to connect at all, so the bounds are small and the newcomer is the one
// refused.
//
// Refusals are reported at most once per source per refusalWindow; the
// rest are counted and reported with the next report, or by flush when
// the window ends, so that a flood cannot fill the audit log yet no
// refusal goes uncounted.
type limits struct {
	maxPerSource, maxTotal, maxFailures int

	mu       sync.Mutex
	pending  map[string]int
	total    int
	failures map[string]*window
	refused  map[string]*window
	now      func() time.Time
}

// window counts events of one source since start.
type window struct {
	start time.Time
	n     int
	last  string // held back: the last refusal's reason
}

const (
	// failWindow is how long failures count against a source.
	failWindow = time.Minute
	// refusalWindow is the least time between two reports of refusals
	// from one source.
	refusalWindow = 10 * time.Second
)

func newLimits(maxPerSource, maxTotal, maxFailures int) *limits {
	return &limits{maxPerSource: maxPerSource, maxTotal: maxTotal, maxFailures: maxFailures,
		pending: map[string]int{}, failures: map[string]*window{}, refused: map[string]*window{}, now: time.Now}
}

// admit takes a place for a handshake from host, or says why not.
func (l *limits) admit(host string) (ok bool, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.failures[host]; f != nil && l.now().Sub(f.start) < failWindow && f.n >= l.maxFailures {
		return false, fmt.Sprintf("%d failed attempts from this address within %s", f.n, failWindow)
	}
	switch {
	case l.pending[host] >= l.maxPerSource:
		return false, fmt.Sprintf("%d handshakes from this address under way", l.pending[host])
	case l.total >= l.maxTotal:
		return false, fmt.Sprintf("%d handshakes under way", l.total)
	}
	l.pending[host]++
	l.total++
	return true, ""
}

// done gives back the place of an admitted handshake; failed counts it
// against its source.
func (l *limits) done(host string, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.pending[host]--; l.pending[host] <= 0 {
		delete(l.pending, host)
	}
	if !failed {
		return
	}
	now := l.now()
	f := l.failures[host]
	if f == nil || now.Sub(f.start) >= failWindow {
		f = &window{start: now}
		l.failures[host] = f
	}
	f.n++
}

// refusal notes a refusal of host for why, and returns what to report
// now: why, with the count of refusals held back before it, or "" when
// it is held back itself.
func (l *limits) refusal(host, why string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r := l.refused[host]
	if r != nil && now.Sub(r.start) < refusalWindow {
		r.n++
		r.last = why
		return ""
	}
	l.refused[host] = &window{start: now}
	if r != nil && r.n > 0 {
		return fmt.Sprintf("%s (and %d earlier refusals of this address not reported one by one, the last: %s)", why, r.n, r.last)
	}
	return why
}

// flush returns, per source, a report of the refusals held back in
// windows that ended, and forgets the sources that went quiet.
func (l *limits) flush() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := map[string]string{}
	for host, r := range l.refused {
		if now.Sub(r.start) < refusalWindow {
			continue
		}
		if r.n > 0 {
			out[host] = fmt.Sprintf("%d refusals of this address within %s not reported one by one, the last: %s", r.n, refusalWindow, r.last)
		}
		delete(l.refused, host)
	}
	for host, f := range l.failures {
		if now.Sub(f.start) >= failWindow {
			delete(l.failures, host)
		}
	}
	return out
}

// sourceHost is the address part of a remote address, the unit of the
// limits.
func sourceHost(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}
