package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// pendingChannel is the technician's first session channel, accepted
// while the session waited for approval, with what it asked for before
// its start. Once approved, the requests are replayed to the target.
type pendingChannel struct {
	ch      ssh.Channel
	reqs    <-chan *ssh.Request
	prelude []*ssh.Request // WantReply false: the technician had its answers
	stop    func()         // called when the session ends
}

// fail ends the channel with msg and exit status 1.
func (pc *pendingChannel) fail(msg string) {
	io.WriteString(pc.ch.Stderr(), msg+"\r\n")
	pc.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{1}))
	pc.ch.CloseWrite()
	pc.ch.Close()
}

// errLeft ends a wait: the technician left, or the server is shutting down.
var errLeft = errors.New("left while waiting")

// waiter is a session waiting for an approval: it answers the first
// channel's requests, rejects other channels, reads the technician's
// keys (with a terminal) and wakes on changes of the request.
type waiter struct {
	c     *conn
	chans <-chan ssh.NewChannel
	ch    ssh.Channel
	reqs  <-chan *ssh.Request
	gone  <-chan struct{} // the connection ended

	pty     *ptyRequest
	env     []envRequest
	start   *ssh.Request
	input   chan []byte // keys, when there is a terminal
	inBuf   []byte
	inErr   error
	inMu    sync.Mutex
	stopped chan struct{} // closed when the wait is over without handoff
	// moderators: the wait is for moderators (an approval, if any, came).
	moderators bool
}

// awaitApproval holds the session until its access request is approved,
// filing one if needed. It returns the first channel to relay, or false
// when the session ends (after telling the technician why).
func (c *conn) awaitApproval(ctx context.Context, chans <-chan ssh.NewChannel) (*pendingChannel, bool) {
	w := &waiter{c: c, chans: chans, gone: c.techGone, stopped: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			close(w.stopped)
		}
	}()
	if !w.firstChannel(ctx) {
		return nil, false
	}
	if !w.startRequest(ctx) {
		return nil, false
	}
	pc, done := w.run(ctx)
	ok = done
	return pc, done
}

