package session

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// fakeJump answers for the harness's target "db" on port 22 with host
// certificates signed by ca.
type fakeJump struct {
	tg *broker.Target
	ca ssh.Signer
}

func (j *fakeJump) JumpTarget(host string, port uint32) (*broker.Target, bool) {
	return j.tg, host == j.tg.Name && port == 22
}

func (j *fakeJump) HostSigner(context.Context, *broker.Target) (ssh.Signer, error) {
	key := newSigner()
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{j.tg.Name},
		ValidBefore: uint64(time.Now().Add(time.Hour).Unix()), KeyId: "test host"}
	if err := cert.SignCert(rand.Reader, j.ca); err != nil {
		return nil, err
	}
	return ssh.NewCertSigner(cert, key)
}

// jumpHarness is a harness whose server answers ProxyJumps to "db".
func jumpHarness(t *testing.T, edit func(*Config)) (*harness, *fakeJump) {
	t.Helper()
	var j *fakeJump
	h := newHarnessWith(t, nil, func(c *Config) {
		if edit != nil {
			edit(c)
		}
		j = &fakeJump{ca: newSigner()}
		c.Jump = j
	}, func(ch ssh.Channel, r *ssh.Request) {
		replyAll(ch, r)
		if r.Type == "exec" {
			io.WriteString(ch, "from the target\n")
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{0}))
			ch.Close()
		}
	})
	j.tg = h.broker.tg
	return h, j
}

func openJumpChannel(c *ssh.Client, host string, port uint32) (ssh.Channel, error) {
	ch, reqs, err := c.OpenChannel("direct-tcpip", ssh.Marshal(directTCPIP{Host: host, Port: port, OriginHost: "127.0.0.1", OriginPort: 1}))
	if err != nil {
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return ch, nil
}

// dialInner opens a jump to "db" on outer and speaks SSH on it as a
// client expecting host, trusting the fake host CA only, with key.
func dialInner(t *testing.T, outer *ssh.Client, j *fakeJump, host string, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	ch, err := openJumpChannel(outer, "db", 22)
	if err != nil {
		t.Fatal(err)
	}
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return string(auth.Marshal()) == string(j.ca.PublicKey().Marshal())
	}}
	nc := newChannelConn(ch, jumpAddr("client"), jumpAddr("db:22"))
	conn, chans, reqs, err := ssh.NewClientConn(nc, host+":22", &ssh.ClientConfig{User: "li", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: checker.CheckHostKey, Timeout: 10 * time.Second})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return ssh.NewClient(conn, chans, reqs), nil
}

// The inner connection presents a host certificate of the host CA for
// the target's name, authenticates the same technician's key, and runs
// a session to the target.
func TestJumpAnswersAsTheTarget(t *testing.T) {
	h, j := jumpHarness(t, nil)
	outer := h.dial(t)
	defer outer.Close()
	inner, err := dialInner(t, outer, j, "db", h.key)
	if err != nil {
		t.Fatalf("inner handshake: %v", err)
	}
	defer inner.Close()
	s, err := inner.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("hostname")
	if err != nil || string(out) != "from the target\n" {
		t.Fatalf("exec through the jump: %q, %v", out, err)
	}
	// Another name than the certificate's: the client refuses it.
	if _, err := dialInner(t, outer, j, "other", h.key); err == nil || !strings.Contains(err.Error(), "principal") {
		t.Errorf("a client expecting another host accepted the certificate: %v", err)
	}
}

// A key of another technician is refused on the inner connection.
func TestJumpRefusesAnotherTechniciansKey(t *testing.T) {
	h, j := jumpHarness(t, nil)
	outer := h.dial(t)
	defer outer.Close()
	if _, err := dialInner(t, outer, j, "db", newSigner()); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("another key: %v", err)
	}
}

// One connection holds at most maxJumpHandshakes inner connections in
// their handshake; one that never speaks is closed at the auth timeout,
// which makes room again.
func TestJumpHandshakesAreBounded(t *testing.T) {
	h, _ := jumpHarness(t, func(c *Config) { c.AuthTimeout = 2 * time.Second })
	outer := h.dial(t)
	defer outer.Close()
	var idle []ssh.Channel
	for range maxJumpHandshakes {
		ch, err := openJumpChannel(outer, "db", 22)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, ch)
	}
	_, err := openJumpChannel(outer, "db", 22)
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage || !strings.Contains(oce.Message, "still logging in") {
		t.Fatalf("one more than the bound: %v", err)
	}
	// sekisho closes the silent ones at the auth timeout.
	buf := make([]byte, 64)
	for _, ch := range idle {
		ch.Read(buf) // the server's version line
		if _, err := io.Copy(io.Discard, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "room for a new inner connection", func() bool {
		ch, err := openJumpChannel(outer, "db", 22)
		if err == nil {
			ch.Close()
		}
		return err == nil
	})
}

// A destination that names no target is a port forward, under the
// rule's forwarding limits (here none: refused).
func TestJumpOnlyForTargets(t *testing.T) {
	h, _ := jumpHarness(t, nil)
	outer := h.dial(t)
	defer outer.Close()
	for _, dest := range []struct {
		host string
		port uint32
	}{{"db", 2222}, {"elsewhere", 22}, {"127.0.0.1", 22}} {
		_, err := openJumpChannel(outer, dest.host, dest.port)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || !strings.Contains(oce.Message, "port forwarding is not allowed") {
			t.Errorf("%s:%d: %v", dest.host, dest.port, err)
		}
	}
}
