package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
	rule       string
	spec       broker.ModerationSpec
	conn       *conn

	mu      sync.Mutex
	present map[string]int // moderator: connections watching
	changed chan struct{}  // closed and replaced at every change
	absent  bool           // fewer moderators watch than the rule asks (once started)
	holder  string         // the moderator who holds the technician's input, or ""
	endWhy  string         // a moderator ended the session before it started
	started bool           // the session reached its target
	waiting func(string)   // tells the technician while they wait
	held    atomic.Bool    // the technician's input is held: absent or holder
	done    chan struct{}  // closed when the session ends
}

func newSeat(c *conn) *seat {
	return &seat{id: c.sessionID, technician: c.id.tech.Name, target: c.id.target, rule: c.id.decision.Rule,
		spec: *c.id.decision.Moderation, conn: c, present: map[string]int{}, changed: make(chan struct{}), done: make(chan struct{})}
}

// join seats name and returns what unseats them. Once the session has
// started, too few moderators hold the input at once, and enough release
// it at once.
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

// notifyLocked follows a change: whether the input is held (too few
// moderators once started, or a moderator's hold), and who waits on it.
func (s *seat) notifyLocked() {
	s.absent = s.started && len(s.present) < s.spec.Moderators
	s.held.Store(s.absent || s.holder != "")
	close(s.changed)
	s.changed = make(chan struct{})
}

// moderators returns who watches, sorted.
func (s *seat) moderators() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moderatorsLocked()
}

func (s *seat) moderatorsLocked() []string {
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

// unseat removes c's seat, if it has one: its moderators' views end with
// the recording.
func (c *conn) unseat() {
	if c.seat != nil {
		c.srv.seats.Delete(c.sessionID)
		close(c.seat.done)
	}
}

// moderationEvent records text on the session's channels' recordings
// ("x-moderator"), for the replay's timeline.
func (c *conn) moderationEvent(text string) {
	for _, r := range c.openRelays() {
		r.mu.Lock()
		var err error
		if r.rec != nil && !r.recClosed {
			err = r.rec.Event("x-moderator", text)
		}
		r.mu.Unlock()
		r.record(err)
	}
}

func (s *seat) info() broker.ModeratedSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return broker.ModeratedSession{ID: s.id, Technician: s.technician, Target: s.target.Name, Rule: s.rule, Needed: s.spec.Moderators,
		Moderators: s.moderatorsLocked(), Started: s.started, HeldBy: s.holder, Held: s.absent || s.holder != ""}
}

// tell writes a line to the technician: on their waiting channel before
// the session starts, on its channels after.
func (s *seat) tell(msg string) {
	s.mu.Lock()
	waiting := s.waiting
	s.mu.Unlock()
	if waiting != nil {
		go waiting(msg)
		return
	}
	s.conn.tellAll(msg)
}

