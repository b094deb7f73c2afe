package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// hugeRSAPublicKey is an RSA public key with a random modulus of exactly
// bits bits, for which nobody holds the private key: what an attacker
// offers costs it nothing to make.
func hugeRSAPublicKey(bits int) *rsa.PublicKey {
	b := make([]byte, bits/8)
	rand.Read(b)
	b[0] |= 0x80
	b[len(b)-1] |= 1
	// The largest exponent x/crypto accepts (24 bits) makes verification
	// slowest.
	return &rsa.PublicKey{N: new(big.Int).SetBytes(b), E: 1<<24 - 1}
}

// garbageRSA is a crypto.Signer for a key nobody holds: its signatures
// are random bytes of the modulus' length.
type garbageRSA struct{ pub *rsa.PublicKey }

func (g garbageRSA) Public() crypto.PublicKey { return g.pub }

func (g garbageRSA) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	sig := make([]byte, g.pub.Size())
	rand.Read(sig[1:])
	return sig, nil
}

// unaskedKey is the public key of a modified client that signs without
// asking first whether the server would take the key: the first two
// times it is marshalled (for the question, and to match the answer) it
// is a key the server takes, after that (in the signed request) it is
// the huge one. A server that
// verifies signatures of keys it refuses pays for the huge key.
type unaskedKey struct {
	asked, signed []byte
	n             int
}

func (k *unaskedKey) Type() string { return ssh.KeyAlgoRSA }
func (k *unaskedKey) Marshal() []byte {
	k.n++
	if k.n <= 2 {
		return k.asked
	}
	return k.signed
}
func (k *unaskedKey) Verify([]byte, *ssh.Signature) error { return errors.New("not a real key") }

// unaskedSigner signs with garbage for an unaskedKey.
type unaskedSigner struct {
	key  *unaskedKey
	size int
}

func (s unaskedSigner) PublicKey() ssh.PublicKey { return s.key }
func (s unaskedSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(r, data, ssh.KeyAlgoRSASHA512)
}
func (s unaskedSigner) SignWithAlgorithm(_ io.Reader, _ []byte, algo string) (*ssh.Signature, error) {
	blob := make([]byte, s.size)
	rand.Read(blob[1:])
	return &ssh.Signature{Format: algo, Blob: blob}, nil
}

// cpuTime is the user and system CPU time a process has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func dialWith(v *variant, login string, signer ssh.Signer) error {
	cfg := &ssh.ClientConfig{User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }, Timeout: 30 * time.Second}
	c, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, cfg)
	if err == nil {
		c.Close()
		return errors.New("logged in")
	}
	return err
}

// TestHugeTechnicianRSAKeysRefused: a technician's client offers RSA keys
// with huge moduli. x/crypto v0.59 refuses to parse moduli over 16,384
// bits and exponents over 24 bits; a 16,384-bit key parses. Offered the
// usual way (asked about first), it is refused before any signature is
// checked, and audited with its fingerprint; one over the cap is refused
// unparsed. A modified client that signs with garbage without asking
// makes sekisho check one 16,384-bit signature before the connection is
// dropped: the CPU that costs is measured against a 2,048-bit key. The
// process serves on.
func TestHugeTechnicianRSAKeysRefused(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	pid := variantPID(t, v)

	// Offered the usual way, as aiko (a technician whose keys are
	// configured): refused without a signature check, audited.
	for _, tc := range []struct {
		bits  int
		login string
	}{{16384, "aiko+db-jp-01"}, {32768, "aiko+web-sg-01"}} {
		signer, err := ssh.NewSignerFromSigner(garbageRSA{hugeRSAPublicKey(tc.bits)})
		if err != nil {
			t.Fatal(err)
		}
		cpu0, start := cpuTime(t, pid), time.Now()
		err = dialWith(v, tc.login, signer)
		took, cpu := time.Since(start), cpuTime(t, pid)-cpu0
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("%d-bit key: %v", tc.bits, err)
		}
		var row map[string]string
		waitUntil(t, 10*time.Second, "the refusal of the "+strconv.Itoa(tc.bits)+"-bit key in the audit log", func() bool {
			for _, e := range v.audit(t) {
				if e["kind"] == "auth.failed" && strings.Contains(e["detail"], `"login":"`+tc.login+`"`) {
					row = e
					return true
				}
			}
			return false
		})
		if tc.bits <= 16384 && !strings.Contains(row["detail"], ssh.FingerprintSHA256(signer.PublicKey())) {
			t.Errorf("the audit does not name the %d-bit key: %s", tc.bits, row["detail"])
		}
		hardening.Report(t, "23", "technician offers a %d-bit RSA key: refused in %.0f ms (sekisho CPU %d ms), audited; no signature checked",
			tc.bits, took.Seconds()*1000, cpu.Milliseconds())
	}

	// Signed without asking, with garbage: sekisho checks the signature,
	// then drops the connection.
	aiko := techSigner(t, "aiko").PublicKey().Marshal()
	const attempts = 20
	perAttempt := map[int]time.Duration{}
	for _, bits := range []int{2048, 16384} {
		pub, err := ssh.NewPublicKey(hugeRSAPublicKey(bits))
		if err != nil {
			t.Fatal(err)
		}
		cpu0 := cpuTime(t, pid)
		for range attempts {
			signer := unaskedSigner{key: &unaskedKey{asked: aiko, signed: pub.Marshal()}, size: bits / 8}
			err := dialWith(v, "aiko+db-jp-01", signer)
			if err == nil || strings.Contains(err.Error(), "unable to authenticate") {
				// Refused as an ordinary wrong key: the signed request
				// never reached the signature check.
				t.Fatalf("%d-bit key signed without asking: %v", bits, err)
			}
		}
		perAttempt[bits] = (cpuTime(t, pid) - cpu0) / attempts
	}
	// Each is a failed attempt like any other: logged, and counted
	// towards ssh.max_auth_failures_per_source.
	// (The client sees the connection drop before sekisho logs it.)
	waitUntil(t, 10*time.Second, "every garbage-signed attempt logged as a failed authentication", func() bool {
		return strings.Count(v.out.String(), "signed without asking; the signature did not verify") == 2*attempts
	})
	if perAttempt[16384] > 100*time.Millisecond {
		t.Errorf("a 16,384-bit signature check costs sekisho %s of CPU", perAttempt[16384])
	}
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "alive"), nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "alive" {
		t.Fatalf("after the huge keys: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	hardening.Report(t, "23", "a modified client signing with garbage for a key it never asked about: %d connections each with a 16384-bit key cost sekisho %.1f ms CPU apiece (2048-bit: %.1f ms); each dropped; sekisho serves on",
		attempts, float64(perAttempt[16384].Microseconds())/1000, float64(perAttempt[2048].Microseconds())/1000)
}

