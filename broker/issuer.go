package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
	"golang.org/x/crypto/ssh"
)

// VaultConfig tells the issuer how to reach Vault's SSH secrets engine.
type VaultConfig struct {
	Address      string
	RoleIDFile   string // AppRole role ID
	SecretIDFile string // AppRole secret ID
	AppRoleMount string // default "approle"
	Mount        string // SSH secrets engine mount, default "ssh"
	Role         string // signing role
	TTL          time.Duration
	TransitMount string // transit secrets engine mount, default "transit"
	TOTPKey      string // transit key that seals TOTP secrets, default "sekisho-totp"
	// Timeout bounds obtaining one certificate, every Vault call it
	// takes included (a login, the CA, the signature, a retry), so that
	// a slow, sealed or unreachable Vault refuses a new session within a
	// few seconds instead of keeping the technician waiting; default 3s.
	// It also bounds each call Check makes.
	Timeout time.Duration
	// SourceAddresses are the addresses sekisho reaches targets from,
	// written into every certificate's source-address option so that a
	// certificate is useless from anywhere else. Empty means the local
	// address of each session's own connection to its target.
	SourceAddresses []netip.Prefix
	// HostMount is the SSH secrets engine mount of the host CA that signs
	// the certificates sekisho presents as a target through ProxyJump
	// (default ssh-host), HostRole its signing role (default
	// sekisho-host), HostTTL their lifetime (default 1h).
	HostMount string
	HostRole  string
	HostTTL   time.Duration
}

// WithDefaults is v with the default of every field left empty: the
// mounts ssh, approle, transit and ssh-host, the TOTP key, the host
// role, the lifetimes and the timeout.
func (v VaultConfig) WithDefaults() VaultConfig {
	if v.Mount == "" {
		v.Mount = "ssh"
	}
	if v.AppRoleMount == "" {
		v.AppRoleMount = "approle"
	}
	if v.TTL == 0 {
		v.TTL = 5 * time.Minute
	}
	if v.Timeout == 0 {
		v.Timeout = DefaultVaultTimeout
	}
	if v.TransitMount == "" {
		v.TransitMount = DefaultTransitMount
	}
	if v.TOTPKey == "" {
		v.TOTPKey = DefaultTOTPKey
	}
	if v.HostMount == "" {
		v.HostMount = DefaultHostMount
	}
	if v.HostRole == "" {
		v.HostRole = DefaultHostRole
	}
	if v.HostTTL == 0 {
		v.HostTTL = DefaultHostCertTTL
	}
	return v
}

// DefaultVaultTimeout is VaultConfig.Timeout when none is configured.
// A new session is refused within about this long when Vault does not
// answer; signing normally takes milliseconds.
const DefaultVaultTimeout = 3 * time.Second

// CertRequest names what a certificate is for.
type CertRequest struct {
	Principal string // the login on the target
	KeyID     string // names technician, affiliate and session
	// PTY adds permit-pty: for sessions whose rule allows a shell or a
	// command. File transfers get no terminal.
	PTY bool
	// PortForwarding adds permit-port-forwarding to the certificate.
	PortForwarding bool
	// ForceCommand, when set, is the force-command critical option: the
	// target's sshd runs it whatever the client asks for
	// (ForceSFTP: SFTP and nothing else).
	ForceCommand string
	// SourceAddress is the source-address critical option: the
	// addresses, comma-separated CIDRs, the certificate is accepted from.
	SourceAddress string
}

// ForceSFTP is the force-command for sessions that may only transfer
// files over SFTP: sshd serves its own SFTP server on a subsystem
// request and refuses a shell or a command ("This service allows sftp
// connections only."), without running the login's shell or rc files.
const ForceSFTP = "internal-sftp"

// extensions returns the extensions the certificate for req carries.
func (req CertRequest) extensions() []string {
	var exts []string
	if req.PTY {
		exts = append(exts, "permit-pty")
	}
	if req.PortForwarding {
		exts = append(exts, "permit-port-forwarding")
	}
	return exts
}

// criticalOptions returns the critical options the certificate for req
// carries.
func (req CertRequest) criticalOptions() map[string]string {
	opts := map[string]string{}
	if req.ForceCommand != "" {
		opts["force-command"] = req.ForceCommand
	}
	if req.SourceAddress != "" {
		opts["source-address"] = req.SourceAddress
	}
	return opts
}