// Moderated lists the sessions of this node that name may moderate,
// waiting ones first, then by ID.
func (s *Server) Moderated(name string) []broker.ModeratedSession {
	var out []broker.ModeratedSession
	s.seats.Range(func(_, v any) bool {
		st := v.(*seat)
		if ok, _ := s.cfg.Access.MayModerate(name, st.technician, st.target, st.spec); ok {
			out = append(out, st.info())
		}
		return true
	})
	slices.SortFunc(out, func(a, b broker.ModeratedSession) int {
		if a.Started != b.Started {
			if !a.Started {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// ModerationRefused is why someone may not moderate a session. NotHere:
// no session of that ID waits for moderators or is moderated here.
type ModerationRefused struct {
	Why     string
	NotHere bool
}

func (e *ModerationRefused) Error() string { return e.Why }

// seatFor returns session id's seat if name may moderate it.
func (s *Server) seatFor(id, name string) (*seat, error) {
	v, ok := s.seats.Load(id)
	if !ok {
		return nil, &ModerationRefused{Why: fmt.Sprintf("no session %s waiting for moderators or moderated on this node", id), NotHere: true}
	}
	st := v.(*seat)
	if ok, why := s.cfg.Access.MayModerate(name, st.technician, st.target, st.spec); !ok {
		return nil, &ModerationRefused{Why: why}
	}
	return st, nil
}

// refuseModeration audits a refused moderation.
func (s *Server) refuseModeration(name, source, id, how string, err error) {
	s.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: name,
		Source: source, Session: id, Detail: how + " refused: " + err.Error()})
}

// Moderator is one moderator's place at a session: joined by Moderate,
// left by Leave.
type Moderator struct {
	srv    *Server
	st     *seat
	name   string
	source string
	leave  func()
}

// ModerateHere seats name, from source ("web" for the console, "node
// NAME" through another node), as a moderator of session id of this
// node. A refusal is a *ModerationRefused, which the caller audits.
func (s *Server) ModerateHere(id, name, source string) (*Moderator, error) {
	if s.cfg.Access == nil {
		return nil, &ModerationRefused{Why: "this sekisho has no moderated sessions", NotHere: true}
	}
	st, err := s.seatFor(id, name)
	if err != nil {
		return nil, err
	}
	return s.seat(st, name, source), nil
}

func (s *Server) seat(st *seat, name, source string) *Moderator {
	m := &Moderator{srv: s, st: st, name: name, source: source}
	leave := st.join(name)
	m.audit(broker.EventModerationJoined, nil)
	st.conn.moderationEvent(name + " joined")
	m.leave = sync.OnceFunc(func() {
		st.conn.moderationEvent(name + " left") // before what leaving causes
		leave()
		m.audit(broker.EventModerationLeft, nil)
	})
	return m
}

// Seated returns name's place at session id while they watch it (for
// the console's controls, which come on requests of their own).
func (s *Server) Seated(id, name, source string) (*Moderator, error) {
	v, ok := s.seats.Load(id)
	if !ok {
		return nil, &ModerationRefused{Why: fmt.Sprintf("session %s is not moderated on this node (it ended, or another node serves it)", id), NotHere: true}
	}
	st := v.(*seat)
	st.mu.Lock()
	seated := st.present[name] > 0
	st.mu.Unlock()
	if !seated {
		return nil, &ModerationRefused{Why: "you are not watching session " + id + " as a moderator: join it first"}
	}
	if _, err := s.seatFor(id, name); err != nil { // a lock or a rule change since
		return nil, err
	}
	return &Moderator{srv: s, st: st, name: name, source: source, leave: func() {}}, nil
}

// Leave unseats the moderator; the technician's input is held if too few
// watch then.
func (m *Moderator) Leave() { m.leave() }

// Session says what the moderated session is now.
func (m *Moderator) Session() broker.ModeratedSession { return m.st.info() }

func (m *Moderator) audit(kind broker.EventKind, extra map[string]string) {
	d := map[string]string{"technician": m.st.technician}
	maps.Copy(d, extra)
	m.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: kind, Technician: m.name, Target: m.st.target.Name,
		Source: m.source, Session: m.st.id, Detail: broker.JSONDetail(d)})
}

// maxModeratorText bounds the command line a moderator types over SSH
// (a line or a reason is at most 500 bytes: broker.CheckText).
const maxModeratorText = 500

// moderatorText checks a line or reason a moderator sends the technician
// as every typed text is checked (broker.CheckText): nothing hidden or
// reordered may reach the technician's terminal.
func moderatorText(what, text string) (string, error) {
	if strings.TrimSpace(text) == "" {
		return "", &ModerationRefused{Why: "give " + what}
	}
	text, err := broker.CheckText(what, text)
	if rf := (*broker.Refusal)(nil); errors.As(err, &rf) {
		return "", &ModerationRefused{Why: rf.Msg}
	}
	return text, err
}

// Say sends the technician a line, on their terminal.
func (m *Moderator) Say(text string) error {
	if err := m.mayStill(); err != nil {
		return err
	}
	text, err := moderatorText("a line to send", text)
	if err != nil {
		return err
	}
	m.st.tell(fmt.Sprintf("moderator %s says: %s", m.name, text))
	m.st.conn.moderationEvent(m.name + " said: " + text)
	m.audit(broker.EventModerationMessage, map[string]string{"text": text})
	return nil
}

// Hold holds the technician's input (hold true: what they type is
// dropped, a transfer waits) or releases it.
func (m *Moderator) Hold(hold bool) error {
	if err := m.mayStill(); err != nil {
		return err
	}
	st := m.st
	st.mu.Lock()
	switch {
	case hold && st.holder != "":
		st.mu.Unlock()
		return &ModerationRefused{Why: "the input is already held by " + st.holder}
	case !hold && st.holder == "":
		st.mu.Unlock()
		return &ModerationRefused{Why: "the input is not held by a moderator"}
	}
	if hold {
		st.holder = m.name
	} else {
		st.holder = ""
	}
	st.notifyLocked()
	st.mu.Unlock()
	if hold {
		st.tell(fmt.Sprintf("moderator %s holds your input until it is released", m.name))
		st.conn.moderationEvent(m.name + " held the input")
		m.audit(broker.EventModerationHold, nil)
	} else {
		st.tell(fmt.Sprintf("moderator %s released your input", m.name))
		st.conn.moderationEvent(m.name + " released the input")
		m.audit(broker.EventModerationRelease, nil)
	}
	return nil
}

// End ends the session, telling the technician why; one waiting for
// moderators never starts.
func (m *Moderator) End(reason string) error {
	if err := m.mayStill(); err != nil {
		return err
	}
	reason, err := moderatorText("a reason (the technician reads it)", reason)
	if err != nil {
		return err
	}
	m.audit(broker.EventModerationEnd, map[string]string{"reason": reason})
	m.st.conn.moderationEvent(m.name + " ended the session: " + reason)
	m.st.conn.endModerated(fmt.Sprintf("ended by moderator %s: %s", m.name, reason))
	return nil
}

// mayStill refuses an action of a moderator who may no longer moderate
// (a lock, a reload of the rules).
func (m *Moderator) mayStill() error {
	_, err := m.srv.seatFor(m.st.id, m.name)
	return err
}

// moderatorRecheck is how often a watching moderator is checked: a lock
// or a rule change unseats them within it.
const moderatorRecheck = time.Second

// Watch shows the session's terminal on w, from its start, once it has
// reached its target, until it ends or ctx is done; a session that ends
// before it started says so. A moderator who may no longer moderate is
// told why and their watch ends (the caller unseats them).
func (m *Moderator) Watch(ctx context.Context, w io.Writer, opt recording.WatchOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var revoked atomic.Pointer[string]
	go func() {
		t := time.NewTicker(moderatorRecheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-m.st.done:
				return
			case <-t.C:
			}
			err := m.mayStill()
			if rf := (*ModerationRefused)(nil); errors.As(err, &rf) && rf.NotHere {
				return // the session ended: the watch ends with it
			}
			if err != nil {
				why := err.Error()
				revoked.Store(&why)
				m.srv.refuseModeration(m.name, m.source, m.st.id, "moderation ended", err)
				cancel()
				return
			}
		}
	}()
	err := m.watch(ctx, w, opt)
	if why := revoked.Load(); why != nil {
		_, err := io.WriteString(w, "\r\n[sekisho: you may no longer moderate this session: "+*why+"]\r\n")
		return err
	}
	return err
}

