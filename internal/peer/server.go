package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrNotServed is returned by a watch callback for a session that is not
// live on its node, and by Watch when the node asked says so.
var ErrNotServed = errors.New("not live on that node")

// WatchRequest is what one node asks another to stream.
type WatchRequest struct {
	Session   string
	FromStart bool
	// StopHint ends the watch's banner: how the watcher stops watching
	// (recording.WatchOptions.StopHint).
	StopHint string
	// Node and Watcher name the node that asks and the person watching
	// through it; the serving node logs them. Node is the SSH user name.
	Node, Watcher string
	// Moderate: the watcher watches as a moderator, seated for as long
	// as the stream lasts (Config.Moderate serves it).
	Moderate bool
}

// ControlRequest is a one-shot request of a moderator's, seated through
// another node: Verb is "may" (whether Watcher may moderate Session),
// "state", "say", "hold", "release" or "end"; Text is the line or the
// reason.
type ControlRequest struct {
	Session, Verb, Text string
	Node, Watcher       string
}

// ErrRefused is what a refused moderation request is (errors.Is); its
// text, from Refusal, is for the person refused.
var ErrRefused = errors.New("refused")

type refusal struct{ msg string }

func (r *refusal) Error() string        { return r.msg }
func (r *refusal) Is(target error) bool { return target == ErrRefused }

// Refusal is a refusal worded for the person refused.
func Refusal(msg string) error { return &refusal{msg} }

// Config configures a Server.
type Config struct {
	// HostKey is the cluster's host key: the server presents it, and
	// admits only a client that proves it.
	HostKey ssh.Signer
	// Watch streams live session req.Session to out until the session
	// ends (nil) or ctx is done; ErrNotServed for a session this node
	// does not serve now.
	Watch func(ctx context.Context, req WatchRequest, out *Stream) error
	// Moderate is Watch for a moderator (req.Moderate), who is seated
	// while it streams; Control carries out a moderator's one-shot
	// request and returns the answer. Refusals wrap ErrRefused. Both
	// nil: the link serves watches only.
	Moderate func(ctx context.Context, req WatchRequest, out *Stream) error
	Control  func(ctx context.Context, req ControlRequest) (string, error)
	// Refused is told of refused attempts, at most once per source per
	// refusalWindow with the count of those held back; it audits them.
	Refused func(source, detail string)
	Logger  *slog.Logger
	// HandshakeTimeout bounds a connection's handshake and
	// authentication (default 10s). MaxHandshakesPerSource (default 4)
	// and MaxHandshakes (default 64) bound those under way;
	// MaxFailuresPerSource (default 10) failed attempts in a minute have
	// a source refused before its handshake for the rest of the minute.
	HandshakeTimeout time.Duration
	// KeepaliveInterval (default 5s) and KeepaliveCountMax (default 3):
	// a connection whose other node answers none of that many keepalives
	// in a row is closed.
	KeepaliveInterval      time.Duration
	KeepaliveCountMax      int
	MaxHandshakesPerSource int
	MaxHandshakes          int
	MaxFailuresPerSource   int
}

// Server serves the node-to-node requests of one node.
type Server struct {
	cfg    Config
	lim    *limits
	pub    []byte // the host key's public key, marshaled
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // connections and the refusal flush
}

// NewServer checks cfg and fills its defaults.
func NewServer(cfg Config) (*Server, error) {
	if cfg.HostKey == nil || cfg.Watch == nil || cfg.Refused == nil {
		return nil, errors.New("peer: a server needs a host key, a watch and a refusal callback")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.KeepaliveInterval <= 0 {
		cfg.KeepaliveInterval = 5 * time.Second
	}
	if cfg.KeepaliveCountMax <= 0 {
		cfg.KeepaliveCountMax = 3
	}
	if cfg.MaxHandshakesPerSource <= 0 {
		cfg.MaxHandshakesPerSource = 4
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 64
	}
	if cfg.MaxFailuresPerSource <= 0 {
		cfg.MaxFailuresPerSource = 10
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, lim: newLimits(cfg.MaxHandshakesPerSource, cfg.MaxHandshakes, cfg.MaxFailuresPerSource),
		pub: cfg.HostKey.PublicKey().Marshal(), ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln until Close, then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.wg.Add(1)
	s.mu.Unlock()
	go s.flushRefusals()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("peer listener: %w", err)
		}
		host := sourceHost(nc.RemoteAddr())
		if ok, why := s.lim.admit(host); !ok {
			nc.Close()
			s.refuse(host, nc.RemoteAddr().String(), "refused before the handshake: "+why)
			continue
		}
		if !s.track(nc, true) {
			nc.Close()
			s.lim.done(host, false)
			return nil
		}
		go s.handle(nc, host)
	}
}