// Credential is an ephemeral key pair with its Vault-signed certificate.
// The private key exists only in memory for the life of the connection.
type Credential struct {
	Certificate *ssh.Certificate
	Signer      ssh.Signer // signs with the private key, presenting the certificate
}

// allowedExtensions are the certificate extensions sekisho may ask Vault
// for: a pty for sessions whose rule allows a shell or a command, port
// forwarding only for sessions whose rule allows it. Agent and X11
// forwarding are refused by the relay, so no certificate grants them
// either; nor does any grant user rc files.
var allowedExtensions = []string{"permit-pty", "permit-port-forwarding"}

// allowedCriticalOptions are the critical options sekisho asks Vault for:
// force-command for SFTP-only sessions, and source-address always.
var allowedCriticalOptions = []string{"force-command", "source-address"}

// Issuer obtains short-lived user certificates from Vault. It logs in with
// AppRole and logs in again before its token runs out.
type Issuer struct {
	cfg    VaultConfig
	client *vault.Client
	now    func() time.Time

	onCall atomic.Pointer[func(op string, took time.Duration, err error)]

	mu       sync.Mutex
	tokenExp time.Time
	ca       ssh.PublicKey

	hosts *hostCerts
}

// NewIssuer returns an issuer for cfg. It does not contact Vault; call
// Check to log in and load the CA key.
func NewIssuer(cfg VaultConfig) (*Issuer, error) {
	cfg = cfg.WithDefaults()
	client, err := newVaultClient(cfg.Address, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	hosts, err := newHostCerts()
	if err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, client: client, now: time.Now, hosts: hosts}, nil
}

// newVaultClient returns a client of the Vault at address without a
// token: it never picks up VAULT_TOKEN, sekisho uses its AppRole only.
func newVaultClient(address string, timeout time.Duration) (*vault.Client, error) {
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, vc.Error
	}
	vc.Address = address
	vc.Timeout = timeout
	vc.MaxRetries = 1
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearToken()
	return client, nil
}

// OnCall has f told of every call the issuer makes to Vault: op is
// "login", "ca", "sign", "sign_host", "encrypt", "decrypt" or "health"
// (metrics).
func (is *Issuer) OnCall(f func(op string, took time.Duration, err error)) {
	is.onCall.Store(&f)
}

func (is *Issuer) observe(op string, began time.Time, err error) {
	if f := is.onCall.Load(); f != nil {
		(*f)(op, time.Since(began), err)
	}
}

// sourceAddress returns the source-address option for a certificate
// used from local: the configured addresses, or local.
func (is *Issuer) sourceAddress(local []netip.Addr) string {
	var list []string
	if len(is.cfg.SourceAddresses) == 0 {
		for _, a := range local {
			if a.IsValid() {
				a = a.Unmap()
				list = append(list, netip.PrefixFrom(a, a.BitLen()).String())
			}
		}
	}
	for _, p := range is.cfg.SourceAddresses {
		list = append(list, p.Masked().String())
	}
	return strings.Join(list, ",")
}

// Check logs in and fetches the CA public key, so that a misconfigured
// Vault is found at start rather than at the first connection.
func (is *Issuer) Check(ctx context.Context) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.ensureLocked(ctx)
}

// ErrVaultSealed is Reachable's error for a Vault that answers but
// cannot sign: sealed, or not initialised.
var ErrVaultSealed = errors.New("vault is sealed or not initialised")

// Reachable asks Vault's health endpoint, without a token, whether Vault
// answers and is unsealed: what a readiness check needs to know before a
// balancer sends connections that will want certificates. A standby
// answers for its active node.
func (is *Issuer) Reachable(ctx context.Context) error {
	began := time.Now()
	h, err := is.client.Sys().HealthWithContext(ctx)
	is.observe("health", began, err)
	if err != nil {
		return err
	}
	if !h.Initialized || h.Sealed {
		return ErrVaultSealed
	}
	return nil
}

// CA returns the user CA key that signs certificates, once Check succeeded.
func (is *Issuer) CA() ssh.PublicKey {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.ca
}

func (is *Issuer) ensureLocked(ctx context.Context) error {
	// Log in again when less than a third of the token's life is left.
	if is.tokenExp.IsZero() || is.now().After(is.tokenExp) {
		if err := is.loginLocked(ctx); err != nil {
			return err
		}
	}
	if is.ca == nil {
		ca, err := is.fetchCA(ctx)
		if err != nil {
			return err
		}
		is.ca = ca
	}
	return nil
}

