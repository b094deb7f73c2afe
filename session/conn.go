package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// End reasons recorded for a session.
const (
	EndClientClosed    = "client closed"
	EndRecordingFailed = "recording failed"
	EndShutdown        = "server shutdown"
)

// conn is one authenticated technician connection and its upstream.
type conn struct {
	srv    *Server
	sc     *ssh.ServerConn
	id     *identity
	source string
	// seat is where the session's moderators sit, when its rule asks for
	// them; set before the session connects.
	seat *seat
	// via says how the technician reached the target when not by a
	// TECHNICIAN+TARGET login: "proxyjump HOST:PORT" for ssh -J.
	via string
	// jumpPending counts this connection's ProxyJump connections still
	// logging in.
	jumpPending atomic.Int32

	sessionID string
	started   time.Time
	rec       *recording.Session
	up        ssh.Conn

	bytesIn  atomic.Int64 // technician to target
	bytesOut atomic.Int64 // target to technician
	refused  atomic.Int64 // channels refused (refuseChannel)

	mu        sync.Mutex
	endReason string
	relays    map[*relay]struct{}
	channels  sync.WaitGroup
	revoked   sync.Once
	lost      sync.Once
	ending    atomic.Bool // set when the session is being revoked: nothing new starts
	// grant is the clock of a session under a grant, once it runs.
	grant atomic.Pointer[grantClock]
	// upEnded is closed once the target's connection has ended and the
	// technician was told (when it was the target that went).
	upEnded chan struct{}
	// techGone is closed once the technician's connection has ended;
	// closing once sekisho began to end the session (tellAndClose).
	techGone    chan struct{}
	closing     chan struct{}
	closingOnce sync.Once
	tells       chan string // lines to tell the technician (moderation), in order
	live        atomic.Bool // goLive began: terminate may end it
	// settled is closed once run decided whether the session relays
	// (relaying, set before): from then on, either connection ending
	// ends the other (serveTarget, globalRequests).
	settled  chan struct{}
	relaying bool
	decided  sync.Once
}

// EndTargetClosed is the end reason of a session whose target's
// connection ended first: the target closed it, died or was cut off.
const EndTargetClosed = "target closed the connection"

// EndRevoked prefixes the end reason of a session ended by a lock or a
// rule change.
const EndRevoked = "revoked: "

// End reasons of a session whose connection to the technician or the
// target failed rather than closed (a corrupted packet, a reset); the
// error follows.
const (
	EndTechnicianFailed = "technician connection failed: "
	EndTargetFailed     = "target connection failed: "
)

// broken reports whether err, from a connection's Wait, means it failed
// rather than closed: by the peer (EOF, or a disconnect "by
// application", which is how OpenSSH says goodbye) or by sekisho.
func broken(err error) bool {
	return err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) &&
		!strings.HasPrefix(err.Error(), "ssh: disconnect, reason 11:") // x/crypto's disconnect error type is not exported
}

// End reasons of a session whose technician or target stopped answering
// keepalives; the reason says how many went unanswered.
const (
	EndTechnicianUnresponsive = "technician unresponsive: "
	EndTargetUnresponsive     = "target unresponsive: "
)

// terminate ends a live session that is no longer allowed, telling the
// technician why on every open channel (without waiting long on one who
// does not read).
func (c *conn) terminate(why string) {
	c.revoked.Do(func() { c.revoke(why) })
}

func (c *conn) revoke(why string) {
	c.ending.Store(true)
	c.setEnd(EndRevoked + why)
	c.srv.log.Warn("session revoked", append(c.logArgs(), "why", why)...)
	c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionRevoked, Technician: c.id.tech.Name,
		Target: c.id.target.Name, Source: c.source, Session: c.sessionID, Detail: why})
	c.tellAndClose("session ended: " + why)
}

