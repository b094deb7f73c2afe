// Package syslog sends a copy of sekisho's audit events to a syslog
// collector (a SIEM's) as RFC 5424 messages, over UDP, TCP or TLS with
// octet-counted framing (RFC 6587, RFC 5425), or a local datagram socket.
//
// The state store stays the audit record. Events are queued and sent in
// order by one goroutine that reconnects when the collector comes back; a
// full queue drops the new event and counts it, so that a slow or absent
// collector never slows a session. The standard library's log/syslog
// writes the older BSD format and has no TLS, so this is its own.
package syslog

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// Facilities by name (RFC 5424, 6.2.1).
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Severities sekisho uses.
const (
	severityWarning = 4
	severityNotice  = 5
)

// DefaultSDID is the structured data element's name: 32473 is the
// enterprise number RFC 5612 sets aside for documentation and examples;
// an operator with a number of their own may set theirs.
const DefaultSDID = "sekisho@32473"

// Config says where and how to send.
type Config struct {
	// Address is udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or
	// unix:///PATH (a datagram socket such as /dev/log).
	Address  string
	Facility int
	// Hostname and AppName fill the header; Hostname defaults to the
	// machine's name, AppName to "sekisho".
	Hostname string
	AppName  string
	SDID     string
	// TLS is the client configuration for tls:// (its RootCAs, its
	// ServerName); nil uses the system's roots.
	TLS *tls.Config
	// Queue bounds the events waiting to be sent (default 10000).
	Queue int
}

// ParseAddress checks an address and returns its network and host:port
// or path.
func ParseAddress(addr string) (network, where string, err error) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme == "" {
		return "", "", fmt.Errorf("%q is not udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or unix:///PATH", addr)
	}
	switch u.Scheme {
	case "udp", "tcp", "tls":
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Path != "" {
			return "", "", fmt.Errorf("%q: want %s://HOST:PORT", addr, u.Scheme)
		}
		return u.Scheme, u.Host, nil
	case "unix":
		if u.Path == "" || u.Host != "" {
			return "", "", fmt.Errorf("%q: want unix:///PATH (three slashes)", addr)
		}
		return "unixgram", u.Path, nil
	}
	return "", "", fmt.Errorf("%q: the scheme must be udp, tcp, tls or unix", addr)
}

// Sender sends audit events to one collector.
type Sender struct {
	cfg     Config
	network string
	where   string
	log     *slog.Logger
	pid     string

	queue   chan []byte
	dropped atomic.Uint64
	sent    atomic.Uint64
	done    chan struct{}

	mu     sync.Mutex // guards closed against Send's enqueue
	closed bool
	stop   chan struct{} // closed by Close: send what is queued, then end
	abort  chan struct{} // closed when Close's context ends: end now

	started   sync.Once // the sender goroutine, at the first event
	abortOnce sync.Once
	aborted   context.Context // ends with abort: dials give up
	cancel    context.CancelFunc
	connMu    sync.Mutex
	conn      net.Conn // the connection being written to, if any
}