func (is *Issuer) loginLocked(ctx context.Context) error {
	roleID, err := readSecretFile(is.cfg.RoleIDFile)
	if err != nil {
		return fmt.Errorf("vault approle role_id: %w", err)
	}
	secretID, err := readSecretFile(is.cfg.SecretIDFile)
	if err != nil {
		return fmt.Errorf("vault approle secret_id: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
	defer cancel()
	// Log in on a copy without a token, so that signing requests in
	// flight keep the current token until the new one is set.
	login, err := is.client.Clone()
	if err != nil {
		return fmt.Errorf("vault approle login: %w", err)
	}
	login.ClearToken()
	began := time.Now()
	sec, err := login.Logical().WriteWithContext(ctx, "auth/"+is.cfg.AppRoleMount+"/login", map[string]any{
		"role_id":   roleID,
		"secret_id": secretID,
	})
	is.observe("login", began, err)
	if err != nil {
		return fmt.Errorf("vault approle login: %w", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return errors.New("vault approle login: no token in response")
	}
	is.client.SetToken(sec.Auth.ClientToken)
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	if ttl <= 0 {
		ttl = time.Hour
	}
	is.tokenExp = is.now().Add(ttl * 2 / 3)
	return nil
}

func (is *Issuer) fetchCA(ctx context.Context) (ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
	defer cancel()
	began := time.Now()
	sec, err := is.client.Logical().ReadWithContext(ctx, is.cfg.Mount+"/config/ca")
	is.observe("ca", began, err)
	if err != nil {
		return nil, fmt.Errorf("vault read %s/config/ca: %w", is.cfg.Mount, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault %s/config/ca: no CA configured (run `sekisho vault setup`)", is.cfg.Mount)
	}
	pub, _ := sec.Data["public_key"].(string)
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return nil, fmt.Errorf("vault %s/config/ca: parse CA key: %w", is.cfg.Mount, err)
	}
	return ca, nil
}

// Issue makes an ed25519 key pair in memory, has Vault sign its public
// half for req, checks the certificate and returns both, all within the
// configured timeout. The private key is never written anywhere.
func (is *Issuer) Issue(ctx context.Context, req CertRequest) (*Credential, error) {
	if req.Principal == "" {
		return nil, errors.New("certificate request without principal")
	}
	if req.SourceAddress == "" {
		return nil, errors.New("certificate request without source address")
	}
	// One deadline for everything: a slow login followed by a slow
	// signature must not add up to twice the timeout.
	ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
	defer cancel()
	cred, err := is.issue(ctx, req)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Errorf("vault did not answer within %s: %w", is.cfg.Timeout, err)
	}
	return cred, err
}

func (is *Issuer) issue(ctx context.Context, req CertRequest) (*Credential, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}

	cert, err := is.signCert(ctx, "sign", "vault sign", is.cfg.Mount+"/sign/"+is.cfg.Role, userCertRequest(sshPub, req, is.cfg.TTL))
	if err != nil {
		return nil, err
	}
	if err := is.checkCertificate(cert, sshPub, is.CA(), req); err != nil {
		return nil, fmt.Errorf("vault returned an unacceptable certificate: %w", err)
	}
	certSigner, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, err
	}
	return &Credential{Certificate: cert, Signer: certSigner}, nil
}

// withToken runs call with a logged-in client. When Vault refuses the
// token (it may have been revoked), it logs in once more and retries,
// unless another call already did.
func (is *Issuer) withToken(ctx context.Context, call func(context.Context) error) error {
	is.mu.Lock()
	err := is.ensureLocked(ctx)
	token := is.client.Token()
	is.mu.Unlock()
	if err != nil {
		return err
	}
	err = call(ctx)
	if !isPermissionDenied(err) {
		return err
	}
	is.mu.Lock()
	if is.client.Token() == token {
		is.tokenExp = time.Time{}
	}
	err = is.ensureLocked(ctx)
	is.mu.Unlock()
	if err != nil {
		return err
	}
	return call(ctx)
}