// tellAndClose tells the technician msg on every open channel, then
// closes both legs. The technician is told first (closing the target's
// side would close theirs at once), but a technician who does not read is
// waited on for a second at most.
func (c *conn) tellAndClose(msg string) {
	if c.closing != nil {
		c.closingOnce.Do(func() { close(c.closing) })
	}
	// Sessions that came through this connection by ProxyJump are told
	// first: closing it cuts them off.
	c.srv.endInner(c.sc, strings.TrimPrefix(msg, "session ended: "))
	relays := c.openRelays()
	var told sync.WaitGroup
	for _, r := range relays {
		told.Add(1)
		go func() {
			defer told.Done()
			fmt.Fprintf(r.down.Stderr(), "\r\nsekisho: %s\r\n", msg)
		}()
	}
	done := make(chan struct{})
	go func() {
		told.Wait()
		for _, r := range relays {
			r.replying <- struct{}{} // a reply on its way goes out before the close
			<-r.replying
		}
		close(done)
	}()
	t := time.NewTimer(time.Second)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	if c.up != nil {
		c.up.Close()
	}
	c.sc.Close()
}

// openRelays returns the session's channels being relayed now.
func (c *conn) openRelays() []*relay {
	c.mu.Lock()
	defer c.mu.Unlock()
	relays := make([]*relay, 0, len(c.relays))
	for r := range c.relays {
		relays = append(relays, r)
	}
	return relays
}

func (c *conn) logArgs() []any {
	return []any{"session", c.sessionID, "technician", c.id.tech.Name, "affiliate", c.id.tech.Affiliate.Name,
		"target", c.id.target.Name, "residency", c.id.target.Residency, "source", c.source}
}

// run serves an authenticated session until it ends: approval if the
// rule asks for one, the target's connection, then the relay of the
// technician's channels. The goroutine of a connection spends the
// session's life here, waiting for the next channel: run's own frame is
// kept small (each step in a function of its own), so that once idle its
// stack shrinks back to 4 KiB.
func (c *conn) run(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	if c.sessionID == "" {
		c.sessionID = uuid.NewString()
	}
	c.upEnded = make(chan struct{})
	c.techGone = make(chan struct{})
	c.settled = make(chan struct{})
	defer c.unseat()
	defer c.decide(false) // refused, or left while waiting
	defer c.auditRefusedBeyond(context.Background())
	ctx := c.srv.ctx // cancelled by Shutdown
	go c.globalRequests(ctx, reqs)
	defer c.keepTechnicianAlive()()

	pc, ok := c.approve(ctx, chans)
	if !ok {
		return
	}
	if pc != nil {
		defer pc.stop()
	}
	if !c.connectOrRefuse(ctx, chans, pc) {
		return
	}
	defer c.goLive(ctx)()
	if pc != nil {
		c.openPending(pc)
	}
	for nch := range chans {
		c.openChannel(ctx, nch)
	}
	c.end(ctx)
}

// keepTechnicianAlive starts the keepalives of the technician's
// connection and returns what stops them.
func (c *conn) keepTechnicianAlive() (stop func()) {
	return keepAlive(c.sc, c.srv.cfg.KeepaliveInterval, c.srv.cfg.KeepaliveCountMax, func(why string) {
		// The technician's client is gone or stuck: ending that leg ends
		// the target's too.
		c.setEnd(EndTechnicianUnresponsive + why)
		c.srv.log.Warn("technician unresponsive: ending the session", append(c.logArgs(), "why", why)...)
		c.sc.Close()
	})
}

// approve holds a session whose rule asks for an approval until it has
// one, and returns the channel that waited for it; false when the session
// ended unapproved (the technician was told why).
func (c *conn) approve(ctx context.Context, chans <-chan ssh.NewChannel) (*pendingChannel, bool) {
	if !c.id.pending() {
		if c.id.decision.Moderation != nil {
			return c.awaitModeration(ctx, chans)
		}
		return nil, true
	}
	// Nothing reaches the target, and no recording or certificate
	// exists, until the access request is approved.
	pc, ok := c.awaitApproval(ctx, chans)
	if ok {
		return pc, true
	}
	// The client leaves once its channel closed with the reason; closing
	// first could lose the exit status.
	t := time.AfterFunc(10*time.Second, func() { c.sc.Close() })
	defer t.Stop()
	defer c.sc.Close()
	for nch := range chans {
		nch.Reject(ssh.ConnectionFailed, "sekisho: the session ended")
	}
	return nil, false
}

// connectOrRefuse connects to the target (connect), or, when that fails,
// tells the technician why, registers the refusal and reports false.
func (c *conn) connectOrRefuse(ctx context.Context, chans <-chan ssh.NewChannel, pc *pendingChannel) bool {
	start := time.Now()
	c.started = start
	err := c.connect(ctx, start)
	if err == nil {
		return true
	}
	if pc != nil {
		var ue *userError
		msg := "sekisho: session refused"
		if errors.As(err, &ue) {
			msg = "sekisho: " + ue.msg
		}
		pc.fail(msg)
	}
	c.refuse(ctx, chans, start, err)
	return false
}

