package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// ProxyJump (ssh -J) through sekisho.
//
// With ssh -J, the technician's client runs its SSH connection to the
// target inside a direct-tcpip channel of its connection to the jump
// host, so an ordinary jump host sees only ciphertext. sekisho does not
// forward such a channel as TCP when it names a configured target: it
// serves SSH on the channel itself, as the target, presenting a host
// certificate for the target's names from Vault's host CA. The inner
// connection authenticates with a key of the same technician, and from
// there it is the TECHNICIAN+TARGET path exactly: the same decision,
// second factor and approval, the Vault certificate to the pinned
// target, recording before forwarding, locks and watch.

// Jump is what serving ProxyJump asks of the domain; *broker.Broker
// implements it.
type Jump interface {
	// JumpTarget returns the target a direct-tcpip channel to
	// host:port names, if any.
	JumpTarget(host string, port uint32) (*broker.Target, bool)
	// HostSigner returns the host key, with its certificate, that
	// answers as t.
	HostSigner(ctx context.Context, t *broker.Target) (ssh.Signer, error)
}

// maxJumpHandshakes bounds the inner connections of one technician
// connection that are still in their handshake or authentication.
const maxJumpHandshakes = 10

// openJump serves nch, a direct-tcpip channel of an authenticated
// technician's connection (outerSC of outer, from source), when it names
// a configured target: it reports false, having done nothing, when it
// does not (or ProxyJump is off), so that the caller handles it as a
// port forward. pending counts the outer connection's inner connections
// still logging in; refused its refused channels, of which the first
// refusedAudited are audited one by one. The host certificate is
// obtained, and the channel accepted or rejected, in a goroutine of its
// own: a slow Vault does not hold up the connection's other channels.
func (s *Server) openJump(outerSC *ssh.ServerConn, outer *identity, source string, nch ssh.NewChannel, pending *atomic.Int32, refused *atomic.Int64) bool {
	if s.cfg.Jump == nil {
		return false
	}
	var req directTCPIP
	if ssh.Unmarshal(nch.ExtraData(), &req) != nil {
		return false
	}
	t, ok := s.cfg.Jump.JumpTarget(req.Host, req.Port)
	if !ok {
		return false
	}
	dest := net.JoinHostPort(truncate(req.Host, 253), fmt.Sprint(req.Port))
	refuse := func(reason ssh.RejectionReason, msg, detail string) {
		nch.Reject(reason, "sekisho: "+msg)
		if refused.Add(1) > refusedAudited {
			return
		}
		s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: outer.tech.Name, Target: t.Name,
			Source: source, Detail: "ProxyJump to " + dest + " refused: " + detail})
	}
	if pending.Add(1) > maxJumpHandshakes {
		pending.Add(-1)
		msg := fmt.Sprintf("%d ProxyJump connections of this connection are still logging in; wait for them", maxJumpHandshakes)
		refuse(ssh.ResourceShortage, msg, msg)
		return true
	}
	s.mu.Lock()
	closing := s.closing
	if !closing {
		s.wg.Add(1) // under the lock, so Shutdown's Wait counts it
	}
	s.mu.Unlock()
	if closing {
		pending.Add(-1)
		nch.Reject(ssh.ConnectionFailed, "sekisho: the server is shutting down")
		return true
	}
	go func() {
		defer s.wg.Done()
		signer, err := s.cfg.Jump.HostSigner(s.ctx, t)
		if err != nil {
			pending.Add(-1)
			s.log.Error("no host certificate for ProxyJump", "technician", outer.tech.Name, "target", t.Name, "source", source, "err", err)
			refuse(ssh.ConnectionFailed, fmt.Sprintf("cannot answer as %s now (its host certificate could not be obtained); tell the sekisho operator", t.Name),
				"no host certificate: "+err.Error())
			return
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			pending.Add(-1)
			return
		}
		go ssh.DiscardRequests(reqs)
		s.serveJump(outerSC, outer, source, t, signer, ch, dest, pending)
	}()
	return true
}

// refuseForward refuses a direct-tcpip channel of a connection without a
// target that names no target sekisho answers as, auditing it when
// audit is set.
func (s *Server) refuseForward(id *identity, source string, nch ssh.NewChannel, audit bool) {
	var req directTCPIP
	dest := "a malformed destination"
	if ssh.Unmarshal(nch.ExtraData(), &req) == nil {
		dest = net.JoinHostPort(truncate(req.Host, 253), fmt.Sprint(req.Port))
	}
	msg := fmt.Sprintf("%s is not a target; a login without a target runs sekisho's commands only, and ProxyJump to a target by its name on port 22 (ssh -J %s@BASTION TARGET); port forwarding needs a login as %s+TARGET and a rule that allows it",
		dest, id.tech.Name, id.tech.Name)
	if s.cfg.Jump == nil {
		msg = "a login without a target runs sekisho's commands only (ProxyJump is off on this bastion); log in as " + id.tech.Name + "+TARGET to reach a target"
	}
	nch.Reject(ssh.Prohibited, "sekisho: "+msg)
	if audit {
		s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: id.tech.Name, Source: source,
			Detail: fmt.Sprintf("channel \"direct-tcpip\" to %s refused on a login without a target: not a target", dest)})
	}
}