func (m *Moderator) watch(ctx context.Context, w io.Writer, opt recording.WatchOptions) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := recording.ReadMeta(m.srv.cfg.RecordingDir, m.st.id); err == nil {
			break
		}
		select {
		case <-tick.C:
		case <-m.st.done:
			_, err := io.WriteString(w, "[sekisho: the session ended before it started]\r\n")
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	opt.FromStart = true
	return recording.Watch(ctx, w, m.srv.cfg.RecordingDir, m.st.id, opt)
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
	st := newSeat(c)
	st.waiting = func(msg string) { w.say("%s", msg) }
	c.seat = st
	c.srv.seats.Store(c.sessionID, st) // published whole
	if w.pty != nil && w.input == nil {
		w.readKeys()
	}
	spec := *d.Moderation
	host := "BASTION"
	if h, p, err := net.SplitHostPort(c.sc.LocalAddr().String()); err == nil {
		host = h + " -p " + p
	}
	may, hooks := c.srv.cfg.Access.ModerationWaiting(ctx, broker.ModerationNotice{Session: c.sessionID, Technician: c.id.tech.Name,
		Affiliate: c.id.tech.Affiliate.Name, Target: c.id.target.Name, Source: c.source, Rule: d.Rule, Spec: spec})
	notified := "who may moderate: " + listOrNone(may)
	if len(hooks) > 0 {
		notified += "; webhooks " + strings.Join(hooks, ", ")
	}
	w.say("this session needs %d moderator(s) watching (rule %q); %s", spec.Moderators, d.Rule, notified)
	w.say("session %s: a moderator joins in the console, or with  ssh -t NAME@%s moderate %s", c.sessionID, host, c.sessionID)
	if w.pty != nil {
		w.say("the session starts when they watch; Ctrl-C leaves")
	}
	for {
		st.mu.Lock()
		ok, changed, why := len(st.present) >= st.spec.Moderators, st.changed, st.endWhy
		if ok && why == "" {
			st.started, st.waiting = true, nil
			st.notifyLocked()
		}
		st.mu.Unlock()
		if why != "" {
			w.end("%s", why)
			return false
		}
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
		if ok {
			select {
			case <-changed:
				continue
			case <-st.done:
				return
			}
		}
		if n := len(st.moderators()); n == 0 {
			c.moderationEvent("no moderator watches: input held")
			c.tellAll(fmt.Sprintf("the moderators left: your input is held; the session ends in %s unless one watches again", grace))
		} else {
			c.moderationEvent(fmt.Sprintf("%d of %d moderators watch: input held", n, st.spec.Moderators))
			c.tellAll(fmt.Sprintf("only %d of the %d moderators this session needs watch: your input is held; the session ends in %s unless enough watch again",
				n, st.spec.Moderators, grace))
		}
		if !st.awaitEnough(grace) {
			select {
			case <-st.done:
			default:
				c.endModerated(fmt.Sprintf("no moderator watched for %s (rule %q)", grace, c.id.decision.Rule))
			}
			return
		}
		if info := st.info(); info.HeldBy != "" {
			c.tellAll("watched again by " + strings.Join(info.Moderators, ", ") + "; your input stays held by moderator " + info.HeldBy)
		} else {
			c.tellAll("watched again by " + strings.Join(info.Moderators, ", ") + ": your input goes through")
		}
	}
}