// goLive makes the session live: listed for revalidation, its limits'
// clocks and the target's keepalives started. From then on, the target's
// connection ending ends the technician's (serveTarget) and the other way
// round (globalRequests). It returns what undoes it, in reverse order.
func (c *conn) goLive(ctx context.Context) (stop func()) {
	c.srv.log.Info("session started", c.logArgs()...)
	c.srv.setLive(c, true)
	var maxTimer *time.Timer
	if max := c.id.decision.Limits.MaxDuration; max > 0 {
		maxTimer = time.AfterFunc(max, func() {
			c.terminate(fmt.Sprintf("the session reached the %s limit of rule %q", max, c.id.decision.Rule))
		})
	}
	stopGrant := func() {}
	if g := c.id.decision.Grant; g != nil {
		if a := c.srv.cfg.Access; a != nil {
			a.GrantUsed(ctx, g, c.sessionID)
		}
		stopGrant = c.grantTimers(g)
	}
	// A lock or rule change between the decision and now is not missed;
	// nothing new starts once it is found.
	c.live.Store(true)
	if ok, why := c.stillAllowed(); !ok {
		c.ending.Store(true)
		go c.terminate(why)
	} else if c.seat != nil {
		if why := c.seat.endedByModerator(); why != "" {
			c.ending.Store(true)
			go c.terminate(why)
		}
	}
	stopKeepalive := keepAlive(c.up, c.srv.cfg.KeepaliveInterval, c.srv.cfg.KeepaliveCountMax, func(why string) {
		c.setEnd(EndTargetUnresponsive + why)
		c.srv.log.Warn("target unresponsive: ending the session", append(c.logArgs(), "why", why)...)
		c.tellAndClose("session ended: " + c.id.target.Name + " stopped answering")
	})
	c.decide(true)
	return func() {
		stopKeepalive()
		stopGrant()
		if maxTimer != nil {
			maxTimer.Stop()
		}
		c.srv.setLive(c, false)
	}
}

// end ends a live session once the technician's connection closed: the
// end reason, the target's connection, the channels' relays, then the
// register and the recording's seal.
func (c *conn) end(ctx context.Context) {
	// x/crypto closes chans before Wait has the error that ended it.
	if err := c.sc.Wait(); broken(err) {
		c.setEnd(EndTechnicianFailed + err.Error())
	}
	if ctx.Err() != nil {
		c.setEnd(EndShutdown)
	}
	c.setEnd(EndClientClosed)
	c.up.Close()
	c.channels.Wait()
	c.finish()
}

// decide records whether the session relays, once: the goroutines that
// wait for either connection to end act on it only if it does.
func (c *conn) decide(relaying bool) {
	c.decided.Do(func() {
		c.relaying = relaying
		close(c.settled)
	})
}

// globalRequests refuses every global request of the technician's
// connection (port forwarding requests, ssh -R, are audited) until it
// ends. Then, when the session relays, it ends the target's connection
// too, which also unblocks a relay still waiting for the target to
// answer. This is the technician's connection's one goroutine of
// sekisho's besides run, which may be blocked opening a channel.
func (c *conn) globalRequests(ctx context.Context, reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward", "streamlocal-forward@openssh.com":
			c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventRefused,
				Technician: c.id.tech.Name, Target: c.id.target.Name, Source: c.source, Session: c.sessionID,
				Detail: req.Type + " refused: port forwarding is not allowed through sekisho"})
		}
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
	// x/crypto closes reqs as the connection ends, just before Wait
	// has the error that ended it.
	err := c.sc.Wait()
	close(c.techGone)
	if <-c.settled; !c.relaying {
		return
	}
	// Why it ended is set before the target's side sees the close,
	// which would otherwise read as the target going away.
	switch {
	case broken(err):
		c.setEnd(EndTechnicianFailed + err.Error())
	case ctx.Err() != nil:
		c.setEnd(EndShutdown)
	default:
		c.setEnd(EndClientClosed)
	}
	c.up.Close()
}