// TestHostileTargetHugeRSAHostKeyRefused: a target presenting a huge RSA
// host key (which is not the pinned one) is refused during the handshake,
// before any certificate is offered, for little CPU; the refusal is
// audited and sekisho serves on.
func TestHostileTargetHugeRSAHostKeyRefused(t *testing.T) {
	t.Parallel()
	pinned, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pinnedPub, _ := ssh.NewPublicKey(&pinned.PublicKey)
	for _, bits := range []int{16384, 32768} {
		t.Run(strconv.Itoa(bits), func(t *testing.T) {
			hostKey, err := ssh.NewSignerFromSigner(garbageRSA{hugeRSAPublicKey(bits)})
			if err != nil {
				t.Fatal(err)
			}
			target := startHostileTarget(t, hostKey, func(_ *ssh.ServerConn, ch ssh.Channel, _ *ssh.Request, _ string) {
				exitWith(ch, 0)
			})
			v := startVariant(t, func(cfg string) string { return pinHostile(t, cfg, target.addr(), authorizedLine(pinnedPub)) })
			pid := variantPID(t, v)
			const attempts = 5
			cpu0, start := cpuTime(t, pid), time.Now()
			for range attempts {
				r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo", "reached"), nil)
				if r.code != 255 || !strings.Contains(r.stderr, "cannot connect to db-jp-01") || strings.Contains(r.stdout, "reached") {
					t.Fatalf("through a target with a %d-bit host key: exit %d, stdout %q, stderr %q", bits, r.code, r.stdout, r.stderr)
				}
			}
			took, cpu := time.Since(start)/attempts, (cpuTime(t, pid)-cpu0)/attempts
			if target.handshakes.Load() < attempts {
				t.Fatalf("sekisho reached the fake target %d times, want %d", target.handshakes.Load(), attempts)
			}
			detail := ""
			for _, e := range v.audit(t) {
				if e["kind"] == "refused" && e["target"] == "db-jp-01" && strings.Contains(e["detail"], "target connection failed") {
					detail = e["detail"]
				}
			}
			if detail == "" {
				t.Fatal("the refused target connection is not audited")
			}
			if cpu > 200*time.Millisecond {
				t.Errorf("a %d-bit host key costs sekisho %s of CPU per attempt", bits, cpu)
			}
			r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "alive"), nil)
			if r.code != 0 || strings.TrimSpace(r.stdout) != "alive" {
				t.Fatalf("after the huge host key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			why := detail[strings.LastIndex(detail, ": ")+2:]
			hardening.Report(t, "23", "target presents a %d-bit RSA host key: refused (%s) in %.0f ms per attempt, sekisho CPU %.0f ms per attempt; audited; sekisho serves on",
				bits, why, took.Seconds()*1000, float64(cpu.Microseconds())/1000)
		})
	}
}
