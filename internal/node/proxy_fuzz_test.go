package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/sekisho/sekisho/internal/hardening"
)

// The PROXY protocol is the first thing sekisho reads from a connection,
// before any authentication: whoever connects chooses these bytes. These
// tests push arbitrary bytes through proxyListener, the listener sekisho
// serves on when proxy_protocol.trusted is set, and read the connection the
// way session.Server.handle does: RemoteAddr first (the source sekisho
// admits, authorizes and audits), then the bytes the SSH handshake gets.

// proxyTrusted is the proxy_protocol.trusted of these tests.
var proxyTrusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}

// proxyPeers are the addresses connections come from: balancers in
// proxyTrusted (one IPv4-mapped, as a dual-stack socket reports it), and
// others.
var proxyPeers = []struct {
	addr    *net.TCPAddr
	trusted bool
}{
	{&net.TCPAddr{IP: net.ParseIP("10.0.0.5").To4(), Port: 40000}, true},
	{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.6"), Port: 40001}, true},
	{&net.TCPAddr{IP: net.ParseIP("fd00::5"), Port: 40002}, true},
	{&net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4(), Port: 5555}, false},
	{&net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 5556}, false},
	{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.8"), Port: 5557}, false},
}

// pipeListener accepts the one connection it was given.
type pipeListener struct{ conns chan net.Conn }

func (l *pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 22} }

// peerConn is the server end of a net.Pipe that reports a chosen peer
// address and, like a TCP socket, lets its deadlines be set after the
// peer closed (net.Pipe returns io.ErrClosedPipe then, which go-proxyproto
// would pass on as a read error no real connection has).
type peerConn struct {
	net.Conn
	peer   net.Addr
	closed atomic.Bool
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }
func (c *peerConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 22} }

func (c *peerConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (c *peerConn) SetDeadline(t time.Time) error {
	return c.deadline(c.Conn.SetDeadline(t))
}

func (c *peerConn) SetReadDeadline(t time.Time) error {
	return c.deadline(c.Conn.SetReadDeadline(t))
}

func (c *peerConn) deadline(err error) error {
	if errors.Is(err, io.ErrClosedPipe) && !c.closed.Load() {
		return nil // the peer closed: reads return io.EOF whatever the deadline
	}
	return err
}

// proxyOutcome is what sekisho makes of a connection's first bytes.
type proxyOutcome struct {
	source net.Addr // what handle takes as the connection's source
	got    []byte   // what the SSH handshake reads, if readErr is nil
	// readErr is the error of the first read: the connection is refused.
	readErr error
}

// proxyConnect sends data from peer, then closes the sending side, through
// proxyListener, and reads as handle would. It fails t if sekisho takes
// longer than a few seconds: with the sender gone nothing may wait for
// the header timeout.
func proxyConnect(t testing.TB, peer *net.TCPAddr, data []byte) proxyOutcome {
	t.Helper()
	client, server := net.Pipe()
	l := &pipeListener{conns: make(chan net.Conn, 1)}
	l.conns <- &peerConn{Conn: server, peer: peer}
	nc, err := proxyListener(l, proxyTrusted).Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if len(data) > 0 {
			client.Write(data) // fails once nc is closed unread
		}
		client.Close()
	}()
	done := make(chan proxyOutcome, 1)
	go func() {
		var o proxyOutcome
		o.source = nc.RemoteAddr()
		var buf [1]byte
		n, err := nc.Read(buf[:])
		switch {
		case err == nil || err == io.EOF:
			rest, rerr := io.ReadAll(nc)
			if rerr != nil {
				o.readErr = rerr
			}
			o.got = append(buf[:n], rest...)
		default:
			o.readErr = err
		}
		nc.Close()
		done <- o
	}()
	select {
	case o := <-done:
		wg.Wait()
		return o
	case <-time.After(5 * time.Second):
		nc.Close()
		t.Fatalf("peer %s, %d bytes %q: sekisho still reading after 5s with the sender gone", peer, len(data), data)
		return proxyOutcome{}
	}
}