// connect creates the recording, obtains the certificate and dials the
// target, in that order, so that nothing reaches the target unrecorded.
func (c *conn) connect(ctx context.Context, start time.Time) error {
	b := c.srv.cfg.Broker
	tech, tg, d := c.id.tech, c.id.target, c.id.decision
	r := c.register(start)
	meta := recording.Meta{
		ID: r.ID, Technician: r.Technician, Affiliate: r.Affiliate, AffiliateCountry: r.AffiliateCountry,
		Source: r.Source, SourceCountry: r.SourceCountry, Target: r.Target, TargetAddress: r.TargetAddress, Residency: r.Residency,
		Login: r.Login, CrossBorder: r.CrossBorder, Via: c.via, Rule: r.Rule, Trace: json.RawMessage(r.Trace), Start: start.UTC(),
	}
	rec, err := recording.CreateSigned(c.srv.cfg.RecordingDir, meta, c.srv.cfg.RecordingKey)
	if err != nil {
		c.srv.log.Error("recording unavailable, session refused", append(c.logArgs(), "err", err)...)
		b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
			Session: c.sessionID, Detail: "recording unavailable: " + err.Error()})
		return userErrorf("the session cannot be recorded, so it is refused; tell the sekisho operator (session %s)", c.sessionID)
	}
	c.rec = rec
	// A failure no write is waiting for (an idle channel's flush) ends
	// the session too.
	rec.OnFailure(c.recordingLost)
	if u := c.srv.cfg.Uploader; u != nil {
		// The zone's store must take the recording, or the session is
		// refused; if it stops taking it, the session ends.
		err := u.Start(ctx, c.sessionID, tg.Residency, func(err error) {
			c.srv.log.Error("recording store stopped taking the recording: ending the session", append(c.logArgs(), "err", err)...)
			c.terminate("the recording store of zone " + tg.Residency + " stopped taking this session's recording")
		})
		if err != nil {
			c.srv.log.Error("recording store unavailable, session refused", append(c.logArgs(), "err", err)...)
			b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
				Session: c.sessionID, Detail: "recording store unavailable: " + err.Error()})
			return userErrorf("the recording store of zone %s is unavailable, so the session is refused; tell the sekisho operator (session %s)", tg.Residency, c.sessionID)
		}
	}

	if d.Grant != nil {
		// The grant may have been revoked since the login (a TOTP
		// prompt, or the wait, ago): no certificate without it.
		if ok, why := b.StillAllowed(tech.Name, tg.Name, c.source, c.id.key, d); !ok {
			b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
				Session: c.sessionID, Detail: why})
			return userErrorf("%s", why)
		}
	}
	// The certificate is bound to the address sekisho reaches the
	// target from, which the route tells before anything is sent to it.
	rt, err := routeTo(ctx, tg, c.srv.cfg.DialTimeout)
	var cred *broker.Credential
	if err == nil {
		cred, err = b.Certificate(ctx, tech, d, tg, c.sessionID, rt.sources())
		if err != nil {
			c.srv.log.Error("certificate refused", append(c.logArgs(), "err", err)...)
			return userErrorf("could not obtain a certificate for %s; tell the sekisho operator (session %s)", tg.Name, c.sessionID)
		}
	}
	var nc net.Conn
	if err == nil {
		nc, err = dialTCP(ctx, rt, c.srv.cfg.DialTimeout)
	}
	var up *targetConn
	if err == nil {
		up, err = handshakeTarget(ctx, nc, tg, d.Login, cred.Signer, c.srv.cfg.DialTimeout)
	}
	if err != nil {
		var hk *hostKeyError
		if errors.As(err, &hk) {
			b.Audit(ctx, broker.AuditEvent{Kind: broker.EventHostKey, Technician: tech.Name, Target: tg.Name, Source: c.source,
				Session: c.sessionID, Detail: hk.Error()})
			c.srv.log.Error("target host key mismatch: connection refused before authenticating", append(c.logArgs(), "err", err)...)
			return userErrorf("the host key of %s does not match the pinned key; refusing to connect (session %s)", tg.Name, c.sessionID)
		}
		c.srv.log.Error("target unreachable", append(c.logArgs(), "err", err)...)
		b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
			Session: c.sessionID, Detail: "target connection failed: " + err.Error()})
		// The details (addresses, methods) stay in the audit log.
		return userErrorf("cannot connect to %s; tell the sekisho operator (session %s)", tg.Name, c.sessionID)
	}
	c.up = up.Conn
	go c.serveTarget(ctx, up.chans, up.reqs)

	r.CertSerial, r.CertKeyID = cred.Certificate.Serial, cred.Certificate.KeyId
	if err := rec.Certificate(r.CertSerial, r.CertKeyID); err != nil {
		up.Close()
		c.srv.log.Error("recording metadata not written, session refused", append(c.logArgs(), "err", err)...)
		b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
			Session: c.sessionID, Detail: "recording unavailable: " + err.Error()})
		return userErrorf("the session cannot be recorded, so it is refused; tell the sekisho operator (session %s)", c.sessionID)
	}
	if err := b.SessionStarted(ctx, r); err != nil {
		up.Close()
		c.srv.log.Error("session register unavailable, session refused", append(c.logArgs(), "err", err)...)
		b.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: tg.Name, Source: c.source,
			Session: c.sessionID, Detail: "session register unavailable: " + err.Error()})
		return userErrorf("the session cannot be registered, so it is refused; tell the sekisho operator (session %s)", c.sessionID)
	}
	return nil
}

