package session

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// relayBufSize is the size of the first read buffer in each copy
// direction. Interactive channels (keystrokes, their echo) never fill it,
// a terminal's stderr gets nothing at all, and a thousand sessions hold
// three each, so it is small; a bulk transfer doubles it with every full
// read.
const relayBufSize = 1 << 10

// relayIdleReads is how many reads in a row of at most relayBufSize make
// a bulk copy interactive again: it gives back its two large buffers.
const relayIdleReads = 64

// relayBufMax is the size a copy's buffer grows to while reads fill it (a
// bulk transfer): fewer, larger recorder writes. Idle interactive
// channels keep the small buffer.
const relayBufMax = 256 << 10

// maxAuditedRefusals is how many refused sftp requests of one channel
// are audited one by one; the rest are counted in one row at its end.
const maxAuditedRefusals = 100

// sftpReadBuf buffers the SFTP streams: packets are read in two parts
// (length, then body), and every read of an ssh channel costs a window
// adjustment, so unbuffered a 32 KiB write took several.
const sftpReadBuf = 64 << 10

// relay is one session channel: the technician's side (down) and the
// target's side (up), with the recording in between.
type relay struct {
	conn *conn
	down ssh.Channel
	up   ssh.Channel
	// prelude are requests the technician made, and had answered, while
	// the session waited for approval; they go to the target first.
	prelude []*ssh.Request
	// replying is held while a technician's request is handled, until
	// its reply is sent: a channel or connection closed meanwhile would
	// leave the technician's client without it (an exec the target
	// answered and ended at once reads as a lost channel, not as the
	// command's exit).
	replying chan struct{}

	// mu guards rec and started. start holds it until the target answered
	// and the pumps run, so that the target-side loop never sees a
	// half-started channel.
	mu         sync.Mutex
	rec        *recording.Channel
	started    bool
	startTried bool         // one shell, exec or subsystem attempt per channel
	recClosed  bool         // rec is closed: nothing more is recorded on it
	pty        *ptyRequest  // request loop only
	env        []envRequest // request loop only: env received before start
	transfer   bool         // request loop only: the channel is a file transfer
	refusal    string       // request loop only: why the rule refused the start
	// watch follows the file transfers of an sftp, scp or rsync channel
	// (nil for others); set before the pumps start.
	watch transferObserver

	pumps   sync.WaitGroup // the three data pumps
	outDone chan struct{}  // closed when the target's output is fully relayed
	// exitSent is closed once the exit status (or signal) was relayed, and
	// upClosed once the target closed the channel. EOF is sent to the
	// technician only after one of them: OpenSSH clients close a channel
	// as soon as both sides sent EOF, and an exit status sent after that
	// is lost.
	exitSent chan struct{}
	exitOnce sync.Once
	upClosed chan struct{}
	// downClosed is closed once the technician closed the channel (or
	// their connection ended).
	downClosed chan struct{}
	targetWord sync.Once // awaitTargetWord
	failed     sync.Once
}

type ptyRequest struct {
	Term     string
	Cols     uint32
	Rows     uint32
	WidthPx  uint32
	HeightPx uint32
	Modes    string
}

type windowChange struct {
	Cols     uint32
	Rows     uint32
	WidthPx  uint32
	HeightPx uint32
}

type stringRequest struct{ Value string }

type envRequest struct {
	Name  string
	Value string
}

type exitStatus struct{ Status uint32 }

type exitSignal struct {
	Signal     string
	CoreDumped bool
	Message    string
	Lang       string
}

func (r *relay) run(downReqs, upReqs <-chan *ssh.Request) {
	r.outDone = make(chan struct{})
	r.exitSent = make(chan struct{})
	r.upClosed = make(chan struct{})
	r.downClosed = make(chan struct{})
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		r.fromTarget(upReqs)
	}()
	r.fromTechnician(downReqs)
	// The technician closed the channel (or the connection ended).
	close(r.downClosed)
	r.up.Close()
	<-upDone
	r.pumps.Wait()
	if r.watch != nil {
		r.record(r.watch.end())
	}
	r.mu.Lock()
	r.recClosed = true
	r.mu.Unlock()
	if r.rec != nil {
		if err := r.rec.Close(); err != nil {
			r.conn.srv.log.Error("recording channel not closed cleanly", append(r.conn.logArgs(), "err", err)...)
		}
	}
}

