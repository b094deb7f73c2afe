package session

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// Moderated sessions. A session whose rule asks for moderators waits, its
// first channel held as for an approval, until enough of them watch
// (`ssh -t NAME@BASTION moderate SESSION`); nothing reaches the target
// before. When the watchers fall below the number, the technician's input
// is held at once, and the session ends after the rule's grace period
// unless enough watch again. A moderated session has one channel: a
// second one could not be held.

// seat is where the moderators of one session sit.
type seat struct {
	id         string
	technician string
	target     *broker.Target
	spec       broker.ModerationSpec

	mu      sync.Mutex
	present map[string]int // moderator: connections watching
	changed chan struct{}  // closed and replaced at every change
	held    atomic.Bool    // the technician's input is held
	done    chan struct{}  // closed when the session ends
}

func newSeat(id, technician string, target *broker.Target, spec broker.ModerationSpec) *seat {
	return &seat{id: id, technician: technician, target: target, spec: spec, present: map[string]int{}, changed: make(chan struct{}), done: make(chan struct{})}
}

// join seats name and returns what unseats them.
func (s *seat) join(name string) (leave func()) {
	s.mu.Lock()
	s.present[name]++
	s.notifyLocked()
	s.mu.Unlock()
	return sync.OnceFunc(func() {
		s.mu.Lock()
		if s.present[name]--; s.present[name] <= 0 {
			delete(s.present, name)
		}
		s.notifyLocked()
		s.mu.Unlock()
	})
}

func (s *seat) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// moderators returns who watches, sorted.
func (s *seat) moderators() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.present))
	for name := range s.present {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// enough reports whether enough moderators watch, and what wakes on the
// next change.
func (s *seat) enough() (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.present) >= s.spec.Moderators, s.changed
}

// seatOf registers c's seat; unseat removes it when the session ends.
func (s *Server) seatOf(c *conn) *seat {
	st := newSeat(c.sessionID, c.id.tech.Name, c.id.target, *c.id.decision.Moderation)
	s.seats.Store(c.sessionID, st)
	return st
}

// unseat removes c's seat, if it has one: its moderators' views end with
// the recording.
func (c *conn) unseat() {
	if c.seat != nil {
		c.srv.seats.Delete(c.sessionID)
		close(c.seat.done)
	}
}

// awaitModerators holds the waiting channel until enough moderators watch.
func (w *waiter) awaitModerators(ctx context.Context) bool {
	c := w.c
	d := c.id.decision
	if c.srv.cfg.Access == nil {
		w.end("rule %q needs moderators watching, and this sekisho has no access requests to seat them with", d.Rule)
		return false
	}
	w.moderators = true
	st := c.srv.seatOf(c)
	c.seat = st
	if w.pty != nil && w.input == nil {
		w.readKeys()
	}
	spec := *d.Moderation
	host := "BASTION"
	if h, p, err := net.SplitHostPort(c.sc.LocalAddr().String()); err == nil {
		host = h + " -p " + p
	}
	w.say("this session needs %d moderator(s) watching (rule %q); who may moderate: %s",
		spec.Moderators, d.Rule, listOrNone(c.srv.cfg.Access.Moderators(c.id.tech.Name, c.id.target, spec)))
	w.say("session %s: a moderator joins with  ssh -t NAME@%s moderate %s", c.sessionID, host, c.sessionID)
	if w.pty != nil {
		w.say("the session starts when they watch; Ctrl-C leaves")
	}
	c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventModerationWaiting, Technician: c.id.tech.Name, Target: c.id.target.Name,
		Source: c.source, Session: c.sessionID, Detail: broker.JSONDetail(map[string]any{"rule": d.Rule, "moderators": spec.Moderators})})
	for {
		ok, changed := st.enough()
		if ok {
			break
		}
		ev, err := w.next(ctx, changed, nil, nil)
		if err != nil {
			return false
		}
		if ev == evKeys {
			if strings.IndexByte(string(w.inBuf), 3) >= 0 {
				io.WriteString(w.ch, "^C\r\n")
				w.end("left before a moderator joined")
				return false
			}
			w.inBuf = nil // typing ahead is not sent to the target
		}
	}
	w.say("watched by %s; connecting to %s", strings.Join(st.moderators(), ", "), c.id.target.Name)
	go c.followModerators(st, spec.Grace)
	return true
}