// wantHeader is the client address and length of a PROXY header at the
// start of data that sekisho may take a source from: a PROXY (not LOCAL)
// command for a TCP client over IPv4 or IPv6. It is written from the
// specification (haproxy's proxy-protocol.txt), not from the library, and
// is lenient where the library is (the first v1 field, ports with a sign
// or leading zeros, extra v1 fields), strict where an address is at stake.
func wantHeader(data []byte) (src netip.AddrPort, n int, ok bool) {
	if bytes.HasPrefix(data, []byte("PROXY")) {
		// go-proxyproto checks the first five bytes only: "PROXY0 TCP4 ..."
		// passes. Harmless, as only a trusted balancer's header is used.
		end := bytes.IndexByte(data, '\n')
		if end < 0 || end >= 107 || end < 1 || data[end-1] != '\r' {
			return src, 0, false
		}
		f := strings.Split(string(data[:end-1]), " ")
		if len(f) < 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
			return src, 0, false
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil || (f[1] == "TCP4") != ip.Is4() {
			return src, 0, false
		}
		dst, err := netip.ParseAddr(f[3])
		if err != nil || (f[1] == "TCP4") != dst.Is4() {
			return src, 0, false
		}
		ports := [2]int{}
		for i, p := range f[4:6] {
			v, err := strconv.Atoi(p)
			if err != nil || v < 0 || v > 65535 {
				return src, 0, false
			}
			ports[i] = v
		}
		return netip.AddrPortFrom(ip.WithZone(""), uint16(ports[0])), end + 1, true
	}
	if !bytes.HasPrefix(data, proxyproto.SIGV2) || len(data) < 16 || data[12] != 0x21 {
		return src, 0, false
	}
	length := int(binary.BigEndian.Uint16(data[14:16]))
	if len(data) < 16+length {
		return src, 0, false
	}
	switch data[13] {
	case 0x11: // TCP over IPv4
		if length < 12 {
			return src, 0, false
		}
		ip := netip.AddrFrom4([4]byte(data[16:20]))
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(data[24:26])), 16 + length, true
	case 0x21: // TCP over IPv6
		if length < 36 {
			return src, 0, false
		}
		ip := netip.AddrFrom16([16]byte(data[16:32]))
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(data[48:50])), 16 + length, true
	}
	return src, 0, false
}