// fromTechnician handles the technician's channel requests until the
// channel closes.
func (r *relay) fromTechnician(reqs <-chan *ssh.Request) {
	for _, req := range r.prelude {
		ok := r.handleRequest(req)
		if r.refusal != "" {
			break
		}
		switch req.Type {
		case "shell", "exec", "subsystem":
			if !ok {
				r.refusal = fmt.Sprintf("%s refused to start the %s", r.conn.id.target.Name, req.Type)
			}
		}
	}
	if r.refusal != "" {
		r.endRefused()
	}
	for req := range reqs {
		r.replying <- struct{}{}
		ok := r.handleRequest(req)
		if req.WantReply {
			req.Reply(ok, nil)
		}
		<-r.replying
		if r.refusal != "" {
			r.endRefused()
		}
	}
}

// endRefused tells the technician why the rule refused the channel's
// start and ends the channel with exit status 1.
func (r *relay) endRefused() {
	fmt.Fprintf(r.down.Stderr(), "sekisho: %s\r\n", r.refusal)
	r.down.SendRequest("exit-status", false, ssh.Marshal(exitStatus{1}))
	r.down.CloseWrite()
	r.down.Close()
	r.refusal = ""
}

func (r *relay) handleRequest(req *ssh.Request) bool {
	switch req.Type {
	case "pty-req":
		// Held until the channel starts: a file transfer gets none.
		var p ptyRequest
		if r.started || ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		r.pty = &p
		return true
	case "env":
		var e envRequest
		if ssh.Unmarshal(req.Payload, &e) != nil {
			return false
		}
		if !r.conn.srv.envAllowed(e.Name) {
			r.conn.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused,
				Technician: r.conn.id.tech.Name, Target: r.conn.id.target.Name, Source: r.conn.source,
				Session: r.conn.sessionID, Detail: "env " + strconv.Quote(e.Name) + " refused"})
			return false
		}
		if !r.started {
			// Held until the channel's recording exists, then recorded
			// and forwarded ahead of the shell or command.
			r.env = append(r.env, e)
			return true
		}
		if r.transfer {
			return false // a file transfer gets no environment
		}
		if !r.record(r.rec.Event("x-env", e.Name+"="+e.Value)) {
			return false
		}
		return r.forward(req)
	case "window-change":
		var w windowChange
		if ssh.Unmarshal(req.Payload, &w) != nil {
			return false
		}
		if r.pty == nil {
			return false // no terminal (yet, or ever: a file transfer)
		}
		if r.rec == nil {
			r.pty.Cols, r.pty.Rows, r.pty.WidthPx, r.pty.HeightPx = w.Cols, w.Rows, w.WidthPx, w.HeightPx
			return true // the terminal starts at this size
		}
		if !r.record(r.rec.Resize(int(w.Cols), int(w.Rows))) {
			return false
		}
		return r.forward(req)
	case "shell", "exec", "subsystem":
		return r.start(req)
	case "signal":
		var s stringRequest
		if !r.started || r.inputHeld() || ssh.Unmarshal(req.Payload, &s) != nil {
			return false
		}
		if !r.record(r.rec.Event("x-signal", s.Value)) {
			return false
		}
		return r.forward(req)
	case "break":
		if !r.started || r.inputHeld() || !r.record(r.rec.Event("x-break", "")) {
			return false
		}
		return r.forward(req)
	case "auth-agent-req@openssh.com", "x11-req":
		r.conn.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused,
			Technician: r.conn.id.tech.Name, Target: r.conn.id.target.Name, Source: r.conn.source,
			Session: r.conn.sessionID, Detail: req.Type + " refused"})
		return false
	default:
		return false
	}
}

// forward sends req to the target and returns the target's answer.
func (r *relay) forward(req *ssh.Request) bool {
	ok, err := r.up.SendRequest(req.Type, req.WantReply, req.Payload)
	if err != nil {
		return false
	}
	return ok || !req.WantReply
}

