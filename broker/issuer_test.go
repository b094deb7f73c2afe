package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

func newEd25519(t *testing.T) (ssh.PublicKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey(), signer
}

func TestCheckCertificate(t *testing.T) {
	now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	is := &Issuer{cfg: VaultConfig{TTL: 5 * time.Minute}, now: func() time.Time { return now }}
	req := CertRequest{Principal: "dbadmin", KeyID: "sekisho:aiko@ops-jp:sess-1", PTY: true, SourceAddress: "192.0.2.10/32"}
	sftpOnly := CertRequest{Principal: "dbadmin", KeyID: "sekisho:aiko@ops-jp:sess-1", ForceCommand: ForceSFTP, SourceAddress: "192.0.2.10/32"}

	caPub, caSigner := newEd25519(t)
	_, otherCA := newEd25519(t)
	pub, _ := newEd25519(t)
	otherPub, _ := newEd25519(t)
	unix := func(t time.Time) uint64 { return uint64(t.Unix()) }

	// good is what Vault returns for req: issued 30s ago, living TTL.
	good := func() *ssh.Certificate {
		return &ssh.Certificate{
			Key:             pub,
			Serial:          42,
			CertType:        ssh.UserCert,
			KeyId:           req.KeyID,
			ValidPrincipals: []string{req.Principal},
			ValidAfter:      unix(now.Add(-30 * time.Second)),
			ValidBefore:     unix(now.Add(5 * time.Minute)),
			Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""},
				CriticalOptions: map[string]string{"source-address": "192.0.2.10/32"}},
		}
	}

	tests := []struct {
		name   string
		modify func(c *ssh.Certificate)
		signer ssh.Signer
		req    *CertRequest // default req
		want   string       // substring of the error; "" means accepted
	}{
		{name: "good", modify: func(c *ssh.Certificate) {}},
		{name: "good sftp only", req: &sftpOnly, modify: func(c *ssh.Certificate) {
			c.Extensions = nil
			c.CriticalOptions["force-command"] = "internal-sftp"
		}},
		{name: "sftp only without force-command", req: &sftpOnly, modify: func(c *ssh.Certificate) { c.Extensions = nil },
			want: "critical options map[source-address:192.0.2.10/32], want exactly map[force-command:internal-sftp source-address:192.0.2.10/32]"},
		{name: "sftp only with another force-command", req: &sftpOnly, modify: func(c *ssh.Certificate) {
			c.Extensions = nil
			c.CriticalOptions["force-command"] = "/bin/sh"
		}, want: "want exactly map[force-command:internal-sftp"},
		{name: "sftp only with a pty", req: &sftpOnly, modify: func(c *ssh.Certificate) {
			c.CriticalOptions["force-command"] = "internal-sftp"
		}, want: `unexpected extension "permit-pty"`},
		{name: "pty missing", modify: func(c *ssh.Certificate) { c.Extensions = nil }, want: `extension "permit-pty" missing`},
		{name: "without source-address", modify: func(c *ssh.Certificate) { c.CriticalOptions = nil },
			want: "critical options map[], want exactly map[source-address:192.0.2.10/32]"},
		{name: "source-address widened", modify: func(c *ssh.Certificate) { c.CriticalOptions["source-address"] = "0.0.0.0/0" },
			want: "want exactly map[source-address:192.0.2.10/32]"},
		{name: "good at the skew limits", modify: func(c *ssh.Certificate) {
			c.ValidAfter = unix(now.Add(2 * time.Minute))
			c.ValidBefore = unix(now.Add(5*time.Minute + 2*time.Minute))
		}},
		{name: "good in its last second", modify: func(c *ssh.Certificate) {
			c.ValidAfter = unix(now.Add(-5 * time.Minute))
			c.ValidBefore = unix(now.Add(time.Second))
		}},
		{name: "host certificate", modify: func(c *ssh.Certificate) { c.CertType = ssh.HostCert },
			want: "not a user certificate"},
		{name: "other key", modify: func(c *ssh.Certificate) { c.Key = otherPub },
			want: "certificate is for another key"},
		{name: "signed by another CA", signer: otherCA, modify: func(c *ssh.Certificate) {},
			want: "not signed by the Vault CA"},
		{name: "two principals", modify: func(c *ssh.Certificate) { c.ValidPrincipals = []string{"dbadmin", "root"} },
			want: `principals ["dbadmin" "root"], want exactly "dbadmin"`},
		{name: "look-alike principal", modify: func(c *ssh.Certificate) { c.ValidPrincipals = []string{"dbadmin "} },
			want: `principals ["dbadmin "], want exactly "dbadmin"`},
		{name: "wrong principal", modify: func(c *ssh.Certificate) { c.ValidPrincipals = []string{"root"} },
			want: `principals ["root"], want exactly "dbadmin"`},
		{name: "wrong key ID", modify: func(c *ssh.Certificate) { c.KeyId = "sekisho:li@ops-cn:sess-1" },
			want: `key ID "sekisho:li@ops-cn:sess-1", want "sekisho:aiko@ops-jp:sess-1"`},
		{name: "valid forever", modify: func(c *ssh.Certificate) { c.ValidBefore = ssh.CertTimeInfinity },
			want: "longer than the 5m0s asked for"},
		{name: "longer than TTL plus skew", modify: func(c *ssh.Certificate) {
			c.ValidBefore = unix(now.Add(5*time.Minute + 2*time.Minute + time.Second))
		}, want: "valid until 2025-03-01T09:07:01Z, longer than the 5m0s asked for"},
		{name: "a day long", modify: func(c *ssh.Certificate) { c.ValidBefore = unix(now.Add(24 * time.Hour)) },
			want: "longer than the 5m0s asked for"},
		{name: "expired", modify: func(c *ssh.Certificate) {
			c.ValidAfter = unix(now.Add(-10 * time.Minute))
			c.ValidBefore = unix(now.Add(-5 * time.Minute))
		}, want: "not valid now (valid 2025-03-01T08:50:00Z to 2025-03-01T08:55:00Z)"},
		{name: "expires right now", modify: func(c *ssh.Certificate) {
			c.ValidAfter = unix(now.Add(-5 * time.Minute))
			c.ValidBefore = unix(now)
		}, want: "not valid now"},
		{name: "not yet valid", modify: func(c *ssh.Certificate) {
			c.ValidAfter = unix(now.Add(2*time.Minute + time.Second))
			c.ValidBefore = unix(now.Add(6 * time.Minute))
		}, want: "not valid now (valid 2025-03-01T09:02:01Z to 2025-03-01T09:06:00Z)"},
		{name: "valid after beyond int64", modify: func(c *ssh.Certificate) {
			c.ValidAfter = 1<<63 + 5
		}, want: "not valid now"},
		{name: "critical option force-command", modify: func(c *ssh.Certificate) {
			c.CriticalOptions["force-command"] = "/bin/true"
		}, want: "critical options map[force-command:/bin/true source-address:192.0.2.10/32], want exactly"},
		{name: "critical option verify-required", modify: func(c *ssh.Certificate) {
			c.CriticalOptions["verify-required"] = ""
		}, want: "want exactly"},
		{name: "port forwarding extension", modify: func(c *ssh.Certificate) {
			c.Extensions["permit-port-forwarding"] = ""
		}, want: `unexpected extension "permit-port-forwarding"`},
		{name: "agent forwarding extension", modify: func(c *ssh.Certificate) {
			c.Extensions = map[string]string{"permit-agent-forwarding": ""}
		}, want: `unexpected extension "permit-agent-forwarding"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.modify(c)
			signer := tc.signer
			if signer == nil {
				signer = caSigner
			}
			if err := c.SignCert(rand.Reader, signer); err != nil {
				t.Fatal(err)
			}
			// Through the wire format, as the certificate comes from Vault.
			parsed, err := parseCertificate(string(ssh.MarshalAuthorizedKey(c)))
			if err != nil {
				t.Fatal(err)
			}
			r := req
			if tc.req != nil {
				r = *tc.req
			}
			err = is.checkCertificate(parsed, pub, caPub, r)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused a good certificate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	accepted := 0
	for _, tc := range tests {
		if tc.want == "" {
			accepted++
		}
	}
	hardening.Report(t, "4", "every certificate Vault returns is re-checked against what sekisho asked for: %d wrong ones (valid forever or a day, other or extra principals, other key ID, critical options missing, changed or added, a pty or forwarding extension not asked for, host certificate, other key or CA, expired) all refused, %d good ones accepted", len(tests)-accepted, accepted)
	hardening.Report(t, "5", "%d certificates through the wire format (expired, expiring this second, not yet valid, validity past int64, valid forever, host certificate, other key, other CA, wrong, two or look-alike principals, critical options): %d refused with the reason, the %d good ones accepted", len(tests), len(tests)-accepted, accepted)
	hardening.Report(t, "12", "certificates for the look-alike principal \"dbadmin \" (trailing space), for \"root\" and for both \"dbadmin\" and \"root\": refused, exactly the one principal asked for is required")
	hardening.Report(t, "clock", "certificates at the ±2 min skew limits accepted; 1 s beyond them (not yet valid for 2 min 1 s, valid 1 s longer than the TTL plus skew) refused; %d cases in all", len(tests))
}

func TestCheckCertificateSignedByCertificate(t *testing.T) {
	now := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	is := &Issuer{cfg: VaultConfig{TTL: 5 * time.Minute}, now: func() time.Time { return now }}
	req := CertRequest{Principal: "dbadmin", KeyID: "k"}
	_, caSigner := newEd25519(t)
	pub, _ := newEd25519(t)

	// The CA key sekisho knows is itself presented as a certificate. Neither
	// SignCert nor the parser allow a certificate as signer, so the signature
	// key is set by hand: checkCertificate compares keys, not signatures.
	caCert := &ssh.Certificate{Key: caSigner.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"ca"},
		ValidBefore: ssh.CertTimeInfinity}
	if err := caCert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	c := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "k", ValidPrincipals: []string{"dbadmin"},
		ValidAfter: uint64(now.Unix()), ValidBefore: uint64(now.Add(time.Minute).Unix()), SignatureKey: caCert}
	err := is.checkCertificate(c, pub, caCert, req)
	if err == nil || !strings.Contains(err.Error(), "signed by a certificate") {
		t.Fatalf("err = %v, want refusal of a certificate-signed certificate", err)
	}
	hardening.Report(t, "3", "a Vault certificate whose signing key is a certificate of the CA key: refused (%q)", err)
}

func TestParseCertificate(t *testing.T) {
	pub, _ := newEd25519(t)
	if _, err := parseCertificate(string(ssh.MarshalAuthorizedKey(pub))); err == nil ||
		!strings.Contains(err.Error(), "not a certificate") {
		t.Errorf("plain key: err = %v, want not a certificate", err)
	}
	if _, err := parseCertificate("garbage"); err == nil || !strings.Contains(err.Error(), "parse signed key") {
		t.Errorf("garbage: err = %v, want parse error", err)
	}
}

func TestTechnicianHasKey(t *testing.T) {
	registered, _ := newEd25519(t)
	other, _ := newEd25519(t)
	_, caSigner := newEd25519(t)
	tech := &Technician{Name: "aiko", Affiliate: opsJP, Keys: []ssh.PublicKey{registered}}

	if !tech.HasKey(registered) {
		t.Error("registered key refused")
	}
	// The same key, parsed again from its authorized_keys form.
	reparsed, _, _, _, err := ssh.ParseAuthorizedKey(ssh.MarshalAuthorizedKey(registered))
	if err != nil {
		t.Fatal(err)
	}
	if !tech.HasKey(reparsed) {
		t.Error("registered key refused after a round trip through authorized_keys form")
	}
	if tech.HasKey(other) {
		t.Error("unregistered key accepted")
	}

	// A certificate for the registered key, signed by some CA.
	cert := &ssh.Certificate{Key: registered, CertType: ssh.UserCert, KeyId: "aiko",
		ValidPrincipals: []string{"aiko"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	if tech.HasKey(cert) {
		t.Error("certificate whose key is registered accepted as a technician key")
	}
	// Even if the certificate itself were registered.
	tech.Keys = append(tech.Keys, cert)
	if tech.HasKey(cert) {
		t.Error("registered certificate accepted as a technician key")
	}
	hardening.Report(t, "2", "a certificate of a technician's registered key, signed by some CA, and the same certificate registered as a key: both refused as technician keys; the plain key accepted, also after an authorized_keys round trip")
}
