package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// TestUploadOnlyCertificateServesOnlySFTP takes the certificate sekisho
// has Vault issue for an upload-only rule and, with it, asks the target's
// own sshd for what a classifier mistake in sekisho would let through: a
// shell, rsync, a command, a terminal, a forward. The target's sshd
// serves SFTP and nothing else, and only to sekisho's own address.
func TestUploadOnlyCertificateServesOnlySFTP(t *testing.T) {
	t.Parallel()
	is, err := broker.NewIssuer(broker.VaultConfig{Address: env.state.Vault, Mount: "ssh", Role: "sekisho",
		RoleIDFile: filepath.Join(env.dir, "vault", "role-id"), SecretIDFile: filepath.Join(env.dir, "vault", "secret-id"),
		TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.Check(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	b := broker.New(broker.Config{Issuer: is})
	tg := targetNamed(t, "db-jp-01")
	tech := &broker.Technician{Name: "wei", Affiliate: broker.Affiliate{Name: "ops-cn"}}
	target := &broker.Target{Name: tg.Name, Address: tg.Address, Login: tg.Login}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(tg.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	issue := func(lim broker.Limits) *broker.Credential {
		t.Helper()
		d := broker.Decision{Effect: broker.Allow, Rule: "uploads-only", Login: tg.Login, Limits: lim}
		cred, err := b.Certificate(ctxT(t), tech, d, target, "e2e-"+randHex(t), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	dial := func(cred *broker.Credential, from string) (*ssh.Client, error) {
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		nc, err := d.DialContext(ctxT(t), "tcp", tg.Address)
		if err != nil {
			t.Fatal(err)
		}
		sc, chans, reqs, err := ssh.NewClientConn(nc, tg.Address, &ssh.ClientConfig{User: tg.Login,
			Auth: []ssh.AuthMethod{ssh.PublicKeys(cred.Signer)}, HostKeyCallback: ssh.FixedHostKey(hostKey)})
		if err != nil {
			nc.Close()
			return nil, err
		}
		return ssh.NewClient(sc, chans, reqs), nil
	}

	cred := issue(broker.Limits{Channels: []string{broker.ChannelSFTP, broker.ChannelSCP}, Files: broker.FilesUpload, UploadTo: []string{"/tmp"}})
	if got := cred.Certificate.CriticalOptions; got["force-command"] != "internal-sftp" || got["source-address"] != "127.0.0.1/32" {
		t.Fatalf("critical options %v", got)
	}
	if len(cred.Certificate.Extensions) != 0 {
		t.Errorf("extensions %v, want none", cred.Certificate.Extensions)
	}
	c, err := dial(cred, "127.0.0.1")
	if err != nil {
		t.Fatalf("the target refused the certificate from sekisho's address: %v", err)
	}
	defer c.Close()

	const sftpOnly = "This service allows sftp connections only."
	for _, cmd := range []string{"", "rsync --server --sender -vlogDtpre.iLsfxCIvu . /etc/passwd", "cat /etc/passwd", "scp -f /etc/passwd", "internal-sftp"} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		s.Stdout, s.Stderr = &out, &errOut
		if cmd == "" {
			if err := s.Shell(); err != nil {
				t.Fatal(err)
			}
			err = s.Wait()
		} else {
			err = s.Run(cmd)
		}
		var exit *ssh.ExitError
		// sshd says it on the session's output, and nothing else comes.
		if got := strings.TrimSpace(out.String() + errOut.String()); !errors.As(err, &exit) || exit.ExitStatus() != 1 || got != sftpOnly {
			t.Errorf("%q: %v, stdout %q, stderr %q; want exit 1 and %q only", cmd, err, out.String(), errOut.String(), sftpOnly)
		}
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("the target gave a terminal")
	}
	s.Close()
	if _, err := c.Dial("tcp", "127.0.0.1:22"); err == nil {
		t.Error("the target forwarded a connection")
	}

	// SFTP works: the version exchange and a realpath.
	s, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatalf("sftp refused: %v", err)
	}
	in.Write([]byte{0, 0, 0, 5, 1, 0, 0, 0, 3}) // SSH_FXP_INIT, version 3
	var hdr [5]byte
	if _, err := io.ReadFull(out, hdr[:]); err != nil || hdr[4] != 2 {
		t.Fatalf("no SSH_FXP_VERSION: %v %v", hdr, err)
	}
	io.CopyN(io.Discard, out, int64(binary.BigEndian.Uint32(hdr[:4]))-1)
	s.Close()

	// Anywhere but sekisho's address the certificate is worthless.
	if c2, err := dial(cred, "127.0.0.2"); err == nil {
		c2.Close()
		t.Error("the target accepted the certificate from 127.0.0.2")
	}
	// A rule with a shell gets a terminal and no forced command.
	full := issue(broker.Limits{Channels: []string{broker.ChannelShell, broker.ChannelSFTP}})
	if _, ok := full.Certificate.CriticalOptions["force-command"]; ok {
		t.Error("a shell rule's certificate forces a command")
	}
	if _, ok := full.Certificate.Extensions["permit-pty"]; !ok {
		t.Error("a shell rule's certificate has no permit-pty")
	}
	hardening.Report(t, "2", "a certificate for sekisho's address (127.0.0.1/32) used from 127.0.0.2 against the target's real sshd: refused; from 127.0.0.1 accepted")
	hardening.Report(t, "32", "a certificate issued for an upload-only rule, used directly against the target's sshd: a shell, rsync --sender, cat, scp -f and an exec of internal-sftp all got only %q; a pty and a forward refused; SFTP served; the same certificate from 127.0.0.2 refused (source-address)", sftpOnly)
}