// start opens the channel's recording, records what is started, forwards
// the request and, when the target accepts, starts relaying data.
func (r *relay) start(req *ssh.Request) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.startTried || r.conn.ending.Load() {
		return false
	}
	r.startTried = true
	info := recording.ChannelInfo{Kind: req.Type}
	var event string
	switch req.Type {
	case "exec":
		var s stringRequest
		if ssh.Unmarshal(req.Payload, &s) != nil {
			return false
		}
		info.Command, event = s.Value, "x-exec"
	case "subsystem":
		var s stringRequest
		if ssh.Unmarshal(req.Payload, &s) != nil {
			return false
		}
		if s.Value != "sftp" {
			r.conn.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused,
				Technician: r.conn.id.tech.Name, Target: r.conn.id.target.Name, Source: r.conn.source,
				Session: r.conn.sessionID, Detail: "subsystem " + strconv.Quote(s.Value) + " refused"})
			return false
		}
		info.Command, event = s.Value, "x-subsystem"
	}
	if why := checkLimits(r.conn.id.decision, r.conn.id.target.Name, req.Type, info.Command); why != "" {
		c := r.conn
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.id.tech.Name,
			Target: c.id.target.Name, Source: c.source, Session: c.sessionID,
			Detail: fmt.Sprintf("%s %q refused: %s", req.Type, info.Command, why)})
		// Accepted, then ended with the reason and exit status 1: OpenSSH
		// clients show a message only on a channel that started.
		r.refusal = why
		return true
	}
	// A file transfer gets no terminal and no environment: on a
	// terminal, the target's programs (a login shell reading its rc
	// files first) behave otherwise than the transfer sekisho checked.
	var withheld []string
	if r.transfer = isTransfer(req.Type, info.Command); r.transfer {
		if r.pty != nil {
			withheld = append(withheld, "pty")
		}
		for _, e := range r.env {
			withheld = append(withheld, "env "+e.Name)
		}
		r.pty, r.env = nil, nil
	}
	if r.pty != nil {
		info.PTY, info.Term, info.Cols, info.Rows = true, r.pty.Term, int(r.pty.Cols), int(r.pty.Rows)
	}
	rec, err := r.conn.rec.Channel(info)
	if err != nil {
		r.recordingFailed(err)
		return false
	}
	r.rec = rec
	if st := r.conn.seat; st != nil {
		info := st.info()
		text := "watched by " + strings.Join(info.Moderators, ", ")
		if info.HeldBy != "" {
			text += "; input held by " + info.HeldBy
		}
		if !r.record(rec.Event("x-moderator", text)) {
			return false
		}
	}
	if len(withheld) > 0 && !r.record(rec.Event("x-withheld", strings.Join(withheld, ", ")+": not given to a file transfer")) {
		return false
	}
	if r.pty != nil {
		if ok, err := r.up.SendRequest("pty-req", true, ssh.Marshal(r.pty)); err != nil {
			return false
		} else if !ok {
			r.pty = nil
			if !r.record(rec.Event("x-pty-refused", r.conn.id.target.Name)) {
				return false
			}
			fmt.Fprintf(r.down.Stderr(), "sekisho: %s refused a terminal for this session\r\n", r.conn.id.target.Name)
		}
	}
	for _, e := range r.env {
		if !r.record(rec.Event("x-env", e.Name+"="+e.Value)) {
			return false
		}
		if _, err := r.up.SendRequest("env", false, ssh.Marshal(&e)); err != nil {
			return false
		}
	}
	r.env = nil
	if event != "" && !r.record(rec.Event(event, info.Command)) {
		return false
	}
	ok, err := r.up.SendRequest(req.Type, true, req.Payload)
	if err != nil || !ok {
		rec.Event("x-start-refused", req.Type)
		rec.Close()
		r.rec = nil
		return false
	}
	watch, err := newTransferObserver(req.Type, info.Command, rec.Event)
	if !r.record(err) {
		return false
	}
	r.watch = watch
	r.started = true
	r.pumps.Add(3)
	// The last of the two pumps of the target's output to end finishes
	// it (outputEnded) on its goroutine, rather than one more goroutine
	// per channel waiting for both.
	var outs atomic.Int32
	outs.Store(2)
	outEnded := func() {
		if outs.Add(-1) == 0 {
			r.outputEnded()
		}
	}
	files := r.conn.id.decision.Limits.Files
	if req.Type == "subsystem" && (files == broker.FilesUpload || files == broker.FilesDownload) {
		// The direction of sftp is in its requests: relay it packet by packet.
		g := newSFTPGuard(r.conn.id.decision.Limits)
		go func() {
			defer r.pumps.Done()
			r.sftpRequests(g)
		}()
		go func() {
			defer r.pumps.Done()
			defer outEnded()
			r.sftpReplies(g)
		}()
	} else {
		stdin, stdout := r.rec.Stdin, r.rec.Stdout
		if r.watch != nil {
			stdin, stdout = observed(stdin, r.watch.technician), observed(stdout, r.watch.target)
		}
		go func() {
			defer r.pumps.Done()
			r.pump(r.down, r.up, stdin, &r.conn.bytesIn, func() {
				r.record(r.rec.Event("x-eof", ""))
				r.up.CloseWrite()
			})
		}()
		go func() {
			defer r.pumps.Done()
			defer outEnded()
			r.pump(r.up, r.down, stdout, &r.conn.bytesOut, nil)
		}()
	}
	go func() {
		defer r.pumps.Done()
		defer outEnded()
		r.pump(r.up.Stderr(), r.down.Stderr(), r.rec.Stderr, &r.conn.bytesOut, nil)
	}()
	return true
}