// followModerators holds the technician's input whenever fewer moderators
// than the rule asks watch, and ends the session once that lasted the
// grace period.
func (c *conn) followModerators(st *seat, grace time.Duration) {
	for {
		ok, changed := st.enough()
		if !ok {
			st.held.Store(true)
			c.tellAll(fmt.Sprintf("the moderators left: your input is held; the session ends in %s unless one watches again", grace))
			select {
			case <-time.After(grace):
				if ok, _ := st.enough(); !ok {
					c.terminate(fmt.Sprintf("no moderator watched for %s (rule %q)", grace, c.id.decision.Rule))
					return
				}
			case <-changed:
			case <-st.done:
				return
			}
			if ok, _ := st.enough(); ok {
				st.held.Store(false)
				c.tellAll("watched again by " + strings.Join(st.moderators(), ", ") + ": your input goes through")
			}
			continue
		}
		select {
		case <-changed:
		case <-st.done:
			return
		}
	}
}

// tellAll writes a line to the technician's open channels. The writes do
// not hold up the caller: a technician who reads nothing (a full window)
// must not keep the grace period from running out.
func (c *conn) tellAll(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r := range c.relays {
		go io.WriteString(r.down.Stderr(), "\r\nsekisho: "+msg+"\r\n")
	}
}

// heldChannel is a moderated session's channel: while its input is held,
// what the technician types is dropped (with a terminal) or waits (a
// transfer or a command's input).
type heldChannel struct {
	ssh.Channel
	seat *seat
	pty  bool
}

func (h *heldChannel) Read(p []byte) (int, error) {
	for {
		n, err := h.Channel.Read(p)
		if !h.seat.held.Load() || n == 0 {
			return n, err
		}
		if h.pty {
			h.Channel.Write([]byte("\a")) // held: a bell, nothing sent
			if err != nil {
				return 0, err
			}
			continue
		}
		for h.seat.held.Load() {
			_, changed := h.seat.enough()
			select {
			case <-changed:
			case <-h.seat.done:
				return 0, io.EOF
			}
		}
		return n, err
	}
}

// awaitModeration holds the first channel of a session its rule lets
// through without approval until enough moderators watch, and returns
// it for relaying.
func (c *conn) awaitModeration(ctx context.Context, chans <-chan ssh.NewChannel) (*pendingChannel, bool) {
	w := &waiter{c: c, chans: chans, gone: c.techGone, stopped: make(chan struct{}), moderators: true}
	if !w.firstChannel(ctx) || !w.startRequest(ctx) || !w.awaitModerators(ctx) {
		close(w.stopped)
		return nil, false
	}
	return w.handoff(), true
}

// moderate seats the technician as a moderator of a session of this node
// and shows it live until they leave (Ctrl-C) or it ends.
func (c *command) moderate(ctx context.Context, f *flags) int {
	if err := f.allow(); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: moderate SESSION (with a terminal: ssh -t)\n")
		return exitUsage
	}
	id := f.args[0]
	refuse := func(why string) int {
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.tech.Name,
			Source: c.source, Session: id, Detail: "command \"moderate\" refused: " + why})
		c.errorf("sekisho: moderate: %s\n", why)
		return exitRefused
	}
	v, ok := c.srv.seats.Load(id)
	if !ok {
		return refuse(fmt.Sprintf("no session %s waiting for moderators or moderated on this node", id))
	}
	st := v.(*seat)
	if ok, why := c.srv.cfg.Access.MayModerate(c.tech.Name, st.technician, st.target, st.spec); !ok {
		return refuse(why)
	}
	if !c.pty {
		return refuse("a moderator watches on a terminal: ssh -t")
	}
	leave := st.join(c.tech.Name)
	audit := func(kind broker.EventKind) {
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: kind, Technician: c.tech.Name, Target: st.target.Name,
			Source: c.source, Session: id, Detail: broker.JSONDetail(map[string]string{"technician": st.technician})})
	}
	audit(broker.EventModerationJoined)
	defer audit(broker.EventModerationLeft)
	defer leave()
	fmt.Fprintf(c.raw, "[sekisho: moderating session %s of %s on %s; your leaving holds their input; Ctrl-C leaves]\r\n", id, st.technician, st.target.Name)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go c.dropInput(stop)
	// The session connects, and its recording begins, once enough watch.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := recording.ReadMeta(c.srv.cfg.RecordingDir, id); err == nil {
			break
		}
		select {
		case <-tick.C:
		case <-st.done:
			io.WriteString(c.raw, "[sekisho: the session ended before it started]\r\n")
			return exitOK
		case <-ctx.Done():
			io.WriteString(c.raw, "\r\n[sekisho: stopped moderating]\r\n")
			return exitOK
		}
	}
	return c.watched("moderate", "moderating", id, recording.Watch(ctx, c.raw, c.srv.cfg.RecordingDir, id, recording.WatchOptions{FromStart: true}))
}