// checkProxyInput asserts what sekisho may make of data sent from peer.
func checkProxyInput(t *testing.T, peer *net.TCPAddr, trusted bool, data []byte) proxyOutcome {
	o := proxyConnect(t, peer, data)
	src, n, valid := wantHeader(data)
	signature := bytes.HasPrefix(data, []byte("PROXY")) || bytes.HasPrefix(data, proxyproto.SIGV2)
	if o.readErr != nil {
		// Refused: sekisho logs and audits the peer it saw.
		if o.source.String() != peer.String() {
			t.Fatalf("peer %s (trusted %v), %q: refused (%v) but the source is %s", peer, trusted, data, o.readErr, o.source)
		}
		if trusted && len(data) == 0 {
			// Closed before a byte: a balancer's plain TCP health check.
			if !errors.Is(o.readErr, errBalancerCheck) {
				t.Fatalf("trusted peer %s closed without a byte: refused with %v, want errBalancerCheck (quiet)", peer, o.readErr)
			}
			return o
		}
		if trusted && !signature && !errors.Is(o.readErr, proxyproto.ErrNoProxyProtocol) {
			t.Fatalf("trusted peer %s, %q without a header: refused with %v, want ErrNoProxyProtocol (audited)", peer, data, o.readErr)
		}
		// go-proxyproto reads a header through a 256-byte buffer: a v2
		// header with more TLVs than fit is refused as malformed.
		readable := valid && n <= 16+256
		if !trusted && readable && !errors.Is(o.readErr, proxyproto.ErrSuperfluousProxyHeader) {
			t.Fatalf("untrusted peer %s, valid header %q: refused with %v, want ErrSuperfluousProxyHeader (audited)", peer, data, o.readErr)
		}
		if trusted && readable {
			t.Fatalf("trusted peer %s, valid header %q: refused with %v", peer, data, o.readErr)
		}
		return o
	}
	if !trusted {
		// No header is taken from an untrusted peer, and none is dropped
		// unseen: the handshake gets every byte.
		if o.source.String() != peer.String() {
			t.Fatalf("untrusted peer %s, %q: source %s", peer, data, o.source)
		}
		if signature {
			t.Fatalf("untrusted peer %s sent a PROXY signature %q and was not refused", peer, data)
		}
		if !bytes.Equal(o.got, data) {
			t.Fatalf("untrusted peer %s: the handshake got %q, sent %q", peer, o.got, data)
		}
		return o
	}
	// A trusted balancer's connection goes on only with a valid header,
	// whose client address becomes the source; the handshake gets the
	// bytes after it.
	if !valid {
		t.Fatalf("trusted peer %s, %q: no valid TCP PROXY header, yet the connection goes on with source %s", peer, data, o.source)
	}
	a, ok := o.source.(*net.TCPAddr)
	if !ok {
		t.Fatalf("trusted peer %s, %q: source %T %s is not a TCP address", peer, data, o.source, o.source)
	}
	if got := a.AddrPort(); got.Addr().Unmap() != src.Addr().Unmap() || got.Port() != src.Port() {
		t.Fatalf("trusted peer %s, %q: source %s, the header says %s", peer, data, got, src)
	}
	if !bytes.Equal(o.got, data[n:]) {
		t.Fatalf("trusted peer %s: the handshake got %q, want %q after the %d-byte header", peer, o.got, data[n:], n)
	}
	return o
}

// proxyV2 returns a v2 header: command, family, addresses and TLVs.
func proxyV2(cmd, fam byte, addrs []byte, tlvs ...[]byte) []byte {
	b := append([]byte(nil), proxyproto.SIGV2...)
	b = append(b, cmd, fam)
	payload := append([]byte(nil), addrs...)
	for _, tlv := range tlvs {
		payload = append(payload, tlv...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func tlv(typ byte, value string) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(value))), value...)
}

var (
	v4Addrs = []byte{198, 51, 100, 7, 10, 0, 0, 1, 0x15, 0xb3, 0, 22}      // 198.51.100.7:5555 -> 10.0.0.1:22
	v6Addrs = append(append(netip.MustParseAddr("2001:db8::42").AsSlice(), // -> fd00::1, 5555 -> 22
		netip.MustParseAddr("fd00::1").AsSlice()...), 0x15, 0xb3, 0, 22)
	unixAddrs = append(append([]byte("/run/client\x00"), make([]byte, 96)...), make([]byte, 108)...)
	sshHello  = "SSH-2.0-OpenSSH_9.6\r\n"
)