// inputHeld reports whether the technician's input is held by the
// session's moderation: signals and breaks are input too.
func (r *relay) inputHeld() bool {
	st := r.conn.seat
	return st != nil && st.held.Load()
}

// outputEnded is called once the target's output (stdout and stderr) is
// fully relayed. EOF goes to the technician only after the exit status,
// or once the target closed the channel (see exitSent).
func (r *relay) outputEnded() {
	select {
	case <-r.exitSent:
	case <-r.upClosed:
		r.awaitTargetWord()
	}
	r.down.CloseWrite()
	close(r.outDone)
}

type counter interface{ Add(int64) int64 }

// pump copies src to dst, handing every read to record before writing
// it. On a recording error it stops and ends the session.
func (r *relay) pump(src io.Reader, dst io.Writer, record func([]byte) error, n counter, atEOF func()) {
	eof, rerr := copyRecorded(src, dst, record, n)
	if rerr != nil {
		r.recordingFailed(rerr)
		return
	}
	if eof && atEOF != nil {
		atEOF()
	}
}

// copyRecorded copies src to dst, handing every read to record before
// writing it. It returns whether src ended with EOF, and the recording
// error that stopped it, if one did.
func copyRecorded(src io.Reader, dst io.Writer, record func([]byte) error, n counter) (eof bool, recErr error) {
	buf := make([]byte, relayBufSize)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if rerr := record(buf[:k]); rerr != nil {
				return false, rerr
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return false, nil
			}
			n.Add(int64(k))
			if k == len(buf) {
				if len(buf) == relayBufMax {
					// A bulk transfer: from now on, writing one buffer
					// and recording the next overlap, until it turns
					// interactive again.
					var done bool
					if eof, recErr, done = copyOverlapped(src, dst, record, n, buf); done {
						return eof, recErr
					}
					buf = make([]byte, relayBufSize)
					continue
				}
				buf = make([]byte, 2*len(buf))
			}
		}
		if err != nil {
			return errors.Is(err, io.EOF), nil
		}
	}
}

// copyOverlapped is copyRecorded for bulk transfers: while one buffer is
// being written to dst (encrypted and sent), the next is read and
// recorded, on two goroutines. Every buffer is recorded before it is
// handed to the writer, and everything recorded is written, in order,
// before it returns. It returns done false, having written everything,
// once relayIdleReads reads in a row were small: the copy goes on with a
// small buffer, and an interactive session that once printed a large
// file does not keep half a megabyte for the rest of its life.
func copyOverlapped(src io.Reader, dst io.Writer, record func([]byte) error, n counter, buf []byte) (eof bool, recErr error, done bool) {
	free := make(chan []byte, 2)
	free <- buf
	free <- make([]byte, len(buf))
	full := make(chan []byte, 1)
	var writeFailed atomic.Bool
	written := make(chan struct{})
	go func() {
		defer close(written)
		for b := range full {
			if !writeFailed.Load() {
				if _, err := dst.Write(b); err != nil {
					writeFailed.Store(true)
				} else {
					n.Add(int64(len(b)))
				}
			}
			free <- b[:cap(b)]
		}
	}()
	defer func() {
		close(full)
		// What was read is written before the copy ends (EOF follows it),
		// but a recording failure ends the session at once: the writer may
		// be stuck on a technician who reads nothing, and what it holds is
		// recorded already.
		if recErr == nil {
			<-written
		}
	}()
	small := 0
	for {
		b := <-free
		if writeFailed.Load() {
			return false, nil, true
		}
		k, err := src.Read(b)
		if k > 0 {
			if rerr := record(b[:k]); rerr != nil {
				return false, rerr, true
			}
			full <- b[:k]
		} else {
			free <- b
		}
		if err != nil {
			return errors.Is(err, io.EOF), nil, true
		}
		if small = small + 1; k > relayBufSize {
			small = 0
		}
		if small >= relayIdleReads {
			return false, nil, false // the deferred function waits for the writer
		}
	}
}