// recordingLost ends the session because its recording failed, telling
// the technician why (without waiting long on one who does not read).
func (c *conn) recordingLost(err error) {
	c.lost.Do(func() {
		c.setEnd(EndRecordingFailed)
		c.ending.Store(true)
		c.srv.log.Error("recording failed: ending session", append(c.logArgs(), "err", err)...)
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventSessionEnd, Technician: c.id.tech.Name,
			Target: c.id.target.Name, Source: c.source, Session: c.sessionID, Detail: "recording failed: " + err.Error()})
		c.tellAndClose(fmt.Sprintf("the session can no longer be recorded, so it is ended (session %s)", c.sessionID))
	})
}

// warn writes msg to the technician on every open channel, without
// waiting on one who does not read.
func (c *conn) warn(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r := range c.relays {
		go fmt.Fprintf(r.down.Stderr(), "\r\nsekisho: %s\r\n", msg)
	}
}

// register is the register entry of this session.
func (c *conn) register(start time.Time) *broker.SessionRecord {
	tech, tg, d := c.id.tech, c.id.target, c.id.decision
	trace, _ := json.Marshal(map[string]any{"inputs": d.Inputs, "rules": d.Trace, "grant": d.Grant})
	r := &broker.SessionRecord{
		ID: c.sessionID, Technician: tech.Name, Affiliate: tech.Affiliate.Name, AffiliateCountry: tech.Affiliate.Country,
		Source: c.source, SourceCountry: d.Inputs.Source.Country, SourceNetwork: d.Inputs.Source.Network,
		Target: tg.Name, TargetAddress: tg.Address, Residency: tg.Residency, Login: d.Login,
		CrossBorder: d.CrossBorder(), Rule: d.Rule, Trace: string(trace), StartedAt: start, Recording: c.sessionID,
		Node: c.srv.cfg.NodeName, Moderated: d.Moderation != nil,
	}
	if d.Grant != nil {
		r.Request = d.Grant.RequestID
	}
	return r
}

// refuse tells the technician why the session cannot go on, on the first
// channel they open, then closes the connection. The attempt goes into
// the register as a session that ended refused, so that reviewers see
// every connection the rules allowed, whether it went through or not.
func (c *conn) refuse(ctx context.Context, chans <-chan ssh.NewChannel, start time.Time, err error) {
	msg := "sekisho: session refused"
	var ue *userError
	if errors.As(err, &ue) {
		msg = "sekisho: " + ue.msg
	}
	reason := "refused: " + err.Error()
	if c.rec != nil {
		c.rec.End(time.Now(), reason, 0, 0)
	}
	if rerr := c.srv.cfg.Broker.SessionRefused(ctx, c.register(start), time.Now(), reason); rerr != nil {
		c.srv.log.Error("refused session not registered", append(c.logArgs(), "err", rerr)...)
	}
	if c.rec != nil {
		c.sealed(ctx)
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case nch, ok := <-chans:
		if ok {
			nch.Reject(ssh.ConnectionFailed, msg)
		}
	case <-timer.C:
	}
	c.sc.Close()
	for nch := range chans {
		nch.Reject(ssh.ConnectionFailed, msg)
	}
}