// firstChannel waits for a session channel, refusing port forwards.
func (w *waiter) firstChannel(ctx context.Context) bool {
	c := w.c
	for {
		select {
		case nch, ok := <-w.chans:
			if !ok {
				return false
			}
			if nch.ChannelType() != "session" {
				c.refuseChannel(ctx, nch, ssh.Prohibited, fmt.Sprintf("access to %s awaits %s: nothing is forwarded before", c.id.target.Name, w.awaits()))
				continue
			}
			ch, reqs, err := nch.Accept()
			if err != nil {
				return false
			}
			w.ch, w.reqs = ch, reqs
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// startRequest answers the channel's requests until it asks for a shell,
// a command or a subsystem.
func (w *waiter) startRequest(ctx context.Context) bool {
	for w.start == nil {
		select {
		case req, ok := <-w.reqs:
			if !ok {
				return false
			}
			w.request(req)
		case nch, ok := <-w.chans:
			if !ok {
				return false
			}
			w.refuseChannel(ctx, nch)
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// request answers one request of the waiting channel.
func (w *waiter) request(req *ssh.Request) {
	ok := false
	switch req.Type {
	case "pty-req":
		var p ptyRequest
		if w.start == nil && ssh.Unmarshal(req.Payload, &p) == nil {
			w.pty, ok = &p, true
		}
	case "env":
		var e envRequest
		if w.start == nil && ssh.Unmarshal(req.Payload, &e) == nil && w.c.srv.envAllowed(e.Name) {
			w.env, ok = append(w.env, e), true
		}
	case "window-change":
		var wc windowChange
		if w.pty != nil && ssh.Unmarshal(req.Payload, &wc) == nil {
			w.pty.Cols, w.pty.Rows, w.pty.WidthPx, w.pty.HeightPx = wc.Cols, wc.Rows, wc.WidthPx, wc.HeightPx
			ok = true
		}
	case "shell", "exec", "subsystem":
		if w.start == nil {
			w.start, ok = req, true
		}
	}
	if req.WantReply {
		req.Reply(ok, nil)
	}
}

func (w *waiter) refuseChannel(ctx context.Context, nch ssh.NewChannel) {
	w.c.refuseChannel(ctx, nch, ssh.Prohibited, fmt.Sprintf("access to %s awaits %s: no other channel opens before", w.c.id.target.Name, w.awaits()))
}

// awaits names what the session waits for.
func (w *waiter) awaits() string {
	if w.moderators {
		return "a moderator"
	}
	return "approval"
}

// say writes a line for the technician: on the terminal, or on stderr.
func (w *waiter) say(format string, args ...any) {
	msg := "sekisho: " + fmt.Sprintf(format, args...)
	if w.pty != nil {
		io.WriteString(w.ch, "\r\x1b[K"+strings.ReplaceAll(msg, "\n", "\r\n")+"\r\n")
		return
	}
	io.WriteString(w.ch.Stderr(), msg+"\n")
}

// end closes the waiting channel with exit status 1.
func (w *waiter) end(format string, args ...any) {
	w.say(format, args...)
	w.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{1}))
	w.ch.CloseWrite()
	w.ch.Close()
}

// readKeys reads the technician's keys into w.input until the channel
// ends or the wait is over. After a handoff, the relay reads them.
func (w *waiter) readKeys() {
	w.input = make(chan []byte)
	go func() {
		defer close(w.input)
		for {
			buf := make([]byte, relayBufSize)
			n, err := w.ch.Read(buf)
			if n > 0 {
				select {
				case w.input <- buf[:n]:
				case <-w.stopped:
					return
				}
			}
			if err != nil {
				w.inMu.Lock()
				w.inErr = err
				w.inMu.Unlock()
				return
			}
		}
	}()
}

// event is what wakes a waiting session.
type event int

const (
	evKeys event = iota
	evRequest
	evTick
	evPoll
	evChange
)

// next waits for something to happen; keys read are appended to w.inBuf.
func (w *waiter) next(ctx context.Context, sub <-chan struct{}, tick, poll <-chan time.Time) (event, error) {
	for {
		select {
		case b, ok := <-w.input:
			if !ok {
				return 0, errLeft
			}
			w.inBuf = append(w.inBuf, b...)
			return evKeys, nil
		case req, ok := <-w.reqs:
			if !ok {
				return 0, errLeft
			}
			w.request(req)
			return evRequest, nil
		case nch, ok := <-w.chans:
			if !ok {
				return 0, errLeft
			}
			w.refuseChannel(ctx, nch)
		case <-sub:
			return evChange, nil
		case <-tick:
			return evTick, nil
		case <-poll:
			return evPoll, nil
		case <-w.gone:
			return 0, errLeft
		case <-ctx.Done():
			return 0, errLeft
		}
	}
}

// errInterrupted is Ctrl-C (or Ctrl-D on an empty line) at a prompt.
var errInterrupted = errors.New("interrupted")

// readLine reads one line at a prompt, echoing and editing it (backspace,
// Ctrl-U); escape sequences such as arrow keys are ignored.
func (w *waiter) readLine(ctx context.Context, prompt string) (string, error) {
	io.WriteString(w.ch, prompt)
	var line []byte
	esc := 0 // 1 after ESC, 2 inside a CSI sequence
	for {
		for len(w.inBuf) > 0 {
			b := w.inBuf[0]
			w.inBuf = w.inBuf[1:]
			switch {
			case esc == 1:
				esc = 0
				if b == '[' || b == 'O' {
					esc = 2
				}
			case esc == 2:
				if b >= 0x40 && b <= 0x7e {
					esc = 0
				}
			case b == 0x1b:
				esc = 1
			case b == 3:
				io.WriteString(w.ch, "^C\r\n")
				return "", errInterrupted
			case b == 4 && len(line) == 0:
				io.WriteString(w.ch, "\r\n")
				return "", errInterrupted
			case b == '\r' || b == '\n':
				io.WriteString(w.ch, "\r\n")
				if b == '\r' && len(w.inBuf) > 0 && w.inBuf[0] == '\n' {
					w.inBuf = w.inBuf[1:]
				}
				return string(line), nil
			case b == 0x7f || b == 8:
				if len(line) > 0 {
					_, size := utf8.DecodeLastRune(line)
					line = line[:len(line)-size]
					io.WriteString(w.ch, "\b \b")
				}
			case b == 0x15:
				for range utf8.RuneCount(line) {
					io.WriteString(w.ch, "\b \b")
				}
				line = line[:0]
			case b < 0x20:
			default:
				if len(line) < 1024 {
					line = append(line, b)
					w.ch.Write([]byte{b})
				}
			}
		}
		if _, err := w.next(ctx, nil, nil, nil); err != nil {
			return "", err
		}
	}
}

// run files or finds the request and waits for its outcome.
func (w *waiter) run(ctx context.Context) (*pendingChannel, bool) {
	c := w.c
	access := c.srv.cfg.Access
	tech, tg, d := c.id.tech, c.id.target, c.id.decision
	reqType, command := w.start.Type, ""
	var sr stringRequest
	if reqType != "shell" && ssh.Unmarshal(w.start.Payload, &sr) == nil {
		command = sr.Value
	}
	if reqType == "subsystem" && command != "sftp" {
		w.end("subsystem %q is not available through sekisho", command)
		return nil, false
	}
	if why := checkLimits(d, tg.Name, reqType, command); why != "" {
		c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name,
			Source: c.source, Detail: fmt.Sprintf("%s %q refused before an access request: %s", reqType, command, why)})
		w.end("%s, even once approved", why)
		return nil, false
	}
	interactive := w.pty != nil
	if interactive {
		w.readKeys()
	}
	w.say("%s.", d.Reason)

	var (
		req   broker.AccessRequest
		filed bool // by this session: leaving cancels it
	)
	pending, err := access.Requests(ctx, broker.RequestFilter{Technician: tech.Name, Target: tg.Name, States: []broker.RequestState{broker.RequestPending}})
	if err != nil {
		c.srv.log.Error("access requests unavailable", append(c.logArgs(), "err", err)...)
		w.end("access requests are unavailable at the moment; try again later")
		return nil, false
	}
	for _, p := range pending {
		if p.Rule == d.Rule && time.Now().Before(p.Expires) && p.UsableFrom(d.Inputs.Source) {
			req = p
			break
		}
	}
	switch {
	case req.ID != 0:
		w.say("waiting on your request %d, filed %s: %s", req.ID, req.Created.UTC().Format("15:04:05 UTC"), req.Reason)
	case !interactive:
		host, port := "BASTION", "2222"
		if h, p, err := net.SplitHostPort(c.sc.LocalAddr().String()); err == nil {
			host, port = h, p
		}
		w.end("without a terminal the reason cannot be asked here: file a request first, then run this again:\n  ssh -p %s %s@%s request %s --reason TICKET WHAT-YOU-WILL-DO --duration %s",
			port, tech.Name, host, tg.Name, d.Approval.MaxGrant)
		return nil, false
	default:
		r, existing, ok := w.file(ctx)
		if !ok {
			return nil, false
		}
		req, filed = r, !existing
		if existing {
			w.say("you already had request %d for %s (filed %s: %s); waiting on it", r.ID, tg.Name, r.Created.UTC().Format("15:04:05 UTC"), r.Reason)
		}
	}
	approvers, hooks := access.Notified(&req)
	notified := "approvers " + listOrNone(approvers)
	if len(hooks) > 0 {
		notified += "; webhooks " + strings.Join(hooks, ", ")
	}
	w.say("request %d is waiting for %d approval(s); notified: %s", req.ID, req.Needed, notified)
	if interactive {
		w.say("the session continues as soon as it is approved; Ctrl-C cancels the request")
	}

	sub, unsub := access.Subscribe(req.ID)
	defer unsub()
	// A change between reading the request and subscribing is not missed.
	if r, err := access.Request(ctx, req.ID); err == nil {
		req = r
	}
	tick := time.NewTicker(c.srv.cfg.StatusEvery)
	defer tick.Stop()
	poll := time.NewTicker(c.srv.cfg.PollEvery)
	defer poll.Stop()
	waitStart := time.Now()
	lastStatus, lastRevised := "", ""
	for {
		if req.State == broker.RequestPending && !time.Now().Before(req.Expires) {
			access.ExpireRequests(ctx)
			if r, err := access.Request(ctx, req.ID); err == nil {
				req = r
			}
		}
		// A reload or an approval that no longer counts changed the
		// request: the technician hears what and why.
		if req.Revised != lastRevised {
			lastRevised = req.Revised
			w.say("request %d changed: %s", req.ID, req.Revised)
		}
		switch req.State {
		case broker.RequestApproved:
			return w.approved(ctx, req)
		case broker.RequestPending:
		default:
			w.end("request %d %s", req.ID, req.Status(time.Now()))
			return nil, false
		}
		status := fmt.Sprintf("request %d: %d of %d approvals", req.ID, len(req.Approvals), req.Needed)
		if len(req.Approvals) > 0 {
			var by []string
			for _, a := range req.Approvals {
				by = append(by, a.By)
			}
			status += " (" + strings.Join(by, ", ") + ")"
		}
		if interactive {
			io.WriteString(w.ch, fmt.Sprintf("\r\x1b[K%s; waiting %s, expires in %s",
				status, time.Since(waitStart).Round(time.Second), time.Until(req.Expires).Round(time.Second)))
		} else if status != lastStatus {
			w.say("%s; waiting (expires %s)", status, req.Expires.UTC().Format("15:04:05 UTC"))
		}
		lastStatus = status

		ev, err := w.next(ctx, sub, tick.C, poll.C)
		if err != nil {
			if filed && ctx.Err() == nil {
				access.Cancel(context.Background(), tech.Name, req.ID, "the technician left while waiting")
			}
			return nil, false
		}
		switch ev {
		case evKeys:
			if i := strings.IndexByte(string(w.inBuf), 3); i >= 0 {
				w.inBuf = nil
				io.WriteString(w.ch, "^C\r\n")
				if _, err := access.Cancel(ctx, tech.Name, req.ID, "cancelled by the technician (Ctrl-C)"); err != nil {
					w.end("request %d could not be cancelled: %s", req.ID, c.refusalOrLogged("access request not cancelled", err))
				} else {
					w.end("request %d cancelled", req.ID)
				}
				return nil, false
			}
			w.inBuf = nil // typing ahead is not sent to the target
		case evChange, evPoll:
			if r, err := access.Request(ctx, req.ID); err == nil {
				req = r
			}
		}
	}
}

// file asks for the reason and the duration and files the request.
func (w *waiter) file(ctx context.Context) (broker.AccessRequest, bool, bool) {
	c := w.c
	access := c.srv.cfg.Access
	max := c.id.decision.Approval.MaxGrant
	// Each answer is checked as it is given and only a wrong one is
	// asked again, three times at most.
	ask := func(prompt string, check func(string) error) (string, bool) {
		for range 3 {
			answer, err := w.readLine(ctx, prompt)
			if err != nil {
				w.leave(err)
				return "", false
			}
			if err := check(answer); err != nil {
				w.say("%s", refusalText(err))
				continue
			}
			return answer, true
		}
		w.end("no request filed")
		return "", false
	}
	reason, ok := ask("Reason (ticket and what you will do): ", func(s string) error {
		_, err := broker.CheckReason(s)
		return err
	})
	if !ok {
		return broker.AccessRequest{}, false, false
	}
	var d time.Duration
	if _, ok := ask(fmt.Sprintf("Duration (at most %s) [%s]: ", max, max), func(s string) error {
		d = 0
		if s = strings.TrimSpace(s); s != "" {
			var err error
			if d, err = time.ParseDuration(s); err != nil || d <= 0 {
				return fmt.Errorf("duration %q: write it as 30m, 1h or 1h30m", s)
			}
		}
		_, err := broker.CheckGrantDuration(d, c.id.decision.Rule, max)
		return err
	}); !ok {
		return broker.AccessRequest{}, false, false
	}
	r, existing, err := access.RequestAccess(ctx, c.id.tech.Name, c.id.target.Name, c.source, reason, d)
	var rf *broker.Refusal
	switch {
	case errors.As(err, &rf):
		w.end("%s", rf.Msg)
		return broker.AccessRequest{}, false, false
	case err != nil:
		c.srv.log.Error("access request not filed", append(c.logArgs(), "err", err)...)
		w.end("the request could not be filed; try again later")
		return broker.AccessRequest{}, false, false
	}
	return r, existing, true
}

// refusalOrLogged is what the technician is told of err: a refusal's
// own words, or, for anything else (the store failing, say), that it
// failed, with the error in the log only.
func (c *conn) refusalOrLogged(what string, err error) string {
	var rf *broker.Refusal
	if errors.As(err, &rf) {
		return rf.Msg
	}
	c.srv.log.Error(what, append(c.logArgs(), "err", err)...)
	return "try again in a minute, or tell the sekisho operator"
}

// refusalText is what the technician is told of a wrong answer.
func refusalText(err error) string {
	var rf *broker.Refusal
	if errors.As(err, &rf) {
		return rf.Msg
	}
	return err.Error()
}

func (w *waiter) leave(err error) {
	if errors.Is(err, errInterrupted) {
		w.end("no request filed")
	}
}

// approved re-checks the decision with the grant and hands the channel
// over for relaying.
func (w *waiter) approved(ctx context.Context, req broker.AccessRequest) (*pendingChannel, bool) {
	c := w.c
	d, _, err := c.srv.cfg.Broker.Authorize(ctx, c.id.tech.Name, c.id.target.Name, c.source)
	if err != nil || !d.Allowed() {
		if d.Reason == "" {
			c.srv.log.Error("access not decided after the approval", append(c.logArgs(), "request", req.ID, "err", err)...)
			d.Reason = "access could not be decided now; connect again in a minute, or tell the sekisho operator"
		}
		w.end("request %d was approved, but %s", req.ID, d.Reason)
		return nil, false
	}
	if d.RequireMFA && !c.id.decision.RequireMFA {
		// The rules changed while waiting: the login lacked a factor
		// they now require.
		w.end("request %d was approved, but a second factor is now required for %s: connect again", req.ID, c.id.target.Name)
		return nil, false
	}
	c.id.decision = d
	var by []string
	for _, a := range req.Approvals {
		s := a.By
		if a.Comment != "" {
			s += fmt.Sprintf(" (%q)", a.Comment)
		}
		by = append(by, s)
	}
	if d.Moderation != nil {
		w.say("request %d approved by %s, granted until %s", req.ID, strings.Join(by, ", "), req.GrantEnd.UTC().Format("15:04:05 UTC"))
		if !w.awaitModerators(ctx) {
			return nil, false
		}
		return w.handoff(), true
	}
	w.say("request %d approved by %s; connecting to %s, granted until %s",
		req.ID, strings.Join(by, ", "), c.id.target.Name, req.GrantEnd.UTC().Format("15:04:05 UTC"))
	return w.handoff(), true
}

// handoff hands the waiting channel over for relaying, with what it asked
// for while it waited; a moderated session's input goes through its seat.
func (w *waiter) handoff() *pendingChannel {
	pc := &pendingChannel{ch: w.ch, reqs: w.reqs, stop: sync.OnceFunc(func() { close(w.stopped) })}
	if w.pty != nil {
		pc.prelude = append(pc.prelude, &ssh.Request{Type: "pty-req", Payload: ssh.Marshal(w.pty)})
		pc.ch = &handoff{Channel: w.ch, w: w}
	}
	for _, e := range w.env {
		pc.prelude = append(pc.prelude, &ssh.Request{Type: "env", Payload: ssh.Marshal(&e)})
	}
	pc.prelude = append(pc.prelude, &ssh.Request{Type: w.start.Type, Payload: w.start.Payload})
	if st := w.c.seat; st != nil {
		pc.ch = newHeldChannel(pc.ch, st, w.pty != nil)
	}
	return pc
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none configured)"
	}
	return strings.Join(s, ", ")
}

// handoff is the waiting channel after approval: the keys go on coming
// from the waiter's reader, which owns the channel's reads.
type handoff struct {
	ssh.Channel
	w   *waiter
	buf []byte
}

func (h *handoff) Read(p []byte) (int, error) {
	if len(h.buf) == 0 {
		b, ok := <-h.w.input
		if !ok {
			h.w.inMu.Lock()
			defer h.w.inMu.Unlock()
			if h.w.inErr == nil {
				return 0, io.EOF
			}
			return 0, h.w.inErr
		}
		h.buf = b
	}
	n := copy(p, h.buf)
	h.buf = h.buf[n:]
	return n, nil
}
