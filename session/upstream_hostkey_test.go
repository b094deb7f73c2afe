package session

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// TestHostKeyOfAnotherTypeIsAMismatch: a target whose only host key is of
// another type than the pinned one fails the key exchange before it shows
// a key; that is reported as a host key mismatch, and the certificate is
// never offered (the target's auth callback is never called).
func TestHostKeyOfAnotherTypeIsAMismatch(t *testing.T) {
	t.Parallel()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _ := ssh.NewSignerFromKey(priv)
	offered := make(chan struct{}, 1)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
		offered <- struct{}{}
		return nil, errors.New("no")
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	acceptChannels(ln, cfg, func(ssh.Channel, <-chan *ssh.Request) {})
	addr := ln.Addr().String()
	pinned := newSigner().PublicKey() // ed25519
	tg := &broker.Target{Name: "db-jp-01", Address: addr, HostKeys: []ssh.PublicKey{pinned}}
	rt, err := routeTo(context.Background(), tg, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := dialTCP(context.Background(), rt, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = handshakeTarget(context.Background(), nc, tg, "root", newSigner(), 5*time.Second)
	var hk *hostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("handshakeTarget = %v, want a host key mismatch", err)
	}
	if want := "offered only host keys of types ecdsa-sha2-nistp256"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	select {
	case <-offered:
		t.Error("a key was offered to the target")
	default:
	}
}

// A name with several addresses: the certificate names the way to each,
// and the connection falls through to one that answers.
func TestRouteTriesEveryAddress(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	tg := &broker.Target{Name: "db", Address: net.JoinHostPort("localhost", port)}
	rt, err := routeTo(context.Background(), tg, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rt.sources(), netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("sources %v lack 127.0.0.1", rt.sources())
	}
	// Whatever order the resolver gave, an address that refuses first
	// is passed over.
	rt.remotes = append([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}, rt.remotes...)
	rt.locals = append([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, rt.locals...)
	nc, err := dialTCP(context.Background(), rt, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v: %v", rt.remotes, err)
	}
	nc.Close()
}