// serveJump serves SSH as target t on ch until the inner connection
// ends.
func (s *Server) serveJump(outerSC *ssh.ServerConn, outer *identity, source string, t *broker.Target, hostKey ssh.Signer, ch ssh.Channel, dest string, pending *atomic.Int32) {
	j := &jumpAuth{s: s, outer: outer.tech.Name, source: source, target: t}
	cfg := &ssh.ServerConfig{
		MaxAuthTries:              s.cfg.MaxAuthTries,
		PublicKeyCallback:         j.offeredKey,
		VerifiedPublicKeyCallback: j.verifiedKey,
		PreAuthConnCallback:       func(pc ssh.ServerPreAuthConn) { j.pc.Store(&pc) },
		AuthLogCallback:           j.authLog,
		ServerVersion:             "SSH-2.0-sekisho",
	}
	cfg.AddHostKey(hostKey)
	nc := newChannelConn(ch, addrOf(dest), addrOf(source))
	defer nc.Close()
	// The channel has no deadline to set: a handshake that takes too
	// long ends with it.
	timer := time.AfterFunc(s.cfg.AuthTimeout, func() { nc.Close() })
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	timer.Stop()
	pending.Add(-1)
	if err != nil {
		s.log.Debug("ProxyJump handshake ended", "technician", outer.tech.Name, "target", t.Name, "source", source, "err", err)
		return
	}
	id, ok := sc.Permissions.ExtraData[extraKey{}].(*identity)
	if !ok {
		sc.Close() // cannot happen: every successful authentication sets it
		return
	}
	c := &conn{srv: s, sc: sc, id: id, source: source, via: "proxyjump " + dest, sessionID: uuid.NewString(), closing: make(chan struct{})}
	s.cfg.Broker.Audit(s.ctx, broker.AuditEvent{Kind: broker.EventJump, Technician: id.tech.Name, Target: t.Name, Source: source, Session: c.sessionID,
		Detail: fmt.Sprintf("ProxyJump to %s answered as target %s; inner login %q", dest, t.Name, truncate(sc.User(), maxNameLen))})
	s.setInner(outerSC, c, true)
	defer s.setInner(outerSC, c, false)
	c.run(chans, reqs)
}

func (s *Server) setInner(outer *ssh.ServerConn, c *conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.inner[outer]
	if !add {
		delete(m, c)
		if len(m) == 0 {
			delete(s.inner, outer)
		}
		return
	}
	if m == nil {
		m = map[*conn]struct{}{}
		s.inner[outer] = m
	}
	m[c] = struct{}{}
}

// EndCarrierEnded prefixes the end reason of a session that came through
// a ProxyJump connection which ended (a lock on it, its own session
// revoked or lost).
const EndCarrierEnded = "the ProxyJump connection it came through ended: "

// endInnerWait bounds how long the end of a connection waits for the
// sessions that came through it to be told.
const endInnerWait = 2 * time.Second