// Close stops accepting, ends every stream and connection, and waits for
// them to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cancel()
	if s.ln != nil {
		s.ln.Close()
	}
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// track adds or removes a connection; it reports false, adding none,
// once the server is closed.
func (s *Server) track(nc net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, nc)
		s.wg.Done()
		return true
	}
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	s.wg.Add(1)
	return true
}

// refuse reports a refused attempt, unless held back.
func (s *Server) refuse(host, source, why string) {
	s.cfg.Logger.Warn("node-to-node connection refused", "source", source, "why", why)
	if detail := s.lim.refusal(host, why); detail != "" {
		s.cfg.Refused(source, detail)
	}
}

// flushRefusals reports the refusals held back, as their windows end.
func (s *Server) flushRefusals() {
	defer s.wg.Done()
	t := time.NewTicker(refusalWindow)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for host, detail := range s.lim.flush() {
			s.cfg.Refused(host, detail)
		}
	}
}

// handle authenticates one connection, then serves its channels.
func (s *Server) handle(nc net.Conn, host string) {
	defer s.track(nc, false)
	defer nc.Close()
	var tried []string // why each authentication attempt failed
	conf := &ssh.ServerConfig{
		MaxAuthTries: 3,
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), s.pub) {
				return &ssh.Permissions{}, nil
			}
			return nil, fmt.Errorf("key %s (%s) is not the cluster's host key", ssh.FingerprintSHA256(key), key.Type())
		},
		AuthLogCallback: func(_ ssh.ConnMetadata, method string, err error) {
			switch {
			case err == nil, method == "none":
			case method == "publickey":
				tried = append(tried, err.Error())
			default:
				tried = append(tried, "method "+method+" is not accepted")
			}
		},
		ServerVersion: "SSH-2.0-sekisho-peer",
	}
	conf.AddHostKey(s.cfg.HostKey)
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, conf)
	if err != nil {
		s.lim.done(host, true)
		why := "handshake failed: " + err.Error()
		var authErr *ssh.ServerAuthError
		switch {
		case len(tried) > 0:
			why = "authentication refused: " + strings.Join(tried, "; ")
		case errors.As(err, &authErr):
			why = "authentication refused: no key offered (only the cluster's host key is accepted)"
		case errors.Is(err, io.EOF):
			why = "closed before authenticating"
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			why = fmt.Sprintf("no authentication within %s", s.cfg.HandshakeTimeout)
		}
		if s.ctx.Err() == nil {
			s.refuse(host, nc.RemoteAddr().String(), why)
		}
		return
	}
	s.lim.done(host, false)
	nc.SetDeadline(time.Time{})
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	// A node that crashed or was cut off stops answering: its streams
	// end, and a moderator seated through it leaves, within seconds
	// rather than when TCP gives up.
	stop := keepAlive(sc, s.cfg.KeepaliveInterval, s.cfg.KeepaliveCountMax)
	defer stop()
	var wg sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "this link serves session channels only")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		wg.Go(func() { s.serveChannel(sc, ch, creqs) })
	}
	wg.Wait()
}

// Exit statuses of a stream.
const (
	exitEnded     = 0 // the session ended; the stream is whole
	exitFailed    = 1 // the request or the watch failed: see the message
	exitNotServed = 2 // not a live session of this node
	exitRefused   = 3 // a moderation request refused: see the message
)