// userCertRequest is the body of Vault's sign request for a user
// certificate of pub, as req asks, living ttl.
func userCertRequest(pub ssh.PublicKey, req CertRequest, ttl time.Duration) map[string]any {
	exts := map[string]any{}
	for _, e := range req.extensions() {
		exts[e] = ""
	}
	opts := map[string]any{}
	for k, v := range req.criticalOptions() {
		opts[k] = v
	}
	return map[string]any{
		"public_key":       string(ssh.MarshalAuthorizedKey(pub)),
		"cert_type":        "user",
		"valid_principals": req.Principal,
		"key_id":           req.KeyID,
		"ttl":              ttl.String(),
		"extensions":       exts,
		"critical_options": opts,
	}
}

// signCert has Vault sign at path, with a logged-in client and within
// the timeout, and parses the certificate it returns (unchecked: the
// caller checks it is what was asked for).
func (is *Issuer) signCert(ctx context.Context, op, what, path string, data map[string]any) (*ssh.Certificate, error) {
	var signed string
	err := is.withToken(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, is.cfg.Timeout)
		defer cancel()
		var serr error
		signed, serr = is.signAt(ctx, op, what, path, data)
		return serr
	})
	if err != nil {
		return nil, err
	}
	return parseCertificate(signed)
}

// signAt writes a signing request to path and returns the signed key
// Vault answers with; op names the call for OnCall, what for errors.
func (is *Issuer) signAt(ctx context.Context, op, what, path string, data map[string]any) (string, error) {
	began := time.Now()
	sec, err := is.client.Logical().WriteWithContext(ctx, path, data)
	is.observe(op, began, err)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if sec == nil || sec.Data == nil {
		return "", fmt.Errorf("%s: empty response", what)
	}
	s, _ := sec.Data["signed_key"].(string)
	if s == "" {
		return "", fmt.Errorf("%s: response has no signed_key", what)
	}
	return s, nil
}

func parseCertificate(s string) (*ssh.Certificate, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("parse signed key: %w", err)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("signed key is not a certificate")
	}
	return cert, nil
}

// checkCertificate refuses a certificate that is not exactly what was
// asked for, so that a misconfigured or compromised signing role cannot
// widen a technician's access.
func (is *Issuer) checkCertificate(cert *ssh.Certificate, pub, ca ssh.PublicKey, req CertRequest) error {
	if cert.CertType != ssh.UserCert {
		return errors.New("not a user certificate")
	}
	if !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) {
		return errors.New("certificate is for another key")
	}
	if !bytes.Equal(cert.SignatureKey.Marshal(), ca.Marshal()) {
		return errors.New("certificate is not signed by the Vault CA sekisho knows")
	}
	if _, isCert := cert.SignatureKey.(*ssh.Certificate); isCert {
		return errors.New("certificate is signed by a certificate")
	}
	if len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != req.Principal {
		return fmt.Errorf("principals %q, want exactly %q", cert.ValidPrincipals, req.Principal)
	}
	if cert.KeyId != req.KeyID {
		return fmt.Errorf("key ID %q, want %q", cert.KeyId, req.KeyID)
	}
	now := is.now()
	const skew = 2 * time.Minute
	after := time.Unix(int64(cert.ValidAfter), 0)
	before := time.Unix(int64(cert.ValidBefore), 0)
	if cert.ValidBefore == ssh.CertTimeInfinity || before.Sub(now) > is.cfg.TTL+skew {
		return fmt.Errorf("valid until %s, longer than the %s asked for", before.UTC().Format(time.RFC3339), is.cfg.TTL)
	}
	// A ValidAfter beyond int64 is in the far future, not (wrapped) in the past.
	if cert.ValidAfter > math.MaxInt64 || now.Before(after.Add(-skew)) || !now.Before(before) {
		return fmt.Errorf("not valid now (valid %s to %s)", after.UTC().Format(time.RFC3339), before.UTC().Format(time.RFC3339))
	}
	// Exactly the options asked for: a role that drops force-command or
	// source-address, or adds anything, would widen what the
	// certificate allows.
	if want := req.criticalOptions(); !maps.Equal(cert.CriticalOptions, want) {
		return fmt.Errorf("critical options %v, want exactly %v", cert.CriticalOptions, want)
	}
	for ext := range cert.Extensions {
		if !slices.Contains(req.extensions(), ext) {
			return fmt.Errorf("unexpected extension %q (run `sekisho vault setup` to update the signing role)", ext)
		}
	}
	for _, ext := range req.extensions() {
		if _, ok := cert.Extensions[ext]; !ok {
			return fmt.Errorf("extension %q missing", ext)
		}
	}
	return nil
}

func isPermissionDenied(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("no file configured")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