// proxySeeds are headers of every kind, valid and not, each followed by
// the start of an SSH handshake.
func proxySeeds() [][]byte {
	seeds := []string{
		"PROXY TCP4 198.51.100.7 10.0.0.1 5555 22\r\n",
		"PROXY TCP6 2001:db8::42 fd00::1 5555 22\r\n",
		"PROXY TCP6 ::ffff:198.51.100.7 fd00::1 5555 22\r\n",
		"PROXY TCP6 fe80::1%eth0 fd00::1 5555 22\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		"PROXY TCP4 198.51.100.7 10.0.0.1 5555 22",                                             // no CRLF
		"PROXY TCP4 198.51.100.7 10.0.0.1 5555 22\n",                                           // LF only
		"PROXY TCP4 198.51.100.7 10.0.0.1 99999 22\r\n",                                        // port out of range
		"PROXY TCP4 2001:db8::42 10.0.0.1 5555 22\r\n",                                         // family mismatch
		"PROXY TCP6 198.51.100.7 fd00::1 5555 22\r\n",                                          // family mismatch
		"PROXY TCP4 198.51.100.7 10.0.0.1 +5555 0022 extra\r\n",                                // lenient fields
		"PROXY TCP4 198.51.100.7\r\n",                                                          // truncated
		"PROXY TCP4 198.51.100.7 10.0.0.1 5555 22\r\nPROXY TCP4 203.0.113.9 10.0.0.1 1 22\r\n", // two headers
		"PROXY " + strings.Repeat("A", 200) + "\r\n",                                           // over 107 bytes
		"PROXY",
		"PROX",
		"P",
		"SSH-2.0-OpenSSH_9.6",
		"GET / HTTP/1.1\r\n\r\n",
		"\x00\x00\x00\x00",
		"",
	}
	var out [][]byte
	for _, s := range seeds {
		out = append(out, []byte(s+sshHello))
	}
	v2 := [][]byte{
		proxyV2(0x21, 0x11, v4Addrs),                                       // PROXY TCP4
		proxyV2(0x21, 0x21, v6Addrs),                                       // PROXY TCP6
		proxyV2(0x20, 0x00, nil),                                           // LOCAL (health check)
		proxyV2(0x20, 0x11, v4Addrs),                                       // LOCAL with addresses
		proxyV2(0x21, 0x00, nil),                                           // PROXY UNSPEC
		proxyV2(0x21, 0x12, v4Addrs),                                       // UDP over IPv4
		proxyV2(0x21, 0x31, unixAddrs),                                     // AF_UNIX stream
		proxyV2(0x21, 0x32, unixAddrs),                                     // AF_UNIX datagram
		proxyV2(0x22, 0x11, v4Addrs),                                       // unknown command
		proxyV2(0x11, 0x11, v4Addrs),                                       // version 1 in a v2 header
		proxyV2(0x21, 0x11, v4Addrs, tlv(0x01, "h2"), tlv(0x05, "abc123")), // ALPN, unique ID
		proxyV2(0x21, 0x11, v4Addrs, tlv(0xEA, "\x01vpce-0123456789abcdef")),
		proxyV2(0x21, 0x11, v4Addrs, tlv(0x04, "")),                       // NOOP
		proxyV2(0x21, 0x11, v4Addrs, tlv(0x01, strings.Repeat("x", 300))), // over the 256-byte buffer
		proxyV2(0x21, 0x11, v4Addrs[:8]),                                  // addresses cut short
		proxyV2(0x21, 0x21, v6Addrs, []byte{0x01, 0xff}),                  // truncated TLV
		proxyV2(0x21, 0x11, v4Addrs)[:20],                                 // truncated header
		proxyproto.SIGV2[:12],
		proxyproto.SIGV2[:5],
	}
	long := proxyV2(0x21, 0x11, v4Addrs)
	binary.BigEndian.PutUint16(long[14:16], 0xffff) // length beyond the data
	v2 = append(v2, long)
	for _, h := range v2 {
		out = append(out, append(h, sshHello...))
	}
	return out
}

