package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The load parts open hundreds to thousands of connections at once:
// thousands of OpenSSH processes would measure the client, so they use
// golang.org/x/crypto/ssh in this process instead, with the same key,
// certificate and pinned host keys (the known_hosts file the OpenSSH runs
// use) as paths B and D.

// login is who a Go client logs in as.
type login int

const (
	loginTarget  login = iota // B: aiko+db-jp-01 through sekisho
	loginDirect               // D: the target's login with the Vault certificate
	loginCommand              // aiko at sekisho itself: authenticated, no target
)

// goClients dials the paths with x/crypto/ssh.
type goClients struct {
	configs map[login]*ssh.ClientConfig
	addrs   map[login]string
}

// handshakeTimeout bounds a Go client's TCP connect, key exchange and
// authentication (for B, sekisho's Vault call and target connection come
// later, with the channel).
const handshakeTimeout = 60 * time.Second

func (e *env) goClients() (*goClients, error) {
	pem, err := os.ReadFile(e.state.Keys[technician])
	if err != nil {
		return nil, err
	}
	key, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("%s's key: %w", technician, err)
	}
	certLine, err := os.ReadFile(e.certFile)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certLine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.certFile, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s holds no certificate", e.certFile)
	}
	certSigner, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, err
	}
	hostKeys, err := knownhosts.New(filepath.Join(e.dir, "known_hosts"))
	if err != nil {
		return nil, err
	}
	cfg := func(user string, s ssh.Signer) *ssh.ClientConfig {
		return &ssh.ClientConfig{
			User:            user,
			Auth:            []ssh.AuthMethod{ssh.PublicKeys(s)},
			HostKeyCallback: hostKeys,
			// What OpenSSH 9.2 negotiates with sekisho and with the target
			// when the post-quantum hybrid is off: the same on every leg.
			Config:  ssh.Config{KeyExchanges: []string{"curve25519-sha256"}},
			Timeout: handshakeTimeout,
		}
	}
	return &goClients{
		configs: map[login]*ssh.ClientConfig{
			loginTarget:  cfg(technician+"+"+targetName, key),
			loginDirect:  cfg(e.login, certSigner),
			loginCommand: cfg(technician, key),
		},
		addrs: map[login]string{loginTarget: e.state.Bastion, loginDirect: e.target, loginCommand: e.state.Bastion},
	}, nil
}

// loginFor is the login of a path's sessions.
func loginFor(p path) login {
	if p == pathB {
		return loginTarget
	}
	return loginDirect
}

// dial connects and authenticates, within handshakeTimeout.
func (g *goClients) dial(ctx context.Context, l login) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	addr := g.addrs[l]
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, g.configs[l])
	if !stop() {
		if err == nil {
			c.Close()
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}