// record returns whether the recording accepted the event, ending the
// session when it did not.
func (r *relay) record(err error) bool {
	if err != nil {
		r.recordingFailed(err)
		return false
	}
	return true
}

// recordingFailed ends the session: without a recording, nothing more
// may pass.
func (r *relay) recordingFailed(err error) {
	r.failed.Do(func() {
		c := r.conn
		c.setEnd(EndRecordingFailed) // before anything closes, so no other reason wins
		r.up.Close()                 // the target first: nothing more may pass
		c.srv.log.Error("recording failed: ending session", append(c.logArgs(), "err", err)...)
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionEnd,
			Technician: c.id.tech.Name, Target: c.id.target.Name, Source: c.source, Session: c.sessionID,
			Detail: "recording failed: " + err.Error()})
		// Tell the technician, but do not wait on one who is not reading.
		told := make(chan struct{})
		go func() {
			fmt.Fprintf(r.down.Stderr(), "\r\nsekisho: the session can no longer be recorded, so it is ended (session %s)\r\n", c.sessionID)
			close(told)
		}()
		t := time.NewTimer(2 * time.Second)
		select {
		case <-told:
		case <-t.C:
		}
		t.Stop()
		r.down.Close()
		c.fail(EndRecordingFailed)
	})
}

// fromTarget relays the target's channel requests (exit status, exit
// signal, keepalives) to the technician in the order the target sent
// them. OpenSSH's sshd sends the exit status before its last output and
// EOF, and OpenSSH clients (notably a ControlMaster) rely on that order,
// so it is not held back until the output has drained.
func (r *relay) fromTarget(reqs <-chan *ssh.Request) {
	started := func() (*recording.Channel, bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.rec, r.started
	}
	for req := range reqs {
		switch req.Type {
		case "exit-status", "exit-signal":
			payload, code, data, ok := parseExit(req)
			rec, started := started()
			if !ok {
				// Not relayed: OpenSSH clients drop the whole connection
				// on a malformed exit status, with output not yet
				// written. The channel ends without one when the target
				// closes it.
				if started {
					r.record(rec.Event("x-malformed-"+req.Type, fmt.Sprintf("%d bytes", len(req.Payload))))
				}
				if req.WantReply {
					req.Reply(false, nil)
				}
				continue
			}
			if started {
				r.record(rec.Event(code, data))
			}
			r.down.SendRequest(req.Type, false, payload)
			r.exitOnce.Do(func() { close(r.exitSent) })
			if req.WantReply {
				req.Reply(true, nil)
			}
		default:
			ok, _ := r.down.SendRequest(req.Type, req.WantReply, req.Payload)
			if req.WantReply {
				req.Reply(ok, nil)
			}
		}
	}
	// The target closed the channel: let the output drain, then close ours.
	close(r.upClosed)
	if rec, ok := started(); ok {
		<-r.outDone
		rec.Event("x-close", "")
	}
	r.awaitTargetWord()
	r.afterReply(2*time.Second, func() { r.down.Close() })
}

// afterReply calls f once no technician's request is being handled, or
// after wait at most.
func (r *relay) afterReply(wait time.Duration, f func()) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r.replying <- struct{}{}:
		defer func() { <-r.replying }()
	case <-t.C:
	}
	f()
}

// awaitTargetWord is called once the target ended the channel. Without
// an exit status, and with the technician still there, the target's
// whole connection may have gone (its sshd killed, the host down): it
// waits until the conn has told the technician so, which must happen
// before the channel's EOF and close. A target that closed just this
// channel costs the wait.
func (r *relay) awaitTargetWord() {
	r.targetWord.Do(func() {
		select {
		case <-r.exitSent:
			return
		case <-r.downClosed:
			return
		default:
		}
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-r.conn.upEnded:
		case <-r.exitSent:
		case <-r.downClosed:
		case <-t.C:
		}
	})
}

// parseExit parses a target's exit-status or exit-signal request. It
// returns the payload to relay (marshalled again from what was parsed, so
// that only well-formed requests reach the technician), the recording
// event and its data, and whether the request was well-formed.
func parseExit(req *ssh.Request) (payload []byte, code, data string, ok bool) {
	if req.Type == "exit-status" {
		var s exitStatus
		if ssh.Unmarshal(req.Payload, &s) != nil {
			return nil, "", "", false
		}
		return ssh.Marshal(s), "x-exit-status", strconv.FormatUint(uint64(s.Status), 10), true
	}
	var s exitSignal
	if ssh.Unmarshal(req.Payload, &s) != nil {
		return nil, "", "", false
	}
	return ssh.Marshal(s), "x-exit-signal", s.Signal, true
}

