package broker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestCheckHostCertificate(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	is := &Issuer{cfg: VaultConfig{HostTTL: time.Hour}, now: func() time.Time { return now }}
	caPub, caSigner := newEd25519(t)
	_, otherCA := newEd25519(t)
	pub, _ := newEd25519(t)
	otherPub, _ := newEd25519(t)
	names := []string{"db-jp-01", "db-jp-01.db.example", "10.0.0.1"}
	const keyID = "sekisho node host key for target db-jp-01"
	unix := func(t time.Time) uint64 { return uint64(t.Unix()) }
	good := func() *ssh.Certificate {
		return &ssh.Certificate{Key: pub, Serial: 7, CertType: ssh.HostCert, KeyId: keyID,
			ValidPrincipals: []string{"10.0.0.1", "db-jp-01", "db-jp-01.db.example"}, // Vault's order need not be ours
			ValidAfter:      unix(now.Add(-30 * time.Second)), ValidBefore: unix(now.Add(time.Hour))}
	}
	for _, tc := range []struct {
		name   string
		modify func(c *ssh.Certificate)
		signer ssh.Signer
		want   string
	}{
		{name: "as asked", want: ""},
		{name: "user certificate", modify: func(c *ssh.Certificate) { c.CertType = ssh.UserCert }, want: "not a host certificate"},
		{name: "another key", modify: func(c *ssh.Certificate) { c.Key = otherPub }, want: "for another key"},
		{name: "another CA", signer: otherCA, want: "not signed by the host CA"},
		{name: "a principal added", modify: func(c *ssh.Certificate) { c.ValidPrincipals = append(c.ValidPrincipals, "vault.internal") }, want: "principals"},
		{name: "a principal missing", modify: func(c *ssh.Certificate) { c.ValidPrincipals = c.ValidPrincipals[:2] }, want: "principals"},
		{name: "another key ID", modify: func(c *ssh.Certificate) { c.KeyId = "x" }, want: "key ID"},
		{name: "critical option", modify: func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"force-command": "x"} }, want: "critical options"},
		{name: "lives forever", modify: func(c *ssh.Certificate) { c.ValidBefore = ssh.CertTimeInfinity }, want: "longer than"},
		{name: "lives a day", modify: func(c *ssh.Certificate) { c.ValidBefore = unix(now.Add(24 * time.Hour)) }, want: "longer than"},
		{name: "expired", modify: func(c *ssh.Certificate) { c.ValidBefore = unix(now.Add(-time.Second)) }, want: "not valid now"},
		{name: "not yet valid", modify: func(c *ssh.Certificate) { c.ValidAfter = unix(now.Add(10 * time.Minute)) }, want: "not valid now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			if tc.modify != nil {
				tc.modify(c)
			}
			signer := caSigner
			if tc.signer != nil {
				signer = tc.signer
			}
			if err := c.SignCert(strings.NewReader(strings.Repeat("r", 256)), signer); err != nil {
				t.Fatal(err)
			}
			err := is.checkHostCertificate(c, pub, caPub, names, keyID)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestJumpNames(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want []string
	}{
		{Target{Name: "db-jp-01", Address: "10.0.0.1:22"}, []string{"db-jp-01", "10.0.0.1"}},
		{Target{Name: "db-jp-01", Hostnames: []string{"db-jp-01.db.example"}, Address: "DB1.Example:2222"}, []string{"db-jp-01", "db-jp-01.db.example", "db1.example"}},
		{Target{Name: "db-jp-01", Address: "[::ffff:10.0.0.1]:22"}, []string{"db-jp-01", "10.0.0.1"}},
		{Target{Name: "db-jp-01", Address: "db-jp-01:22"}, []string{"db-jp-01"}},
	} {
		if got := tc.t.JumpNames(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: JumpNames() = %q, want %q", tc.t, got, tc.want)
		}
	}
}

// JumpTarget maps a direct-tcpip destination to a target by its names or
// its address's host, on port 22; nothing else, and never an address two
// targets share.
func TestJumpTarget(t *testing.T) {
	db := &Target{Name: "db-jp-01", Hostnames: []string{"db-jp-01.db.example"}, Address: "10.0.0.1:22"}
	web := &Target{Name: "web-sg-01", Address: "10.0.1.1:2222"}
	a := &Target{Name: "a", Address: "10.0.2.1:22"}
	b := &Target{Name: "b", Address: "10.0.2.1:22"}
	br := New(Config{Targets: []*Target{db, web, a, b}})
	for _, tc := range []struct {
		host string
		port uint32
		want *Target
	}{
		{"db-jp-01", 22, db},
		{"DB-JP-01", 22, db},
		{"db-jp-01.db.example", 22, db},
		{"db-jp-01.db.example.", 22, db},
		{"10.0.0.1", 22, db},
		{"::ffff:10.0.0.1", 22, db},
		{"db-jp-01", 5432, nil},
		{"10.0.0.1", 2222, nil},
		{"web-sg-01", 22, web},
		{"web-sg-01", 2222, nil}, // its sshd's port: a port forward
		{"10.0.1.1", 2222, nil},
		{"10.0.1.1", 22, web},
		{"10.0.2.1", 22, nil}, // a and b: neither
		{"a", 22, a},
		{"db-jp-01.db.example.evil", 22, nil},
		{"", 22, nil},
	} {
		got, ok := br.JumpTarget(tc.host, tc.port)
		if got != tc.want || ok != (tc.want != nil) {
			t.Errorf("JumpTarget(%q, %d) = %v, %v; want %v", tc.host, tc.port, got, ok, tc.want)
		}
	}
}

func TestKnownHostsLine(t *testing.T) {
	ca, _ := newEd25519(t)
	line := KnownHostsLine(ca, []string{"db-jp-01", "*.db.example"})
	marker, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil || marker != "cert-authority" || !slices.Equal(hosts, []string{"db-jp-01", "*.db.example"}) || string(key.Marshal()) != string(ca.Marshal()) {
		t.Errorf("KnownHostsLine = %q: marker %q, hosts %q, %v", line, marker, hosts, err)
	}
}
