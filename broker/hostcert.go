package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Host certificates let sekisho answer a technician's ProxyJump (ssh -J)
// as the target itself: the technician's client checks the certificate
// against the host CA line `sekisho known-hosts` prints, and sekisho
// terminates the inner SSH connection, so that it is decided, recorded
// and relayed like a TECHNICIAN+TARGET login.
//
// The host CA lives in a mount of Vault's SSH secrets engine of its own
// (vault.host_mount, default ssh-host): a user certificate and a host
// certificate never share a signing key. Each node makes one ed25519 key
// in memory at start and has Vault sign it, once per target, for that
// target's names (JumpNames); a certificate is used until half its life
// is gone, then signed anew.

// Defaults of the host CA's mount, role and certificate lifetime.
const (
	DefaultHostMount   = "ssh-host"
	DefaultHostRole    = "sekisho-host"
	DefaultHostCertTTL = time.Hour
)

// JumpNames are the names a technician's client may know t by through
// ProxyJump, each a principal of the host certificate sekisho presents
// as t: its name, its host names, and the host of its address.
func (t *Target) JumpNames() []string {
	names := []string{t.Name}
	names = append(names, t.Hostnames...)
	if h := addressHost(t); h != "" {
		names = append(names, h)
	}
	out := names[:0]
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// addressHost is the host of t's address, as JumpNames has it.
func addressHost(t *Target) string {
	h, _, err := net.SplitHostPort(t.Address)
	if err != nil {
		return ""
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(h)
}

// hostCert is the host certificate in use for one target.
type hostCert struct {
	target     *Target
	principals string // comma-joined, as asked for
	cert       *ssh.Certificate
	renewAt    time.Time // half its life gone
	expires    time.Time
	// failedAt and err are the last failure to sign, which is not
	// tried again for hostSignBackoff: a technician opening jumps in a
	// loop must not have Vault asked each time.
	failedAt time.Time
	err      error
	renewing bool // a renewal runs in the background
}

// hostSignBackoff is how long a failure to sign a host certificate is
// answered from memory.
const hostSignBackoff = 10 * time.Second

// hostCerts is the issuer's cache of host certificates.
type hostCerts struct {
	key ssh.MultiAlgorithmSigner // this node's host key, in memory only

	mu    sync.Mutex // held while signing: a certificate is asked for once
	ca    ssh.PublicKey
	certs map[string]*hostCert // by target name
}

func newHostCerts() (*hostCerts, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	key, ok := signer.(ssh.MultiAlgorithmSigner)
	if !ok {
		return nil, errors.New("ed25519 signer without algorithms")
	}
	return &hostCerts{key: key, certs: map[string]*hostCert{}}, nil
}

// HostCA returns the public key of the host CA, from Vault's public_key
// endpoint of the host mount (which needs no token).
func (is *Issuer) HostCA(ctx context.Context) (ssh.PublicKey, error) {
	hc := is.hosts
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return is.hostCALocked(ctx)
}

func (is *Issuer) hostCALocked(ctx context.Context) (ssh.PublicKey, error) {
	hc := is.hosts
	if hc.ca != nil {
		return hc.ca, nil
	}
	ca, err := FetchHostCA(ctx, is.client.Address(), is.cfg.HostMount, is.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	hc.ca = ca
	return ca, nil
}

// FetchHostCA reads the host CA's public key from the SSH secrets engine
// mounted at mount, at the Vault at address. The endpoint needs no token.
func FetchHostCA(ctx context.Context, address, mount string, timeout time.Duration) (ssh.PublicKey, error) {
	if timeout == 0 {
		timeout = DefaultVaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := newVaultClient(address, timeout)
	if err != nil {
		return nil, err
	}
	resp, err := client.Logical().ReadRawWithContext(ctx, mount+"/public_key")
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil || resp == nil {
		if resp != nil && (resp.StatusCode == 400 || resp.StatusCode == 403 || resp.StatusCode == 404) {
			return nil, fmt.Errorf("vault has no host CA at %s (run `sekisho vault setup`, which creates it)", mount)
		}
		return nil, fmt.Errorf("vault read %s/public_key: %w", mount, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, 64<<10)); err != nil {
		return nil, fmt.Errorf("vault read %s/public_key: %w", mount, err)
	}
	ca, _, _, _, err := ssh.ParseAuthorizedKey(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("vault has no host CA at %s (run `sekisho vault setup`, which creates it): %v", mount, err)
	}
	return ca, nil
}

// HostSigner returns a signer presenting a host certificate for t's
// names, signed by Vault's host CA: the one in use while it has more
// than half its life left, else a new one. When Vault cannot sign, a
// certificate still valid for a minute more is used meanwhile, and the
// failure is answered from memory for hostSignBackoff.
//
// The signer presents the target's current certificate whenever it is
// asked: a long inner connection shows a fresh one at each key
// exchange, where the client checks it again.
func (is *Issuer) HostSigner(ctx context.Context, t *Target) (ssh.Signer, error) {
	names := t.JumpNames()
	principals := strings.Join(names, ",")
	hc := is.hosts
	hc.mu.Lock()
	defer hc.mu.Unlock()
	now := is.now()
	cur := hc.certs[t.Name]
	usable := cur != nil && cur.cert != nil && now.Add(time.Minute).Before(cur.expires)
	switch {
	case usable && cur.principals == principals && now.Before(cur.renewAt):
		return &hostSigner{is: is, name: t.Name, cert: hc.certs[t.Name].cert}, nil
	case cur != nil && now.Sub(cur.failedAt) < hostSignBackoff:
		if usable {
			return &hostSigner{is: is, name: t.Name, cert: hc.certs[t.Name].cert}, nil
		}
		return nil, cur.err
	}
	if err := is.renewHostLocked(ctx, t, names, principals); err != nil {
		if usable {
			return &hostSigner{is: is, name: t.Name, cert: hc.certs[t.Name].cert}, nil
		}
		return nil, err
	}
	return &hostSigner{is: is, name: t.Name, cert: hc.certs[t.Name].cert}, nil
}

// renewHostLocked signs a host certificate for t and puts it in use;
// hc.mu is held. A failure is remembered for the backoff.
func (is *Issuer) renewHostLocked(ctx context.Context, t *Target, names []string, principals string) error {
	hc := is.hosts
	ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
	defer cancel()
	cert, err := is.signHost(ctx, names, "sekisho node host key for target "+t.Name)
	cur := hc.certs[t.Name]
	if cur == nil {
		cur = &hostCert{}
		hc.certs[t.Name] = cur
	}
	if err != nil {
		cur.failedAt, cur.err = is.now(), err
		hc.ca = nil // fetched again next time: the CA may have been rotated
		return err
	}
	after, before := time.Unix(int64(cert.ValidAfter), 0), time.Unix(int64(cert.ValidBefore), 0)
	*cur = hostCert{target: t, principals: principals, cert: cert, renewAt: after.Add(before.Sub(after) / 2), expires: before}
	return nil
}

// currentHostCert is the certificate in use for the target called name;
// past half its life, a renewal starts in the background.
func (is *Issuer) currentHostCert(name string) *ssh.Certificate {
	hc := is.hosts
	hc.mu.Lock()
	defer hc.mu.Unlock()
	cur := hc.certs[name]
	if cur == nil {
		return nil
	}
	if cur.target != nil && !cur.renewing && is.now().After(cur.renewAt) && is.now().Sub(cur.failedAt) >= hostSignBackoff {
		cur.renewing = true
		t := cur.target
		go func() {
			hc.mu.Lock()
			defer hc.mu.Unlock()
			names := t.JumpNames()
			is.renewHostLocked(context.Background(), t, names, strings.Join(names, ","))
			if c := hc.certs[t.Name]; c != nil {
				c.renewing = false
			}
		}()
	}
	return cur.cert
}

// hostSigner answers as one target with the node's host key and the
// target's current certificate.
type hostSigner struct {
	is   *Issuer
	name string
	cert *ssh.Certificate // the certificate in use when it was made
}

func (h *hostSigner) PublicKey() ssh.PublicKey {
	if c := h.is.currentHostCert(h.name); c != nil {
		return c
	}
	return h.cert
}

func (h *hostSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return h.is.hosts.key.Sign(rand, data)
}

func (h *hostSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	return h.is.hosts.key.SignWithAlgorithm(rand, data, algorithm)
}

func (h *hostSigner) Algorithms() []string { return h.is.hosts.key.Algorithms() }

// signHost has Vault sign the node's host key for names; hc.mu is held.
func (is *Issuer) signHost(ctx context.Context, names []string, keyID string) (*ssh.Certificate, error) {
	ca, err := is.hostCALocked(ctx)
	if err != nil {
		return nil, err
	}
	pub := is.hosts.key.PublicKey()
	cert, err := is.signCert(ctx, "sign_host", "vault sign host certificate", is.cfg.HostMount+"/sign/"+is.cfg.HostRole, map[string]any{
		"public_key":       string(ssh.MarshalAuthorizedKey(pub)),
		"cert_type":        "host",
		"valid_principals": strings.Join(names, ","),
		"key_id":           keyID,
		"ttl":              is.cfg.HostTTL.String(),
	})
	if err != nil {
		return nil, err
	}
	if err := is.checkHostCertificate(cert, pub, ca, names, keyID); err != nil {
		return nil, fmt.Errorf("vault returned an unacceptable host certificate: %w", err)
	}
	return cert, nil
}

// checkHostCertificate refuses a host certificate that is not exactly
// what was asked for: a role that added a principal would let sekisho
// answer for a host it does not serve.
func (is *Issuer) checkHostCertificate(cert *ssh.Certificate, pub, ca ssh.PublicKey, names []string, keyID string) error {
	if cert.CertType != ssh.HostCert {
		return errors.New("not a host certificate")
	}
	if !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) {
		return errors.New("certificate is for another key")
	}
	if !bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) {
		return errors.New("certificate is not signed by the host CA")
	}
	got, want := slices.Clone(cert.ValidPrincipals), slices.Clone(names)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("principals %q, want exactly %q", cert.ValidPrincipals, names)
	}
	if cert.KeyId != keyID {
		return fmt.Errorf("key ID %q, want %q", cert.KeyId, keyID)
	}
	if len(cert.CriticalOptions) > 0 {
		return fmt.Errorf("critical options %v on a host certificate", cert.CriticalOptions)
	}
	now := is.now()
	const skew = 2 * time.Minute
	after, before := time.Unix(int64(cert.ValidAfter), 0), time.Unix(int64(cert.ValidBefore), 0)
	if cert.ValidBefore == ssh.CertTimeInfinity || before.Sub(now) > is.cfg.HostTTL+skew {
		return fmt.Errorf("valid until %s, longer than the %s asked for", before.UTC().Format(time.RFC3339), is.cfg.HostTTL)
	}
	if cert.ValidAfter > math.MaxInt64 || now.Before(after.Add(-skew)) || !now.Before(before) {
		return fmt.Errorf("not valid now (valid %s to %s)", after.UTC().Format(time.RFC3339), before.UTC().Format(time.RFC3339))
	}
	return nil
}

// KnownHostsLine is the line technicians put in ~/.ssh/known_hosts so
// that their client trusts, for the names in patterns, the host
// certificates sekisho presents through ProxyJump.
func KnownHostsLine(ca ssh.PublicKey, patterns []string) string {
	return "@cert-authority " + strings.Join(patterns, ",") + " " +
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca))) + " sekisho host CA"
}