// endInner ends every session that came through the technician
// connection outer by ProxyJump, before outer is closed under them. A
// live one is told why: its own reason when the rules no longer allow
// it, else that outer ended for why. One still being set up (waiting
// for approval, say) is closed. It waits endInnerWait at most.
func (s *Server) endInner(outer *ssh.ServerConn, why string) {
	s.mu.Lock()
	var inner []*conn
	var live []bool
	for c := range s.inner[outer] {
		_, l := s.live[c]
		inner, live = append(inner, c), append(live, l)
	}
	s.mu.Unlock()
	if len(inner) == 0 {
		return
	}
	var wg sync.WaitGroup
	for i, c := range inner {
		c.ending.Store(true)
		if !live[i] {
			c.sc.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, own := c.stillAllowed(); !ok {
				c.terminate(own)
				return
			}
			c.carrierEnded(why)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(endInnerWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// carrierEnded ends a live session because the ProxyJump connection it
// came through ended, telling the technician why.
func (c *conn) carrierEnded(why string) {
	c.revoked.Do(func() {
		c.setEnd(EndCarrierEnded + why)
		c.srv.log.Warn("the ProxyJump connection of a session ended: ending the session", append(c.logArgs(), "why", why)...)
		c.tellAndClose("session ended: the connection it came through (ssh -J) ended: " + why)
	})
}

// closeWithInner closes a technician connection once the sessions that
// came through it are ended and told why.
func (s *Server) closeWithInner(sc *ssh.ServerConn, why string) {
	if _, dup := s.closingConns.LoadOrStore(sc, true); dup {
		return // a revalidation before this one is closing it
	}
	s.endInner(sc, why)
	sc.Close()
}

// jumpAuth authenticates the inner connection of a ProxyJump: a key of
// the technician of the outer connection, as the technician or as the
// login the rule grants.
type jumpAuth struct {
	s      *Server
	outer  string // the outer connection's technician
	source string // the outer connection's source
	target *broker.Target
	pc     atomic.Pointer[ssh.ServerPreAuthConn]
}

func (j *jumpAuth) banner(msg string) {
	if pc := j.pc.Load(); pc != nil {
		(*pc).SendAuthBanner(msg)
	}
}

// offeredKey accepts a key of the outer connection's technician.
func (j *jumpAuth) offeredKey(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	tech, ok := j.s.cfg.Broker.Technician(j.outer)
	if !ok || !tech.HasKey(key) {
		return nil, &keyRefused{ssh.FingerprintSHA256(key)}
	}
	return &ssh.Permissions{}, nil
}

// verifiedKey decides the session once the key is proven, as a
// TECHNICIAN+TARGET login is decided.
func (j *jumpAuth) verifiedKey(conn ssh.ConnMetadata, key ssh.PublicKey, _ *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	s := j.s
	tech, ok := s.cfg.Broker.Technician(j.outer)
	if !ok || !tech.HasKey(key) {
		return nil, &keyRefused{ssh.FingerprintSHA256(key)}
	}
	ctx := context.Background()
	id, err := s.decideTarget(ctx, tech, j.target.Name, j.source, key)
	if err != nil {
		return nil, err
	}
	if user := conn.User(); !innerLoginOK(user, tech.Name, id.target.Name, id.decision.Login) {
		detail := fmt.Sprintf("ProxyJump to %s: inner login %q is neither the technician nor the login the rule grants (%s)", id.target.Name, truncate(user, maxNameLen), id.decision.Login)
		s.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventRefused, Technician: tech.Name, Target: id.target.Name, Source: j.source, Detail: detail})
		return nil, &ssh.BannerError{Err: errAuth, Message: fmt.Sprintf(
			"sekisho: log in to %s as %s (your technician name) or %s (the login your rule grants), not as %q: ssh -J %s@BASTION %s@%s\n",
			id.target.Name, tech.Name, id.decision.Login, truncate(user, maxNameLen), tech.Name, tech.Name, id.target.Name)}
	}
	return s.withSecondFactor(conn, id, j.banner)
}

// innerLoginOK reports whether the inner connection's user names the
// technician (alone or as TECHNICIAN+TARGET) or the login granted.
func innerLoginOK(user, tech, target, login string) bool {
	return user == tech || user == login || user == tech+"+"+target || user == tech+"%"+target
}

func (j *jumpAuth) authLog(conn ssh.ConnMetadata, method string, err error) {
	var partial *ssh.PartialSuccessError
	if err == nil || method == "none" || errors.As(err, &partial) {
		return
	}
	s := j.s
	var kr *keyRefused
	key := ""
	if errors.As(err, &kr) {
		key = kr.fingerprint
	}
	s.log.Info("authentication failed", "user", conn.User(), "source", j.source, "via", "proxyjump to "+j.target.Name, "method", method, "key", key, "err", err)
	s.authAudit.failed(j.outer+" (ProxyJump to "+j.target.Name+" as "+truncate(conn.User(), maxNameLen)+")", j.source, method, key, time.Now())
	s.preauth.failed(sourceHost(j.source))
}

// channelConn is an SSH channel as the net.Conn the inner connection of
// a ProxyJump runs on. Its Close is local: a read waiting on it returns
// at once, whether or not the technician's client ever answers the
// channel's close (which it is sent meanwhile).
type channelConn struct {
	ch            ssh.Channel
	r             *io.PipeReader
	local, remote net.Addr
	once          sync.Once
}

func newChannelConn(ch ssh.Channel, local, remote net.Addr) *channelConn {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, ch)
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
	}()
	return &channelConn{ch: ch, r: pr, local: local, remote: remote}
}

func (c *channelConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *channelConn) Write(p []byte) (int, error) { return c.ch.Write(p) }

func (c *channelConn) Close() error {
	c.once.Do(func() {
		c.r.CloseWithError(net.ErrClosed)
		// The close goes out over the technician's connection, which
		// may not be taking anything now.
		go c.ch.Close()
	})
	return nil
}

func (c *channelConn) LocalAddr() net.Addr              { return c.local }
func (c *channelConn) RemoteAddr() net.Addr             { return c.remote }
func (c *channelConn) SetDeadline(time.Time) error      { return nil }
func (c *channelConn) SetReadDeadline(time.Time) error  { return nil }
func (c *channelConn) SetWriteDeadline(time.Time) error { return nil }

// addrOf is host:port as a net.Addr: a TCP address when it is one.
func addrOf(hostport string) net.Addr {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return jumpAddr(hostport)
}

type jumpAddr string

func (a jumpAddr) Network() string { return "tcp" }
func (a jumpAddr) String() string  { return string(a) }