// New starts a sender; it connects when the first event comes.
func New(cfg Config, log *slog.Logger) (*Sender, error) {
	network, where, err := ParseAddress(cfg.Address)
	if err != nil {
		return nil, err
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.AppName == "" {
		cfg.AppName = "sekisho"
	}
	if cfg.SDID == "" {
		cfg.SDID = DefaultSDID
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10000
	}
	s := &Sender{cfg: cfg, network: network, where: where, log: log, pid: strconv.Itoa(os.Getpid()),
		queue: make(chan []byte, cfg.Queue), done: make(chan struct{}), stop: make(chan struct{}), abort: make(chan struct{})}
	s.aborted, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Send queues e; it never blocks.
func (s *Sender) Send(e broker.AuditEvent) {
	msg := Format(e, s.cfg.Facility, s.cfg.Hostname, s.cfg.AppName, s.pid, s.cfg.SDID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.started.Do(func() { go s.run() })
	select {
	case s.queue <- msg:
	default:
		if s.dropped.Add(1)%1000 == 1 {
			s.log.Error("audit events not sent to syslog: the queue is full (the collector is slow or away); the state store keeps them",
				"address", s.cfg.Address, "dropped", s.dropped.Load())
		}
	}
}

// Dropped is how many events the queue could not take.
func (s *Sender) Dropped() uint64 { return s.dropped.Load() }

// Sent is how many events were written to the collector.
func (s *Sender) Sent() uint64 { return s.sent.Load() }

// Close sends what is queued, until ctx ends, and stops; a dial or a
// write under way when ctx ends is cut short.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.started.Do(func() { close(s.done) }) // nothing was ever sent
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.abortOnce.Do(func() {
			close(s.abort)
			s.cancel()
			s.connMu.Lock()
			if s.conn != nil {
				s.conn.SetDeadline(time.Now())
			}
			s.connMu.Unlock()
		})
		<-s.done
		if n := len(s.queue); n > 0 {
			return fmt.Errorf("syslog %s: %d audit events not sent: %w", s.cfg.Address, n, ctx.Err())
		}
		return nil
	}
}

// maxRefused is how many times a message is written on a connection
// that was just made, and refused, before it is dropped: a message the
// collector will never take (a datagram too large) must not hold up the
// ones after it.
const maxRefused = 3

// run sends the queue in order, reconnecting with a backoff.
func (s *Sender) run() {
	defer close(s.done)
	var (
		conn    net.Conn
		pending []byte // the message being sent, kept across reconnects
		refused int    // writes of pending refused on a fresh connection
		backoff = 500 * time.Millisecond
		failing bool
	)
	setConn := func(c net.Conn) {
		s.connMu.Lock()
		conn, s.conn = c, c
		s.connMu.Unlock()
	}
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		if pending == nil {
			select {
			case pending = <-s.queue:
			case <-s.stop:
				select {
				case pending = <-s.queue:
				default:
					return
				}
			case <-s.abort:
				return
			}
		}
		if conn != nil && s.stream() && peerClosed(conn) {
			conn.Close()
			setConn(nil)
		}
		var err error
		fresh := conn == nil
		if fresh {
			var c net.Conn
			if c, err = s.dial(); err == nil {
				setConn(c)
			}
		}
		if err == nil {
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err = conn.Write(s.frame(pending)); err != nil && fresh {
				refused++
			}
		}
		if err != nil && refused >= maxRefused {
			s.dropped.Add(1)
			s.log.Error("an audit event was not sent to syslog: the collector refused it on new connections (the state store has it)",
				"address", s.cfg.Address, "bytes", len(pending), "err", err)
			pending, refused = nil, 0
			conn.Close()
			setConn(nil)
			continue
		}
		if err != nil {
			if conn != nil {
				conn.Close()
				setConn(nil)
			}
			if !failing {
				s.log.Warn("syslog collector unreachable; audit events wait in the queue", "address", s.cfg.Address, "err", err)
				failing = true
			}
			select {
			case <-time.After(backoff):
			case <-s.abort:
				return
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		if failing {
			s.log.Info("syslog collector reachable again", "address", s.cfg.Address)
			failing = false
		}
		backoff = 500 * time.Millisecond
		pending, refused = nil, 0
		s.sent.Add(1)
	}
}

func (s *Sender) stream() bool { return s.network == "tcp" || s.network == "tls" }

func (s *Sender) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	switch s.network {
	case "tls":
		td := tls.Dialer{NetDialer: &d, Config: s.cfg.TLS}
		return td.DialContext(s.aborted, "tcp", s.where)
	default:
		return d.DialContext(s.aborted, s.network, s.where)
	}
}

// frame is what one message is on the wire: alone in a datagram, or
// octet-counted in a stream.
func (s *Sender) frame(msg []byte) []byte {
	if !s.stream() {
		return msg
	}
	return append([]byte(strconv.Itoa(len(msg))+" "), msg...)
}

// peerClosed reports whether a stream's collector closed its end (it
// stopped, or dropped an idle connection): a write would then be taken
// by the kernel and lost. A collector sends nothing, so any answer but
// a timeout means the connection is over.
func peerClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Format returns e as one RFC 5424 message.
func Format(e broker.AuditEvent, facility int, hostname, app, pid, sdid string) []byte {
	sev := severityNotice
	if e.Kind.Warning() {
		sev = severityWarning
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s [%s", facility*8+sev, e.At.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		header(hostname, 255), header(app, 48), header(pid, 128), header(string(e.Kind), 32), sdName(sdid))
	for _, p := range [][2]string{{"technician", e.Technician}, {"target", e.Target}, {"source", e.Source}, {"session", e.Session}} {
		if p[1] != "" {
			b.WriteString(" " + p[0] + `="` + sdValue(p[1]) + `"`)
		}
	}
	b.WriteString("] ")
	body, _ := json.Marshal(e)
	b.Write(body)
	return b.Bytes()
}

// header is a header field: printable US-ASCII without spaces, at most
// max bytes, "-" when empty.
func header(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// sdName is an SD-ID: printable US-ASCII but '=', ' ', ']' and '"', at
// most 32 bytes.
func sdName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 32; i++ {
		if c := s[i]; c > 32 && c < 127 && c != '=' && c != ']' && c != '"' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// sdValue escapes a PARAM-VALUE: '"', '\' and ']' take a backslash.
func sdValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(strings.ToValidUTF8(s, "\uFFFD"))
}
