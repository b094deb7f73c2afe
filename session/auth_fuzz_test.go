package session

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// What a technician sends during authentication reaches sekisho's
// callbacks before anyone is known: the login, the public key blobs it
// offers and the answers to the verification code prompt. These targets
// call the callbacks as x/crypto's server does, with whatever a client
// could send, and check that nothing but the registered key of the named
// technician, followed by the right code where one is required, ever
// yields permissions.

// authConn is the ssh.ConnMetadata x/crypto hands the callbacks.
type authConn struct{ user string }

func (c authConn) User() string          { return c.user }
func (c authConn) SessionID() []byte     { return []byte("session-id") }
func (c authConn) ClientVersion() []byte { return []byte("SSH-2.0-fuzz") }
func (c authConn) ServerVersion() []byte { return []byte("SSH-2.0-sekisho") }
func (c authConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 5555}
}
func (c authConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 22} }

// totpBroker is fakeBroker with a second factor that checks real TOTP
// codes at a fixed time, and answers a verdict the test chooses.
type totpBroker struct {
	*fakeBroker
	verdict error // returned instead of nil for the right code, e.g. ErrThrottled
	codes   []string
}

// authSecret and authNow fix the TOTP codes the tests expect.
const authSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

var authNow = time.Unix(1_700_000_000, 0)

func totpCode(at time.Time) string {
	code, err := totp.GenerateCodeCustom(authSecret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		panic(err)
	}
	return code
}

func (b *totpBroker) VerifyTOTP(_ context.Context, _, _, code string) error {
	b.codes = append(b.codes, code)
	if code != totpCode(authNow) {
		return broker.ErrWrongCode
	}
	return b.verdict
}

// authTechKey is the technician's registered key, the same in every run
// so that the fuzz corpus keeps meaning it.
func authTechKey() ssh.Signer {
	s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		panic(err)
	}
	return s
}

// newAuthServer returns a server (not listening) whose one technician, li,
// has authTechKey and whose broker decides d (nil: allow).
func newAuthServer(t testing.TB, d *broker.Decision) (*Server, *totpBroker) {
	b := &totpBroker{fakeBroker: &fakeBroker{
		tech:     &broker.Technician{Name: "li", Keys: []ssh.PublicKey{authTechKey().PublicKey()}},
		tg:       &broker.Target{Name: "db", Address: "192.0.2.1:22", Login: "ops"},
		decision: d,
	}}
	s, err := NewServer(Config{HostKey: newSigner(), Broker: b, RecordingDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.cancel)
	return s, b
}

// authUsers are logins a client may send.
var authUsers = []string{"li+db", "li", "li%db", "li+", "+db", "li+db+x", "LI+db", "li\x00+db", "li+../db",
	"li+db@x", "aiko+db", "", strings.Repeat("l", 70000) + "+db", "\xff\xfe+db", "li+%64b"}

// authKeySeeds are public key blobs: the registered key, others of every
// type x/crypto parses, a certificate around the registered key, and the
// registered key damaged.
func authKeySeeds(t testing.TB) [][]byte {
	reg := authTechKey().PublicKey().Marshal()
	other, _ := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)).Public())
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, _ := ssh.NewPublicKey(&rk.PublicKey)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecKey, _ := ssh.NewPublicKey(&ek.PublicKey)
	// A certificate of the registered key, signed by a CA nobody trusts.
	cert := &ssh.Certificate{Key: authTechKey().PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"li"},
		ValidBefore: ssh.CertTimeInfinity, KeyId: "li"}
	if err := cert.SignCert(rand.Reader, newSigner()); err != nil {
		t.Fatal(err)
	}
	// The registered key as a security key (sk-ssh-ed25519) would carry it.
	sk := ssh.Marshal(struct {
		Name, Key, App string
	}{ssh.KeyAlgoSKED25519, string(reg[len(reg)-32:]), "ssh:"})
	return [][]byte{
		reg,
		other.Marshal(),
		rsaKey.Marshal(),
		ecKey.Marshal(),
		cert.Marshal(),
		sk,
		reg[:len(reg)-1],
		append(append([]byte(nil), reg...), 0),
		append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), make([]byte, 32)...),
		[]byte("\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x01\x03\x00\x00\x00\x01\x00"), // RSA with a 1-byte modulus
		[]byte("\xff\xff\xff\xff"),
		nil,
	}
}

