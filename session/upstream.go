package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// hostKeyError is a target presenting a host key that is neither pinned
// nor certified by a configured host CA, or offering only host keys of
// types none of which is pinned (offered).
type hostKeyError struct {
	target  string
	got     string
	offered []string
}

func (e *hostKeyError) Error() string {
	if e.got == "" {
		return fmt.Sprintf("target %s offered only host keys of types %s, none of which is pinned or certified by a configured host CA",
			e.target, strings.Join(e.offered, ", "))
	}
	return fmt.Sprintf("target %s presented host key %s, which is not pinned and not certified by a configured host CA", e.target, e.got)
}

// hostKeyCallback checks the target's host key before anything else is
// sent: the client authenticates only after this returns nil, so the
// certificate never reaches an impostor.
func hostKeyCallback(tg *broker.Target) ssh.HostKeyCallback {
	pinned := func(key ssh.PublicKey) error {
		for _, k := range tg.HostKeys {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return &hostKeyError{target: tg.Name, got: ssh.FingerprintSHA256(key)}
	}
	if len(tg.HostCAs) == 0 {
		return func(_ string, _ net.Addr, key ssh.PublicKey) error { return pinned(key) }
	}
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			for _, ca := range tg.HostCAs {
				if bytes.Equal(ca.Marshal(), auth.Marshal()) {
					return true
				}
			}
			return false
		},
		HostKeyFallback: func(_ string, _ net.Addr, key ssh.PublicKey) error { return pinned(key) },
	}
	return func(_ string, remote net.Addr, key ssh.PublicKey) error {
		// Certificates must name the target as configured, not whatever
		// address it was reached at.
		host, _, err := net.SplitHostPort(tg.Address)
		if err != nil {
			host = tg.Address
		}
		if cert, ok := key.(*ssh.Certificate); ok {
			if err := checker.CheckHostKey(net.JoinHostPort(tg.Name, "22"), remote, cert); err == nil {
				return nil
			}
			if err := checker.CheckHostKey(net.JoinHostPort(host, "22"), remote, cert); err == nil {
				return nil
			}
			return &hostKeyError{target: tg.Name, got: "certificate " + ssh.FingerprintSHA256(cert.Key)}
		}
		return pinned(key)
	}
}

// hostKeyAlgorithms asks the target for the kinds of host key that are
// pinned, so that a target with several host keys presents the right one.
func hostKeyAlgorithms(tg *broker.Target) []string {
	var algos []string
	add := func(a ...string) {
		for _, x := range a {
			dup := false
			for _, y := range algos {
				dup = dup || x == y
			}
			if !dup {
				algos = append(algos, x)
			}
		}
	}
	if len(tg.HostCAs) > 0 {
		add(ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
			ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01)
	}
	for _, k := range tg.HostKeys {
		switch k.Type() {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			add(k.Type())
		}
	}
	return algos
}

// route is how sekisho reaches a target: the addresses its name
// resolved to, in the resolver's order, each with sekisho's own address
// on the way there.
type route struct {
	remotes []netip.AddrPort
	locals  []netip.Addr // locals[i] is the way to remotes[i]
}

// sources returns the distinct local addresses of the route.
func (rt route) sources() []netip.Addr {
	var out []netip.Addr
	for _, a := range rt.locals {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// routeTo resolves the target's address once and asks the kernel which
// local address it would connect from to each answer, without sending
// anything: the certificate is bound to those addresses before the
// target is contacted, and the connection is then made from them to the
// addresses resolved here.
func routeTo(ctx context.Context, tg *broker.Target, timeout time.Duration) (route, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, port, err := net.SplitHostPort(tg.Address)
	if err != nil {
		return route{}, fmt.Errorf("target address %s: %w", tg.Address, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return route{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "tcp", port)
	if err != nil {
		return route{}, fmt.Errorf("target address %s: %w", tg.Address, err)
	}
	var rt route
	var lastErr error
	for _, ip := range ips {
		remote := netip.AddrPortFrom(ip.Unmap(), uint16(p))
		// A UDP socket "connected" to the target picks the local
		// address by the routing table; no packet leaves.
		uc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(remote))
		if err != nil {
			lastErr = err
			continue
		}
		rt.remotes = append(rt.remotes, remote)
		rt.locals = append(rt.locals, uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap())
		uc.Close()
	}
	if len(rt.remotes) == 0 {
		return route{}, fmt.Errorf("no route to %s: %w", tg.Address, lastErr)
	}
	return rt, nil
}

// dialTCP opens the connection to the target along rt, trying its
// addresses in turn, all within timeout.
func dialTCP(ctx context.Context, rt route, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	for i, remote := range rt.remotes {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(rt.locals[i], 0))}
		if n := len(rt.remotes) - i; n > 1 {
			// Leave the later addresses a share of the time.
			if deadline, ok := ctx.Deadline(); ok {
				d.Deadline = time.Now().Add(time.Until(deadline) / time.Duration(n))
			}
		}
		nc, err := d.DialContext(ctx, "tcp", remote.String())
		if err == nil {
			return nc, nil
		}
		errs = append(errs, fmt.Errorf("dial %s: %w", remote, err))
	}
	return nil, errors.Join(errs...)
}

// targetConn is the connection to the target with what the target sends
// unasked: the channels it opens and its global requests. Both must be
// read from the handshake on, or the connection stalls (conn.serveTarget
// does). It is not an ssh.Client, whose three goroutines per connection
// would only hand these on.
type targetConn struct {
	ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// handshakeTarget speaks SSH on nc, checks the target's host key and
// authenticates with the certificate, all within timeout. It closes nc
// when it fails.
func handshakeTarget(ctx context.Context, nc net.Conn, tg *broker.Target, login string, signer ssh.Signer, timeout time.Duration) (*targetConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	cfg := &ssh.ClientConfig{
		User:              login,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hostKeyCallback(tg),
		HostKeyAlgorithms: hostKeyAlgorithms(tg),
		ClientVersion:     "SSH-2.0-sekisho",
		Timeout:           timeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, tg.Address, cfg)
	if err != nil {
		nc.Close()
		// A target whose host key changed type (only rsa where
		// ed25519 is pinned) fails the key exchange before it can
		// present a key: the same mismatch, found earlier.
		var neg *ssh.AlgorithmNegotiationError
		if errors.As(err, &neg) && neg.What == "host key" {
			return nil, &hostKeyError{target: tg.Name, offered: neg.RequestedAlgorithms}
		}
		return nil, fmt.Errorf("ssh %s: %w", tg.Address, err)
	}
	if !stop() {
		sc.Close()
		return nil, fmt.Errorf("ssh %s: %w", tg.Address, ctx.Err())
	}
	nc.SetDeadline(time.Time{})
	return &targetConn{Conn: sc, chans: chans, reqs: reqs}, nil
}
