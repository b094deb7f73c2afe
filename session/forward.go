package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// counters adds to several byte counters at once.
type counters []*atomic.Int64

func (cs counters) Add(n int64) int64 {
	var v int64
	for _, c := range cs {
		v = c.Add(n)
	}
	return v
}

// Resolver looks names up; *net.Resolver is one. Tests give their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// directTCPIP is the payload of a direct-tcpip channel open (RFC 4254 7.2).
type directTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

// forwardTarget is a checked port-forward destination: the address that
// was checked is the address that is dialed.
type forwardTarget struct {
	addr netip.Addr
	port uint16
}

// checkForward resolves host once and checks the result against the
// rule's destinations. Loopback, link-local, unspecified and multicast
// addresses (and any address in extraBlocked, such as Vault's) are
// refused unless an entry names them (see matchDestination).
func checkForward(ctx context.Context, res Resolver, dests []string, host string, port uint32, extraBlocked []netip.Addr) (forwardTarget, error) {
	if port == 0 || port > 65535 {
		return forwardTarget{}, fmt.Errorf("port %d is not a TCP port", port)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		if !validHostname(host) {
			return forwardTarget{}, fmt.Errorf("%q is not a host name", host)
		}
		// Names the rule cannot allow are not looked up: refusals must not
		// turn sekisho into a resolver of internal names.
		if !mayAllowName(dests, host, uint16(port)) {
			return forwardTarget{}, fmt.Errorf("%s:%d is not among the rule's forward_to destinations", host, port)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		found, err := res.LookupNetIP(ctx, "ip", host)
		if err != nil || len(found) == 0 {
			return forwardTarget{}, fmt.Errorf("%s does not resolve", host)
		}
		for _, a := range found {
			addrs = append(addrs, a.Unmap())
		}
	}
	// The first address that the rule allows is the one dialed.
	var lastWhy string
	for _, a := range addrs {
		named, allowed := matchDestination(dests, host, a, uint16(port))
		if !allowed {
			lastWhy = fmt.Sprintf("%s:%d is not among the rule's forward_to destinations", host, port)
			continue
		}
		if sensitive(a, extraBlocked) && !named {
			lastWhy = fmt.Sprintf("%s:%d resolves to a loopback, link-local or otherwise protected address, which is refused unless the rule names it", host, port)
			continue
		}
		return forwardTarget{addr: a, port: uint16(port)}, nil
	}
	return forwardTarget{}, errors.New(lastWhy)
}

// mayAllowName reports whether some entry could allow host:port: an entry
// with that name, or a prefix entry for the port.
func mayAllowName(dests []string, host string, port uint16) bool {
	for _, d := range dests {
		h, p, err := net.SplitHostPort(d)
		if err != nil || (p != "*" && p != strconv.Itoa(int(port))) {
			continue
		}
		if _, err := netip.ParsePrefix(h); err == nil || strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// matchDestination reports whether a destination entry allows addr:port
// asked for as host, and whether an entry names the address explicitly:
// the same IP address written in the entry, or "localhost" for a loopback
// address. Names and prefixes allow addresses without naming them, so a
// name that resolves to a metadata or loopback address, or a broad prefix
// that covers Vault, does not open a way there.
func matchDestination(dests []string, host string, addr netip.Addr, port uint16) (named, allowed bool) {
	for _, d := range dests {
		h, p, err := net.SplitHostPort(d)
		if err != nil {
			continue
		}
		if p != "*" {
			if n, err := strconv.Atoi(p); err != nil || n != int(port) {
				continue
			}
		}
		if prefix, err := netip.ParsePrefix(h); err == nil {
			// A range allows, but does not name, the addresses in it.
			allowed = allowed || prefix.Contains(addr)
			continue
		}
		if a, err := netip.ParseAddr(h); err == nil {
			if a.Unmap() == addr {
				return true, true
			}
			continue
		}
		if strings.EqualFold(h, host) {
			// A name allows what it resolves to; only "localhost" names
			// loopback addresses.
			allowed = true
			named = named || strings.EqualFold(h, "localhost") && addr.IsLoopback()
		}
	}
	return named, allowed
}

// protectedPrefixes are reached only when a rule names the exact address:
// cloud metadata services outside link-local space, and IPv6 forms that
// embed an IPv4 address (NAT64, IPv4-compatible) and so could hide one.
var protectedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("168.63.129.16/32"),   // Azure host services
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("::/96"),
}

func sensitive(a netip.Addr, extra []netip.Addr) bool {
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() {
		return true
	}
	for _, p := range protectedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	for _, e := range extra {
		if e.Unmap() == a {
			return true
		}
	}
	return false
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// openForward handles a direct-tcpip channel (ssh -L, -W): allowed by the
// rule, resolved once, checked, then opened through the target to the
// checked address, and recorded like any channel.
func (c *conn) openForward(ctx context.Context, nch ssh.NewChannel) {
	d := c.id.decision
	if !d.Limits.AllowsChannel(broker.ChannelPortForward) {
		c.refuseChannel(ctx, nch, ssh.Prohibited, fmt.Sprintf("port forwarding is not allowed to %s under rule %q", c.id.target.Name, d.Rule))
		return
	}
	var req directTCPIP
	if err := ssh.Unmarshal(nch.ExtraData(), &req); err != nil {
		c.refuseChannel(ctx, nch, ssh.ConnectionFailed, "malformed port forwarding request")
		return
	}
	dest, err := checkForward(ctx, c.srv.cfg.Resolver, d.Limits.ForwardTo, req.Host, req.Port, c.srv.cfg.ForwardBlocked)
	if err != nil {
		c.refuseChannel(ctx, nch, ssh.Prohibited, "port forwarding refused: "+err.Error())
		return
	}
	desc := fmt.Sprintf("%s:%d -> %s", req.Host, req.Port, netip.AddrPortFrom(dest.addr, dest.port))
	rec, err := c.rec.Channel(recording.ChannelInfo{Kind: "forward", Command: desc})
	if err != nil {
		nch.Reject(ssh.ResourceShortage, "sekisho: the forward cannot be recorded, so it is refused")
		c.srv.log.Error("recording unavailable for a forward", append(c.logArgs(), "err", err)...)
		return
	}
	upCh, upReqs, err := c.up.OpenChannel("direct-tcpip", ssh.Marshal(directTCPIP{
		Host: dest.addr.String(), Port: uint32(dest.port), OriginHost: req.OriginHost, OriginPort: req.OriginPort}))
	if err != nil {
		rec.Event("x-forward-failed", err.Error())
		rec.Close()
		nch.Reject(ssh.ConnectionFailed, "sekisho: the target could not open the forward to "+desc)
		return
	}
	go ssh.DiscardRequests(upReqs)
	ch, reqs, err := nch.Accept()
	if err != nil {
		upCh.Close()
		rec.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	c.srv.cfg.Broker.Audit(ctx, broker.AuditEvent{Kind: broker.EventForwardOpen, Technician: c.id.tech.Name, Target: c.id.target.Name,
		Source: c.source, Session: c.sessionID, Detail: desc})
	c.channels.Add(1)
	go func() {
		defer c.channels.Done()
		var wg sync.WaitGroup
		wg.Add(2)
		var failed error
		var once sync.Once
		var in, out atomic.Int64 // this forward's bytes, besides the session's
		fail := func(err error) {
			once.Do(func() { failed = err })
			upCh.Close()
			ch.Close()
		}
		go func() {
			defer wg.Done()
			eof, rerr := copyRecorded(ch, upCh, rec.Stdin, counters{&c.bytesIn, &in})
			if rerr != nil {
				fail(rerr)
			} else if eof {
				upCh.CloseWrite()
			}
		}()
		go func() {
			defer wg.Done()
			eof, rerr := copyRecorded(upCh, ch, rec.Stdout, counters{&c.bytesOut, &out})
			if rerr != nil {
				fail(rerr)
			} else if eof {
				ch.CloseWrite()
			}
		}()
		wg.Wait()
		ch.Close()
		upCh.Close()
		counts := fmt.Sprintf(`{"destination":%q,"bytes_in":%d,"bytes_out":%d}`, desc, in.Load(), out.Load())
		rec.Event("x-close", counts)
		rec.Close()
		c.srv.cfg.Broker.Audit(context.Background(), broker.AuditEvent{Kind: broker.EventForwardClose, Technician: c.id.tech.Name,
			Target: c.id.target.Name, Source: c.source, Session: c.sessionID, Detail: counts})
		if failed != nil {
			c.srv.log.Error("recording failed: ending session", append(c.logArgs(), "err", failed)...)
			c.fail(EndRecordingFailed)
		}
	}()
}