// checkAuthKey offers blob as user the way x/crypto would: parsed first,
// then the PublicKeyCallback, then (for a client that can sign with the
// key, which any client can for a key of its own) the
// VerifiedPublicKeyCallback. It reports whether the key was accepted.
func checkAuthKey(t *testing.T, s *Server, user string, blob []byte) bool {
	key, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return false // x/crypto refuses the request itself: no callback runs
	}
	c := authConn{user: user}
	login, lerr := ParseLogin(user)
	named := (lerr == nil || errors.Is(lerr, ErrNoTarget)) && login.Technician == "li"
	registered := bytes.Equal(key.Marshal(), authTechKey().PublicKey().Marshal())

	perms, err := s.offeredKey(c, key)
	if (perms == nil) == (err == nil) {
		t.Fatalf("offeredKey(%q, %s) = %v, %v: want permissions or an error", user, key.Type(), perms, err)
	}
	if err != nil {
		s.sshCfg.AuthLogCallback(c, "publickey", err)
	}
	if perms != nil && !(registered && named) {
		t.Fatalf("offeredKey(%q, %s %s) accepted a key that is not li's registered one", user, key.Type(), ssh.FingerprintSHA256(key))
	}
	if perms != nil && (len(perms.ExtraData) > 0 || len(perms.CriticalOptions) > 0 || len(perms.Extensions) > 0) {
		t.Fatalf("offeredKey(%q) returned permissions %+v before the key is proven", user, perms)
	}
	if registered && named && perms == nil {
		t.Fatalf("offeredKey(%q) refused li's registered key: %v", user, err)
	}

	vperms, verr := s.verifiedKey(c, key, perms, key.Type())
	if (vperms == nil) == (verr == nil) {
		t.Fatalf("verifiedKey(%q, %s) = %v, %v: want permissions or an error", user, key.Type(), vperms, verr)
	}
	if verr != nil {
		s.sshCfg.AuthLogCallback(c, "publickey", verr)
		return false
	}
	if !registered || lerr != nil || login.Technician != "li" {
		t.Fatalf("verifiedKey(%q, %s %s) gave permissions", user, key.Type(), ssh.FingerprintSHA256(key))
	}
	id, ok := vperms.ExtraData[extraKey{}].(*identity)
	if !ok || id.tech.Name != "li" || !bytes.Equal(id.key.Marshal(), key.Marshal()) || id.command || id.target == nil {
		t.Fatalf("verifiedKey(%q) gave permissions without li's identity: %+v", user, vperms.ExtraData)
	}
	return true
}

func FuzzAuthKeys(f *testing.F) {
	for _, u := range authUsers {
		for _, k := range authKeySeeds(f) {
			f.Add(u, k)
		}
	}
	s, _ := newAuthServer(f, nil)
	f.Fuzz(func(t *testing.T, user string, blob []byte) {
		checkAuthKey(t, s, user, blob)
	})
}

// authVerdicts are what the broker may answer besides the code being
// checked: only nil lets a right code through.
var authVerdicts = []error{nil, broker.ErrThrottled, broker.ErrCodeReused, broker.ErrNotEnrolled, errors.New("store down")}

// checkSecondFactor authenticates li's registered key for li+db under a
// rule requiring a second factor, then answers the prompt with answers
// (or an error), as x/crypto would pass a client's reply on. It reports
// whether permissions were given.
func checkSecondFactor(t *testing.T, s *Server, b *totpBroker, answers []string, clientErr bool, verdict error) bool {
	c := authConn{user: "li+db"}
	key := authTechKey().PublicKey()
	perms, err := s.verifiedKey(c, key, &ssh.Permissions{}, key.Type())
	var partial *ssh.PartialSuccessError
	if perms != nil || !errors.As(err, &partial) || partial.Next.KeyboardInteractiveCallback == nil ||
		partial.Next.PublicKeyCallback != nil || partial.Next.PasswordCallback != nil || partial.Next.GSSAPIWithMICConfig != nil {
		t.Fatalf("verifiedKey under a second-factor rule = %v, %v: want only keyboard-interactive next", perms, err)
	}
	b.codes, b.verdict = nil, verdict
	asked := 0
	challenge := func(name, instruction string, questions []string, echos []bool) ([]string, error) {
		asked++
		if len(questions) != 1 || len(echos) != 1 || echos[0] {
			t.Fatalf("prompt %q %v: want one question, not echoed", questions, echos)
		}
		if clientErr {
			return nil, errors.New("client went away")
		}
		return answers, nil
	}
	perms, err = partial.Next.KeyboardInteractiveCallback(c, challenge)
	if (perms == nil) == (err == nil) {
		t.Fatalf("second factor = %v, %v: want permissions or an error", perms, err)
	}
	if err != nil {
		s.sshCfg.AuthLogCallback(c, "keyboard-interactive", err)
	}
	if asked != 1 {
		t.Fatalf("the client was asked %d times, want once", asked)
	}
	single := !clientErr && len(answers) == 1
	if !single && len(b.codes) > 0 {
		t.Fatalf("answers %q (client error %v): a code was checked", answers, clientErr)
	}
	if single && (len(b.codes) != 1 || b.codes[0] != strings.TrimSpace(answers[0])) {
		t.Fatalf("answer %q: checked %q, want the answer trimmed, once", answers[0], b.codes)
	}
	right := single && strings.TrimSpace(answers[0]) == totpCode(authNow)
	if perms != nil {
		if !right || verdict != nil {
			t.Fatalf("answers %q (client error %v, verdict %v) gave permissions", answers, clientErr, verdict)
		}
		id, ok := perms.ExtraData[extraKey{}].(*identity)
		if !ok || id.tech.Name != "li" || id.target == nil || id.target.Name != "db" {
			t.Fatalf("second factor passed without li's identity: %+v", perms.ExtraData)
		}
		return true
	}
	if right && verdict == nil {
		t.Fatalf("the right code %q was refused: %v", answers[0], err)
	}
	return false
}