// sftpRequests relays the technician's sftp requests, answering those the
// files limit refuses itself.
func (r *relay) sftpRequests(g *sftpGuard) {
	pr := &packetReader{r: bufio.NewReaderSize(r.down, sftpReadBuf)}
	told := "" // the last reason written to the technician's stderr
	refused := 0
	defer func() {
		// A client can send refused requests as fast as it likes: past
		// maxAuditedRefusals the audit log gets their count, once, and
		// the recording still has each.
		if n := refused - maxAuditedRefusals; n > 0 {
			c := r.conn
			c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.id.tech.Name,
				Target: c.id.target.Name, Source: c.source, Session: c.sessionID,
				Detail: fmt.Sprintf("sftp requests refused: %d more on this channel, each in the recording", n)})
		}
	}()
	for {
		pkt, err := pr.next()
		if errors.Is(err, io.EOF) {
			r.record(r.rec.Event("x-eof", ""))
			r.up.CloseWrite()
			return
		}
		if err != nil {
			r.sftpBroken(err)
			return
		}
		if !r.record(r.rec.Stdin(pkt)) {
			return
		}
		id, why := g.request(pkt)
		if why == "" {
			if r.watch != nil && !r.record(r.watch.technician(pkt)) {
				return
			}
			if _, err := r.up.Write(pkt); err != nil {
				return
			}
			r.conn.bytesIn.Add(int64(len(pkt)))
			continue
		}
		if refused++; refused <= maxAuditedRefusals {
			c := r.conn
			c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused, Technician: c.id.tech.Name,
				Target: c.id.target.Name, Source: c.source, Session: c.sessionID, Detail: "sftp request refused: " + why})
		}
		if !r.record(r.rec.Event("x-sftp-refused", why)) {
			return
		}
		if why != told {
			// The status carries the reason, but OpenSSH's sftp and scp
			// show it only for a realpath: it goes to stderr too, which
			// they pass on to the terminal; once for the same reason
			// twice in a row (ls asks stat, then opendir).
			line := []byte("sekisho: " + why + "\n")
			if !r.record(r.rec.Stderr(line)) {
				return
			}
			if _, err := r.down.Stderr().Write(line); err != nil {
				return
			}
			told = why
		}
		status := statusPacket(id, "sekisho: "+why)
		if !r.record(r.rec.Stdout(status)) {
			return
		}
		if err := g.writeDown(r.down, status); err != nil {
			return
		}
	}
}

// sftpReplies relays the target's sftp replies whole, so that sekisho's
// own answers never land inside one.
func (r *relay) sftpReplies(g *sftpGuard) {
	pr := &packetReader{r: bufio.NewReaderSize(r.up, sftpReadBuf)}
	first := true
	for {
		pkt, err := pr.next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err == nil && first {
			// The checks know protocol version 3 (OpenSSH's); a target
			// speaking another has other requests that write.
			if pkt[4] != fxpVersion || len(pkt) < 9 || binary.BigEndian.Uint32(pkt[5:9]) != 3 {
				err = fmt.Errorf("%w: the target does not speak sftp version 3", errSFTPProtocol)
			}
			first = false
		}
		if err == nil {
			// Before the technician sees the reply: their next request
			// may use what it says (a handle, the home).
			err = g.reply(pkt)
		}
		if err != nil {
			r.sftpBroken(err)
			return
		}
		if !r.record(r.rec.Stdout(pkt)) {
			return
		}
		if r.watch != nil && !r.record(r.watch.target(pkt)) {
			return
		}
		if err := g.writeDown(r.down, pkt); err != nil {
			return
		}
		r.conn.bytesOut.Add(int64(len(pkt)))
	}
}

// sftpBroken ends an sftp channel whose stream is not SFTP.
func (r *relay) sftpBroken(err error) {
	r.record(r.rec.Event("x-sftp-error", err.Error()))
	r.up.Close()
	r.down.Close()
}

// isTransfer reports whether a channel started by a reqType request with
// command is a file transfer: sftp, or scp -O or rsync run as commands.
func isTransfer(reqType, command string) bool {
	kind, _, _ := channelKind(reqType, command)
	return kind == broker.ChannelSFTP || kind == broker.ChannelSCP
}