// awaitEnough waits up to grace for enough moderators to watch, and
// reports whether they do.
func (s *seat) awaitEnough(grace time.Duration) bool {
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		ok, changed := s.enough()
		if ok {
			return true
		}
		select {
		case <-t.C:
			ok, _ := s.enough()
			return ok
		case <-changed:
		case <-s.done:
			return false
		}
	}
}

// tellAll writes a line to the technician's open channels, in the order
// told. The writes do not hold up the caller: a technician who reads
// nothing (a full window) must not keep the grace period from running
// out; lines beyond tellQueue waiting are dropped (the recording and the
// audit log have what they said).
func (c *conn) tellAll(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tells == nil {
		c.tells = make(chan string, tellQueue)
		go c.teller(c.tells, c.seat.done)
	}
	select {
	case c.tells <- msg:
	default:
	}
}

// tellQueue bounds the lines waiting for a technician who reads nothing.
const tellQueue = 16

// teller writes the lines told, one after another, until the session
// ends.
func (c *conn) teller(tells <-chan string, done <-chan struct{}) {
	for {
		select {
		case msg := <-tells:
			for _, r := range c.openRelays() {
				io.WriteString(r.down.Stderr(), "\r\nsekisho: "+msg+"\r\n")
			}
		case <-done:
			return
		}
	}
}

