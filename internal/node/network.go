package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/sekisho/sekisho/session"
)

// errBalancerCheck ends a trusted balancer's health check: a PROXY v2
// LOCAL header (what HAProxy's checks send when its server line has
// send-proxy-v2), or a connection closed before its first byte (a plain
// TCP check). Neither is an attack, and a balancer checks every second or
// so: the connection ends without a warning or an audit event, which
// only ErrNoProxyProtocol and ErrInvalidUpstream get.
var errBalancerCheck = errors.New("health check from a trusted balancer")

// proxyListener takes the client's address from a PROXY protocol header
// that a trusted load balancer must send; a header from any other peer
// ends the connection, so nobody can claim another address.
func proxyListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener:          &checkListener{Listener: ln, trusted: trusted},
		ReadHeaderTimeout: 10 * time.Second,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if isTrusted(o.Upstream, trusted) {
				// A balancer must say who the client is: its own
				// address would pass for every client's.
				return proxyproto.REQUIRE, nil
			}
			return proxyproto.REJECT, nil
		},
		ValidateHeader: func(h *proxyproto.Header) error {
			if h.Command.IsLocal() {
				return errBalancerCheck
			}
			// Only a TCP client's address may stand for the client:
			// UNKNOWN carries none, and an AF_UNIX stream header
			// (IsStream too) carries a path of the balancer's choosing.
			// ErrInvalidUpstream gets the refusal audited.
			if _, tcp := h.SourceAddr.(*net.TCPAddr); !tcp ||
				(h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6) {
				return fmt.Errorf("PROXY header without a TCP client address: %w", proxyproto.ErrInvalidUpstream)
			}
			return nil
		},
	}
}

// isTrusted reports whether addr is in one of the trusted prefixes.
func isTrusted(addr net.Addr, trusted []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// checkListener marks the connections of trusted balancers so that one
// closed before its first byte reads as errBalancerCheck, not as a
// connection without a PROXY header.
type checkListener struct {
	net.Listener
	trusted []netip.Prefix
}

func (l *checkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || !isTrusted(c.RemoteAddr(), l.trusted) {
		return c, err
	}
	return &checkConn{Conn: c}, nil
}

// checkConn is a trusted balancer's connection. Read is called by one
// goroutine at a time (the PROXY header's reader, then the SSH
// handshake), so read needs no lock.
type checkConn struct {
	net.Conn
	read bool // some byte arrived
}

func (c *checkConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.read = true
	}
	if errors.Is(err, io.EOF) && !c.read {
		return n, errBalancerCheck
	}
	return n, err
}

// vaultAddrs returns Vault's addresses, which port forwarding never reaches
// unless a rule names them.
func vaultAddrs(ctx context.Context, address string) []netip.Addr {
	u, err := url.Parse(address)
	if err != nil {
		return nil
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		return []netip.Addr{a}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	return addrs
}

// forwardResolver resolves port-forward destinations with server (IP:port),
// or the system's resolver when server is empty.
func forwardResolver(server string) session.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
}