// serveChannel runs the one request of a session channel: env requests
// (SEKISHO_STOP_HINT, SEKISHO_WATCHER), then an exec of
// "watch SESSION-ID [from-start]".
func (s *Server) serveChannel(sc *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	req := WatchRequest{Node: sc.User()}
	var text string
	for r := range reqs {
		switch r.Type {
		case "env":
			var kv struct{ Name, Value string }
			ok := ssh.Unmarshal(r.Payload, &kv) == nil && len(kv.Value) <= 1000
			switch {
			case ok && kv.Name == "SEKISHO_STOP_HINT":
				req.StopHint = kv.Value
			case ok && kv.Name == "SEKISHO_WATCHER":
				req.Watcher = kv.Value
			case ok && kv.Name == "SEKISHO_TEXT":
				text = kv.Value
			default:
				ok = false
			}
			r.Reply(ok, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(r.Payload, &cmd); err != nil {
				r.Reply(false, nil)
				continue
			}
			r.Reply(true, nil)
			go func() {
				for r := range reqs {
					r.Reply(false, nil)
				}
			}()
			s.exec(ch, req, text, cmd.Command)
			return
		default:
			r.Reply(false, nil)
		}
	}
}

// exec runs command on ch and ends the channel with an exit status.
func (s *Server) exec(ch ssh.Channel, req WatchRequest, text, command string) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The client sends nothing: its input ending (the channel closing)
	// means that the watcher went away.
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		io.Copy(io.Discard, ch)
		cancel()
	}()
	code, msg := s.run(ctx, ch, req, text, command)
	if msg != "" {
		io.WriteString(ch.Stderr(), msg+"\n")
	}
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	ch.CloseWrite()
	ch.Close()
	<-gone
}

// run runs command and returns its exit status and what to tell the
// asking node.
func (s *Server) run(ctx context.Context, ch ssh.Channel, req WatchRequest, text, command string) (code int, msg string) {
	f := strings.Fields(command)
	moderation := s.cfg.Moderate != nil && s.cfg.Control != nil
	switch {
	case moderation && len(f) == 2 && f[0] == "moderate":
		req.Session, req.Moderate = f[1], true
	case moderation && len(f) == 3 && f[0] == "moderation":
		return s.control(ctx, ch, ControlRequest{Session: f[1], Verb: f[2], Text: text, Node: req.Node, Watcher: req.Watcher})
	case len(f) < 2 || len(f) > 3 || f[0] != "watch" || (len(f) == 3 && f[2] != "from-start"):
		return exitFailed, fmt.Sprintf("sekisho: this link serves \"watch SESSION-ID [from-start]\", not %q", command)
	default:
		req.Session, req.FromStart = f[1], len(f) == 3
	}
	log := s.cfg.Logger.With("session", req.Session, "node", req.Node, "watcher", req.Watcher, "moderate", req.Moderate)
	log.Info("streaming a live session to another node")
	watch := s.cfg.Watch
	if req.Moderate {
		watch = s.cfg.Moderate
	}
	err := watch(ctx, req, &Stream{w: ch})
	switch {
	case err == nil:
		log.Info("stream ended with the session")
		return exitEnded, ""
	case errors.Is(err, ErrNotServed):
		return exitNotServed, "sekisho: " + err.Error()
	case errors.Is(err, ErrRefused):
		return exitRefused, "sekisho: " + err.Error()
	case s.ctx.Err() != nil:
		return exitFailed, "sekisho: the serving node is stopping"
	case ctx.Err() != nil:
		log.Info("the watcher went away")
		return exitFailed, ""
	}
	log.Error("stream failed", "err", err)
	return exitFailed, fmt.Sprintf("sekisho: the watch failed on the serving node: %v", err)
}

// control answers a moderator's one-shot request on the channel's output.
func (s *Server) control(ctx context.Context, ch ssh.Channel, req ControlRequest) (code int, msg string) {
	answer, err := s.cfg.Control(ctx, req)
	switch {
	case err == nil:
		io.WriteString(ch, answer)
		return exitEnded, ""
	case errors.Is(err, ErrNotServed):
		return exitNotServed, "sekisho: " + err.Error()
	case errors.Is(err, ErrRefused):
		return exitRefused, "sekisho: " + err.Error()
	}
	s.cfg.Logger.Error("moderation request failed", "session", req.Session, "node", req.Node, "watcher", req.Watcher, "err", err)
	return exitFailed, "sekisho: the moderation request failed on the serving node"
}

// keepAlive asks the other node for a reply every interval and closes
// conn once countMax in a row went unanswered (any reply counts, a
// refusal too). It returns what stops it.
func keepAlive(conn ssh.Conn, interval time.Duration, countMax int) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		missed := 0
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			replied := make(chan struct{})
			go func() {
				conn.SendRequest("keepalive@openssh.com", true, nil) // returns at the reply, or when conn closes
				close(replied)
			}()
			wait := time.NewTimer(interval)
			select {
			case <-replied:
				missed = 0
			case <-wait.C:
				if missed++; missed >= countMax {
					conn.Close()
					return
				}
			case <-done:
				wait.Stop()
				return
			}
			wait.Stop()
		}
	}()
	return sync.OnceFunc(func() { close(done) })
}