// sealed records the recording's seal in the register and the audit log.
func (c *conn) sealed(ctx context.Context) {
	seal := c.rec.Seal()
	if seal.Head == "" {
		return // not sealed: End failed, and said so
	}
	err := c.srv.cfg.Broker.RecordingSealed(ctx, broker.RecordingSeal{Session: c.sessionID, Technician: c.id.tech.Name, Target: c.id.target.Name,
		Complete: seal.Complete, Reason: seal.Reason,
		Chunks: seal.Chunks, Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature})
	if err != nil {
		c.srv.log.Error("recording seal not registered", append(c.logArgs(), "err", err)...)
	}
}

func (c *conn) setEnd(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endReason == "" {
		c.endReason = reason
	}
}

// fail ends the whole connection for reason, after telling the technician.
func (c *conn) fail(reason string) {
	c.setEnd(reason)
	c.sc.Close()
	c.up.Close()
}

func (c *conn) finish() {
	// The register is written even during shutdown, with its own deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.mu.Lock()
	reason := c.endReason
	c.mu.Unlock()
	end := broker.SessionEnd{At: time.Now(), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(), Reason: reason,
		Technician: c.id.tech.Name, Target: c.id.target.Name, Source: c.source}
	if err := c.rec.End(end.At, reason, end.BytesIn, end.BytesOut); err != nil {
		// A full disk at the very end, say. The register says the
		// recording failed, so the next start seals it as incomplete,
		// verifiable up to its last chunk, instead of treating a missing
		// seal as one removed.
		c.srv.log.Error("recording not sealed", append(c.logArgs(), "err", err)...)
		c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRecordingSealFailed, Technician: c.id.tech.Name, Target: c.id.target.Name,
			Source: c.source, Session: c.sessionID, Detail: broker.JSONDetail(struct {
				Reason string `json:"session_end_reason"`
				Error  string `json:"error"`
			}{reason, err.Error()})})
		end.Reason = EndRecordingFailed
	}
	if err := c.srv.cfg.Broker.SessionEnded(ctx, c.sessionID, end); err != nil {
		c.srv.log.Error("session end not registered", append(c.logArgs(), "err", err)...)
	}
	c.sealed(ctx)
	c.srv.log.Info("session ended", append(c.logArgs(), "reason", reason, "bytes_in", end.BytesIn, "bytes_out", end.BytesOut, "channels_refused", c.refused.Load())...)
}

func (c *conn) openChannel(ctx context.Context, nch ssh.NewChannel) {
	if c.ending.Load() {
		nch.Reject(ssh.Prohibited, "sekisho: the session is ending")
		return
	}
	if c.seat != nil {
		// Only the first channel is held when its moderators leave.
		c.refuseChannel(ctx, nch, ssh.Prohibited, "a moderated session has one channel: connect again for another")
		return
	}
	switch nch.ChannelType() {
	case "session":
	case "direct-tcpip":
		if c.srv.openJump(c.sc, c.id, c.source, nch, &c.jumpPending, &c.refused) {
			return
		}
		c.openForward(ctx, nch)
		return
	case "forwarded-tcpip", "direct-streamlocal@openssh.com", "forwarded-streamlocal@openssh.com":
		c.refuseChannel(ctx, nch, ssh.Prohibited, "port forwarding is not allowed through sekisho")
		return
	case "x11", "auth-agent@openssh.com":
		c.refuseChannel(ctx, nch, ssh.Prohibited, nch.ChannelType()+" channels are not allowed through sekisho")
		return
	default:
		c.refuseChannel(ctx, nch, ssh.UnknownChannelType, "unknown channel type "+fmt.Sprintf("%q", nch.ChannelType()))
		return
	}
	upCh, upReqs, err := c.up.OpenChannel("session", nil)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			nch.Reject(oce.Reason, "target refused the session: "+oce.Message)
		} else {
			nch.Reject(ssh.ConnectionFailed, "target connection lost")
		}
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		upCh.Close()
		return
	}
	c.startRelay(&relay{conn: c, down: ch, up: upCh, replying: make(chan struct{}, 1)}, reqs, upReqs)
}

