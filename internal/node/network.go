package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/sekisho/sekisho/session"
)

// proxyListener takes the client's address from a PROXY protocol header
// that a trusted load balancer must send; a header from any other peer
// ends the connection, so nobody can claim another address.
func proxyListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: 10 * time.Second,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ap, err := netip.ParseAddrPort(o.Upstream.String()); err == nil {
				for _, p := range trusted {
					if p.Contains(ap.Addr().Unmap()) {
						// A balancer must say who the client is: its own
						// address would pass for every client's.
						return proxyproto.REQUIRE, nil
					}
				}
			}
			return proxyproto.REJECT, nil
		},
		ValidateHeader: func(h *proxyproto.Header) error {
			// Only a TCP client's address may stand for the client:
			// LOCAL and UNKNOWN carry none, and an AF_UNIX stream
			// header (IsStream too) carries a path of the balancer's
			// choosing. ErrInvalidUpstream gets the refusal audited.
			if _, tcp := h.SourceAddr.(*net.TCPAddr); h.Command.IsLocal() || !tcp ||
				(h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6) {
				return fmt.Errorf("PROXY header without a TCP client address: %w", proxyproto.ErrInvalidUpstream)
			}
			return nil
		},
	}
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