// heldChannel is a moderated session's channel: while its input is held,
// what the technician types is dropped (with a terminal) or waits (a
// transfer or a command's input), and so does the end of their input.
type heldChannel struct {
	ssh.Channel
	seat      *seat
	pty       bool
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

func newHeldChannel(ch ssh.Channel, st *seat, pty bool) *heldChannel {
	return &heldChannel{Channel: ch, seat: st, pty: pty, closed: make(chan struct{})}
}

// errHeldEnded ends a read that waited for a hold to be released, when
// the session or the channel ended first: nothing of it was sent.
var errHeldEnded = errors.New("the session ended while its input was held")

func (h *heldChannel) Read(p []byte) (int, error) {
	for {
		n, err := h.Channel.Read(p)
		if !h.seat.held.Load() {
			return n, err
		}
		if h.pty && n > 0 {
			h.Channel.Write([]byte("\a")) // held: a bell, nothing sent
			if err == nil {
				continue
			}
			n = 0
		}
		// A transfer's bytes, or the end of the input, wait for the
		// release.
		if !h.awaitRelease() {
			return 0, errHeldEnded
		}
		return n, err
	}
}

// awaitRelease waits while the input is held, and reports false when the
// session or the channel ended first.
func (h *heldChannel) awaitRelease() bool {
	for h.seat.held.Load() {
		_, changed := h.seat.enough()
		select {
		case <-changed:
		case <-h.seat.done:
			return false
		case <-h.seat.conn.closing:
			return false
		case <-h.seat.conn.techGone:
			return false
		case <-h.closed:
			return false
		}
	}
	return true
}

func (h *heldChannel) Close() error {
	h.closeOnce.Do(func() { close(h.closed) })
	return h.Channel.Close()
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

// Seat is a moderator's place at a session: a *Moderator on this node, or
// one on the node that serves the session (Peers), where it is taken
// while Watch streams and every action is checked.
type Seat interface {
	Session() broker.ModeratedSession
	Say(text string) error
	Hold(hold bool) error
	End(reason string) error
	Watch(ctx context.Context, w io.Writer, opt recording.WatchOptions) error
	Leave()
}

// MayModerate returns session id of this node if name may moderate it.
func (s *Server) MayModerate(id, name string) (broker.ModeratedSession, error) {
	if s.cfg.Access == nil {
		return broker.ModeratedSession{}, &ModerationRefused{Why: "this sekisho has no moderated sessions", NotHere: true}
	}
	st, err := s.seatFor(id, name)
	if err != nil {
		return broker.ModeratedSession{}, err
	}
	return st.info(), nil
}

// ModerateAnywhere seats name at session id, on this node or, through
// Peers, on the node that serves it; audited there.
func (s *Server) ModerateAnywhere(ctx context.Context, id, name, source string) (Seat, error) {
	m, err := s.ModerateHere(id, name, source)
	if err == nil {
		return m, nil
	}
	if rf := (*ModerationRefused)(nil); errors.As(err, &rf) && rf.NotHere && s.cfg.Peers != nil {
		var seat Seat
		if seat, err = s.cfg.Peers.Moderate(ctx, id, name); err == nil {
			return seat, nil
		}
	}
	s.refuseModeration(name, source, id, "moderate", err)
	return nil, err
}

// SeatedAnywhere is name's place at session id while they watch it,
// here or on the node that serves it.
func (s *Server) SeatedAnywhere(ctx context.Context, id, name, source string) (Seat, error) {
	m, err := s.Seated(id, name, source)
	if err == nil {
		return m, nil
	}
	if rf := (*ModerationRefused)(nil); !errors.As(err, &rf) || !rf.NotHere || s.cfg.Peers == nil {
		return nil, err
	}
	return s.cfg.Peers.Seated(ctx, id, name)
}

// ModeratedAnywhere lists the sessions name may moderate, of this node
// and, through Peers, of the others.
func (s *Server) ModeratedAnywhere(ctx context.Context, name string) []broker.ModeratedSession {
	out := s.Moderated(name)
	if s.cfg.Peers != nil {
		out = append(out, s.cfg.Peers.Moderated(ctx, name)...)
	}
	return out
}

// endedByModerator is why a moderator ended the session, or "".
func (s *seat) endedByModerator() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endWhy
}

// endModerated ends a moderated session with why: at once when it is
// live, else as it goes live (goLive), or before it starts.
func (c *conn) endModerated(why string) {
	st := c.seat
	st.mu.Lock()
	if st.endWhy == "" {
		st.endWhy = why
	}
	st.notifyLocked()
	st.mu.Unlock()
	if c.live.Load() {
		c.terminate(why)
	}
}