// openPending relays the channel that waited for the approval, replaying
// what it asked for to the target.
func (c *conn) openPending(pc *pendingChannel) {
	upCh, upReqs, err := c.up.OpenChannel("session", nil)
	if err != nil {
		// The target's own refusal is its sshd's word to the
		// technician; anything else is sekisho's to log.
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			pc.fail(fmt.Sprintf("sekisho: %s refused the session: %s", c.id.target.Name, oce.Message))
			return
		}
		c.srv.log.Error("target channel not opened", append(c.logArgs(), "err", err)...)
		pc.fail(fmt.Sprintf("sekisho: the connection to %s was lost, so the session is ended (session %s)", c.id.target.Name, c.sessionID))
		return
	}
	c.startRelay(&relay{conn: c, down: pc.ch, up: upCh, prelude: pc.prelude, replying: make(chan struct{}, 1)}, pc.reqs, upReqs)
}

// startRelay runs r until its channel closes.
func (c *conn) startRelay(r *relay, reqs, upReqs <-chan *ssh.Request) {
	c.mu.Lock()
	if c.relays == nil {
		c.relays = map[*relay]struct{}{}
	}
	c.relays[r] = struct{}{}
	c.mu.Unlock()
	c.channels.Add(1)
	go func() {
		defer c.channels.Done()
		r.run(reqs, upReqs)
		c.mu.Lock()
		delete(c.relays, r)
		c.mu.Unlock()
	}()
}

// refusedAudited is how many refused channels of one connection are
// audited one by one. Beyond it they are only counted, and the count is
// audited when the session ends, so that a client opening channels in a
// loop cannot fill the audit log.
const refusedAudited = 100

func (c *conn) refuseChannel(ctx context.Context, nch ssh.NewChannel, reason ssh.RejectionReason, msg string) {
	nch.Reject(reason, "sekisho: "+msg)
	if c.refused.Add(1) > refusedAudited {
		return
	}
	c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: c.id.tech.Name, Target: c.id.target.Name,
		Source: c.source, Session: c.sessionID, Detail: fmt.Sprintf("channel %q refused: %s", nch.ChannelType(), msg)})
}

// serveTarget is the target's connection's one goroutine of sekisho's,
// from the handshake until the connection ends. A target has no business
// opening channels towards the technician (sekisho grants no -R, no agent
// and no X11): they are refused, and audited like a technician's refused
// channels; one of a type no technician could ask for is rejected as
// x/crypto's client rejects it. Global requests (keepalives, host keys)
// are answered no, as OpenSSH's client does.
//
// Then, when the session relays, the target's connection ending ends the
// technician's too, with a word on every open channel when it was the
// target that went (its sshd killed, the host down): the relays wait for
// upEnded before closing a channel the target left without an exit
// status, so the word is not lost.
func (c *conn) serveTarget(ctx context.Context, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	defer close(c.upEnded)
	for chans != nil || reqs != nil {
		select {
		case nch, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			switch nch.ChannelType() {
			case "x11", "auth-agent@openssh.com", "forwarded-tcpip", "forwarded-streamlocal@openssh.com", "session", "direct-tcpip":
				c.refuseChannel(ctx, nch, ssh.Prohibited, "opened by the target towards the technician; sekisho relays no channels that way")
			default:
				nch.Reject(ssh.UnknownChannelType, fmt.Sprintf("unknown channel type: %v", nch.ChannelType()))
			}
		case req, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
	if <-c.settled; !c.relaying {
		return // refused after the handshake: run tells the technician
	}
	reason := EndTargetClosed
	if err := c.up.Wait(); broken(err) {
		reason = EndTargetFailed + err.Error() // a corrupted packet, say
	}
	c.setEnd(reason)
	c.mu.Lock()
	targetWent := c.endReason == reason
	c.mu.Unlock()
	if targetWent && !c.ending.Load() {
		c.tellAndClose(fmt.Sprintf("the connection to %s was lost, so the session is ended (session %s)", c.id.target.Name, c.sessionID))
		return
	}
	c.sc.Close()
}

// auditRefusedBeyond audits how many refused channels were not audited
// one by one, if any.
func (c *conn) auditRefusedBeyond(ctx context.Context) {
	if n := c.refused.Load() - refusedAudited; n > 0 {
		c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: c.id.tech.Name, Target: c.id.target.Name,
			Source: c.source, Session: c.sessionID,
			Detail: fmt.Sprintf("%d more channels refused after the first %d, which were audited one by one", n, refusedAudited)})
	}
}
