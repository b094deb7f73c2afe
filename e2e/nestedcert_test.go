package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestNestedCertificatesRefused: technicians log in with keys, never
// certificates. A client offering a chain of 128 nested certificates
// (each signed by the one before, the first by aiko's own key) is
// refused, and sekisho goes on serving. (One SSH packet carries about 860
// levels; building them here takes a minute, so the test stays at 128.)
func TestNestedCertificatesRefused(t *testing.T) {
	v := startVariant(t, nil)
	aiko := techSigner(t, "aiko")
	// Build the chain: level 1 certifies a fresh key and is signed by
	// aiko's key; level n+1 is signed by level n's key and names level
	// n's certificate as its signature key. x/crypto will not sign with
	// a certificate, so the signature is made here as SignCert makes it.
	var prev *ssh.Certificate
	var prevKey ssh.Signer = aiko
	var signer ssh.Signer
	levels := 0
	for levels < 128 {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		k, _ := ssh.NewSignerFromKey(priv)
		cert := &ssh.Certificate{Key: k.PublicKey(), CertType: ssh.UserCert, KeyId: "nested",
			ValidPrincipals: []string{"aiko+db-jp-01"}, ValidBefore: ssh.CertTimeInfinity}
		if prev == nil {
			if err := cert.SignCert(rand.Reader, prevKey); err != nil {
				t.Fatal(err)
			}
		} else {
			cert.SignatureKey = prev
			out := cert.Marshal()
			sig, err := prevKey.Sign(rand.Reader, out[:len(out)-4]) // without the empty signature's length
			if err != nil {
				t.Fatal(err)
			}
			cert.Signature = sig
		}
		s, err := ssh.NewCertSigner(cert, k)
		if err != nil {
			t.Fatal(err)
		}
		prev, prevKey, signer = cert, k, s
		levels++
	}
	if levels < 2 {
		t.Fatalf("built only %d levels", levels)
	}
	t.Logf("a chain of %d nested certificates, %d bytes", levels, len(signer.PublicKey().Marshal()))
	cfg := &ssh.ClientConfig{User: "aiko+db-jp-01", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }}
	c, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, cfg)
	if err == nil {
		c.Close()
		t.Fatal("a nested certificate chain logged in")
	} else if !strings.Contains(err.Error(), "unable to authenticate") && !strings.Contains(err.Error(), "handshake failed") {
		t.Fatalf("unexpected error: %v", err)
	}
	// sekisho still serves.
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo", "alive"), nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "alive" {
		t.Fatalf("after the nested chain: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "3", "a technician's client offers a chain of %d nested certificates (%d bytes) rooted in aiko's key: refused, sekisho serves the next login", levels, len(signer.PublicKey().Marshal()))
}
