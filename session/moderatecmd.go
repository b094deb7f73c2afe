package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/sekisho/sekisho/recording"
)

// moderate seats the technician as a moderator of a session of this node
// and shows it live until they leave (Ctrl-C) or it ends. Ctrl-] opens a
// command line: say TEXT, hold, release, end REASON.
func (c *command) moderate(ctx context.Context, f *flags) int {
	if err := f.allow(); err != nil || len(f.args) != 1 {
		c.errorf("sekisho: usage: moderate SESSION (with a terminal: ssh -t)\n")
		return exitUsage
	}
	id := f.args[0]
	refuse := func(err error) int {
		c.srv.refuseModeration(c.tech.Name, c.source, id, "command \"moderate\"", err)
		c.errorf("sekisho: moderate: %s\n", err)
		return exitRefused
	}
	var seat Seat
	st, err := c.srv.seatFor(id, c.tech.Name)
	var rf *ModerationRefused
	switch {
	case err == nil:
	case errors.As(err, &rf) && rf.NotHere && c.srv.cfg.Peers != nil:
		// Another node may serve it: seated there, through the cluster's link.
		if seat, err = c.srv.cfg.Peers.Moderate(ctx, id, c.tech.Name); err != nil {
			return refuse(err)
		}
	default:
		return refuse(err)
	}
	if !c.pty {
		return refuse(errors.New("a moderator watches on a terminal: ssh -t"))
	}
	if seat == nil {
		seat = c.srv.seat(st, c.tech.Name, c.source)
	}
	defer seat.Leave()
	ms := seat.Session()
	if ms.Technician == "" { // another node's, which did not answer
		ms.Technician, ms.Target = "the technician", "the target"
	}
	fmt.Fprintf(c.raw, "[sekisho: moderating session %s of %s on %s; your leaving holds their input]\r\n"+
		"[sekisho: Ctrl-C leaves; Ctrl-] then: say TEXT, hold, release, end REASON]\r\n", id, ms.Technician, ms.Target)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	out := &pausable{w: c.raw, ctx: ctx}
	go c.moderatorKeys(seat, id, ms.Technician, out, stop)
	err = seat.Watch(ctx, out, recording.WatchOptions{})
	if _, here := seat.(*Moderator); !here && err != nil && !errors.Is(err, context.Canceled) {
		// Seated through another node: a refusal there, or the link.
		c.srv.log.Warn("moderation through another node ended", "technician", c.tech.Name, "session", id, "err", err)
		if errors.As(err, &rf) {
			return refuse(err)
		}
		fmt.Fprintf(c.raw, "\r\n[sekisho: the link to the node that serves session %s failed; moderate again]\r\n", id)
		return exitRefused
	}
	return c.watched("moderate", "moderating", id, err)
}

// moderatorKeys reads the moderator's keys until their input ends:
// Ctrl-C leaves; Ctrl-] opens a command line, on which Enter runs the
// command and Esc or Ctrl-C closes it. The live view waits while the line
// is open.
func (c *command) moderatorKeys(m Seat, id, technician string, out *pausable, leave func()) {
	buf := make([]byte, 256)
	var line []byte
	open := false
	closeLine := func() {
		line, open = nil, false
		out.resume()
	}
	for {
		n, err := c.in.Read(buf)
		for _, b := range buf[:n] {
			switch {
			case !open && b == 0x03:
				leave()
			case !open && b == 0x1d:
				open = true
				out.pause()
				io.WriteString(c.raw, "\r\n\x1b[7m[sekisho]\x1b[0m say TEXT | hold | release | end REASON (Esc closes)\r\nmoderate> ")
			case !open:
				// The moderator's keys do not reach the session.
			case b == '\r' || b == '\n':
				io.WriteString(c.raw, "\r\n")
				io.WriteString(c.raw, "[sekisho: "+c.moderatorCommand(m, id, technician, string(line))+"]\r\n")
				closeLine()
			case b == 0x1b || b == 0x03:
				io.WriteString(c.raw, "\r\n[sekisho: closed]\r\n")
				closeLine()
			case b == 0x7f || b == 0x08:
				if len(line) > 0 {
					line = line[:len(line)-1]
					io.WriteString(c.raw, "\b \b")
				}
			case b >= 0x20 && len(line) < maxModeratorText+16:
				line = append(line, b)
				c.raw.Write([]byte{b})
			}
		}
		if err != nil {
			if open {
				out.resume()
			}
			return // end of input is not the end of the watch: output goes on
		}
	}
}

// moderatorCommand runs one command line of a moderator and says how it
// went.
func (c *command) moderatorCommand(m Seat, id, technician, line string) string {
	verb, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	var err error
	var done string
	switch verb {
	case "say":
		err, done = m.Say(rest), "sent to "+technician
	case "hold":
		err, done = m.Hold(true), technician+"'s input is held; release lets it through"
	case "release":
		err, done = m.Hold(false), technician+"'s input goes through"
	case "end":
		err, done = m.End(rest), "the session is ended"
	case "":
		return "nothing done"
	default:
		return fmt.Sprintf("%q is not a moderator command: say TEXT, hold, release, end REASON", verb)
	}
	if err != nil {
		c.srv.refuseModeration(c.tech.Name, c.source, id, "moderator's "+strconv.Quote(verb), err)
		return err.Error()
	}
	return done
}

// pausable is a writer that waits while paused (a moderator typing a
// command), until resumed or ctx is done.
type pausable struct {
	w   io.Writer
	ctx context.Context

	mu      sync.Mutex
	resumed chan struct{} // non-nil while paused
}

func (p *pausable) Write(b []byte) (int, error) {
	for {
		p.mu.Lock()
		r := p.resumed
		if r == nil {
			defer p.mu.Unlock()
			return p.w.Write(b)
		}
		p.mu.Unlock()
		select {
		case <-r:
		case <-p.ctx.Done():
			return 0, p.ctx.Err()
		}
	}
}

func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		p.resumed = make(chan struct{})
	}
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}