// authAnswerSeeds are answers to the code prompt, "\x00" between answers.
func authAnswerSeeds() []string {
	now := totpCode(authNow)
	return []string{now, " " + now + "\n", now + "\x00" + now, "", "\x00", now[:5], now + "0",
		totpCode(authNow.Add(-time.Hour)), "000000", "abcdef", "１２３４５６", "\u00a0" + now,
		strings.Repeat("9", 100000), "\xff\xfe\xfd", "123456\r\n", now + "\x00"}
}

func FuzzSecondFactor(f *testing.F) {
	for _, a := range authAnswerSeeds() {
		for v := range authVerdicts {
			f.Add(a, false, uint8(v))
		}
		f.Add(a, true, uint8(0))
	}
	s, b := newAuthServer(f, &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "mfa", RequireMFA: true})
	f.Fuzz(func(t *testing.T, answers string, clientErr bool, verdict uint8) {
		checkSecondFactor(t, s, b, strings.Split(answers, "\x00"), clientErr, authVerdicts[int(verdict)%len(authVerdicts)])
	})
}

// TestAuthFuzzSeeds runs the seed inputs of FuzzAuthKeys and
// FuzzSecondFactor, with no answer at all besides, and states the result.
func TestAuthFuzzSeeds(t *testing.T) {
	s, _ := newAuthServer(t, nil)
	keys, accepted := 0, 0
	for _, u := range authUsers {
		for _, k := range authKeySeeds(t) {
			keys++
			if checkAuthKey(t, s, u, k) {
				accepted++
			}
		}
	}
	if accepted != 2 {
		t.Errorf("%d key seeds accepted, want 2 (li+db and li%%db with li's key)", accepted)
	}
	hardening.Report(t, "7", "FuzzAuthKeys: %d seed inputs (%d logins × %d key blobs: ed25519, RSA, ECDSA, sk-ed25519, a certificate of the registered key, truncated, trailing byte, garbage) pass: %d accepted, li+db and li%%db with li's registered key",
		keys, len(authUsers), keys/len(authUsers), accepted)

	ms, mb := newAuthServer(t, &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "mfa", RequireMFA: true})
	answers, passed := 0, 0
	for _, a := range authAnswerSeeds() {
		for _, v := range authVerdicts {
			answers++
			if checkSecondFactor(t, ms, mb, strings.Split(a, "\x00"), false, v) {
				passed++
			}
		}
		answers++
		if checkSecondFactor(t, ms, mb, strings.Split(a, "\x00"), true, nil) {
			passed++
		}
	}
	for _, none := range [][]string{nil, {}} {
		answers++
		if checkSecondFactor(t, ms, mb, none, false, nil) {
			passed++
		}
	}
	if passed != 3 {
		t.Errorf("%d answer seeds passed the second factor, want 3 (the code alone, with spaces, with a no-break space)", passed)
	}
	hardening.Report(t, "7", "FuzzSecondFactor: %d seed inputs (keyboard-interactive answers: none, several, empty, short, long, wrong, non-ASCII digits, client errors; broker verdicts throttled, reused, not enrolled, store down) pass: %d give permissions, the right code alone (bare, with spaces, with a no-break space) and the broker saying yes",
		answers, passed)
}