func FuzzProxyHeader(f *testing.F) {
	for _, s := range proxySeeds() {
		for i := range proxyPeers {
			f.Add(s, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, peer uint8) {
		p := proxyPeers[int(peer)%len(proxyPeers)]
		checkProxyInput(t, p.addr, p.trusted, data)
	})
}

// TestProxyHeaderSeeds runs every seed from every peer and states what
// comes out; the fuzz target checks the same on what it generates.
func TestProxyHeaderSeeds(t *testing.T) {
	seeds := proxySeeds()
	var accepted, refused int
	for _, s := range seeds {
		for _, p := range proxyPeers {
			if o := checkProxyInput(t, p.addr, p.trusted, s); o.readErr == nil {
				accepted++
			} else {
				refused++
			}
		}
	}
	hardening.Report(t, "proxy", "FuzzProxyHeader: %d seed inputs (v1/v2 TCP4, TCP6, UNKNOWN, LOCAL, UDP, AF_UNIX, TLVs, truncated, oversized, garbage) from %d trusted and untrusted peers pass: %d go on (source the header's only from a trusted peer), %d refused with the peer as source",
		len(seeds)*len(proxyPeers), len(proxyPeers), accepted, refused)
}

// TestProxyHeaderValidFromTrustedPeer pins the other direction: the
// headers a balancer really sends are accepted, with their address.
func TestProxyHeaderValidFromTrustedPeer(t *testing.T) {
	for _, h := range [][]byte{
		[]byte("PROXY TCP4 198.51.100.7 10.0.0.1 5555 22\r\n"),
		[]byte("PROXY TCP6 2001:db8::42 fd00::1 5555 22\r\n"),
		proxyV2(0x21, 0x11, v4Addrs),
		proxyV2(0x21, 0x21, v6Addrs),
		proxyV2(0x21, 0x11, v4Addrs, tlv(0xEA, "\x01vpce-0123456789abcdef")),
	} {
		for _, p := range proxyPeers {
			if !p.trusted {
				continue
			}
			o := checkProxyInput(t, p.addr, true, append(h, sshHello...))
			if o.readErr != nil {
				t.Errorf("peer %s, %q: refused: %v", p.addr, h, o.readErr)
			}
		}
	}
}

// TestProxyHeaderSlowBalancerIsCut: a peer that sends part of a header, or
// nothing, and holds the connection open is ended by the header timeout,
// not waited for.
func TestProxyHeaderSlowBalancerIsCut(t *testing.T) {
	for _, tc := range []struct {
		peer int
		data string
	}{
		{0, "PROXY TCP4 198.51.100.7"},
		{0, string(proxyproto.SIGV2[:8])},
		{0, ""},
		{3, "PROXY TCP4 198.51.100.7"},
	} {
		client, server := net.Pipe()
		l := &pipeListener{conns: make(chan net.Conn, 1)}
		l.conns <- &peerConn{Conn: server, peer: proxyPeers[tc.peer].addr}
		ln := proxyListener(l, proxyTrusted).(*proxyproto.Listener)
		ln.ReadHeaderTimeout = 200 * time.Millisecond // 10s in production
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			if tc.data != "" {
				client.Write([]byte(tc.data))
			}
		}()
		start := time.Now()
		_, err = nc.Read(make([]byte, 1))
		took := time.Since(start)
		nc.Close()
		client.Close()
		<-sent
		if err == nil {
			t.Errorf("peer %s, %q then silence: the connection went on", proxyPeers[tc.peer].addr, tc.data)
		}
		if took > 5*time.Second {
			t.Errorf("peer %s, %q then silence: ended after %s, want the header timeout", proxyPeers[tc.peer].addr, tc.data, took)
		}
	}
}

// TestProxyHealthChecksAreQuiet: what a trusted balancer's health checks
// send (a LOCAL header, or nothing at all) ends the connection with
// errBalancerCheck, which the session server neither warns of nor
// audits; from any other peer the same is refused as before.
func TestProxyHealthChecksAreQuiet(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"LOCAL header", proxyV2(0x20, 0x00, nil)},
		{"LOCAL header with addresses", proxyV2(0x20, 0x11, v4Addrs)},
		{"nothing", nil},
	} {
		for _, p := range proxyPeers {
			o := proxyConnect(t, p.addr, tc.data)
			check := errors.Is(o.readErr, errBalancerCheck)
			if p.trusted != check {
				t.Errorf("%s from %s (trusted %v): read error %v", tc.name, p.addr, p.trusted, o.readErr)
			}
			if check && (errors.Is(o.readErr, proxyproto.ErrNoProxyProtocol) || errors.Is(o.readErr, proxyproto.ErrInvalidUpstream)) {
				t.Errorf("%s from %s: %v would be audited as an attack", tc.name, p.addr, o.readErr)
			}
		}
	}
	// A trusted peer that sends a byte then closes is no check.
	if o := proxyConnect(t, proxyPeers[0].addr, []byte("S")); !errors.Is(o.readErr, proxyproto.ErrNoProxyProtocol) {
		t.Errorf("one byte then close from a trusted peer: %v, want ErrNoProxyProtocol (audited)", o.readErr)
	}
}
