package e2e

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestTamperedSequenceDuringKeyExchangeDisconnects: a man in the middle
// inserts an SSH_MSG_IGNORE packet into the technician's stream during
// the unencrypted key exchange, shifting the sequence numbers as the
// Terrapin attack (CVE-2023-48795) does. With strict key exchange sekisho
// drops the connection instead of going on with a tampered transcript;
// the same client without the man in the middle logs in.
func TestTamperedSequenceDuringKeyExchangeDisconnects(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	injected := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			injected <- err
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", "127.0.0.1:"+v.port)
		if err != nil {
			injected <- err
			return
		}
		defer s.Close()
		go func() {
			io.Copy(c, s)
			c.Close() // sekisho hung up: so does the man in the middle
		}()
		// The client's version line, its KEXINIT packet, then an
		// inserted IGNORE packet, then the rest untouched.
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			injected <- err
			return
		}
		var head [4]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			injected <- err
			return
		}
		kexinit := make([]byte, binary.BigEndian.Uint32(head[:]))
		if _, err := io.ReadFull(r, kexinit); err != nil {
			injected <- err
			return
		}
		ignore := []byte{0, 0, 0, 12, 6, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // length 12, padding 6, SSH_MSG_IGNORE "", padding
		out := append(append(append([]byte(line), head[:]...), kexinit...), ignore...)
		if _, err := s.Write(out); err != nil {
			injected <- err
			return
		}
		injected <- nil
		io.Copy(s, r)
	}()

	cfg := &ssh.ClientConfig{User: "aiko+web-sg-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))},
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }, Timeout: 20 * time.Second}
	start := time.Now()
	c, err := ssh.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		c.Close()
		t.Fatal("the handshake went on with a packet inserted during the key exchange")
	}
	took, tampered := time.Since(start), err
	if ierr := <-injected; ierr != nil {
		t.Fatalf("the man in the middle did not inject: %v", ierr)
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("the tampered handshake reached authentication: %v", err)
	}

	// Without the man in the middle, the same client logs in.
	c, err = ssh.Dial("tcp", "127.0.0.1:"+v.port, cfg)
	if err != nil {
		t.Fatalf("untampered login: %v", err)
	}
	c.Close()
	hardening.Report(t, "18", "an SSH_MSG_IGNORE inserted after the technician's KEXINIT (Terrapin's sequence shift): connection dropped in the key exchange after %.0f ms (%v); the next login served", took.Seconds()*1000, tampered)
}
