package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// x11Request is the payload of an "x11-req" channel request (RFC 4254
// 6.3.1).
type x11Request struct {
	SingleConnection bool
	AuthProtocol     string
	AuthCookie       string
	ScreenNumber     uint32
}

var x11Payload = ssh.Marshal(x11Request{AuthProtocol: "MIT-MAGIC-COOKIE-1", AuthCookie: "0123456789abcdef0123456789abcdef"})

// allowX11 turns X11 forwarding on in an own target's sshd and makes it
// log every channel request (LogLevel DEBUG1), then waits until the
// restarted sshd answers: sshd re-executes itself on SIGHUP.
func allowX11(t *testing.T, tg *ownTarget) {
	t.Helper()
	dir := filepath.Dir(tg.log)
	cfgPath := filepath.Join(dir, "sshd_config")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "X11Forwarding no\n", "X11Forwarding yes\nX11UseLocalhost yes\nXAuthLocation /usr/bin/xauth\n", 1)
	cfg = strings.Replace(cfg, "LogLevel VERBOSE\n", "LogLevel DEBUG1\n", 1)
	if !strings.Contains(cfg, "X11Forwarding yes") || !strings.Contains(cfg, "LogLevel DEBUG1") {
		t.Fatalf("own target's sshd_config has no X11Forwarding or LogLevel line:\n%s", b)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(filepath.Join(dir, "sshd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the own target's sshd to restart with X11 forwarding", func() bool {
		return strings.Count(tg.logText(t), "Server listening on 127.0.0.1") >= 2
	})
}

// ownUserCA is a user CA of the test's own, for logging in to an own
// target directly, bypassing sekisho.
type ownUserCA struct {
	signer ssh.Signer
}

func newOwnUserCA(t *testing.T) *ownUserCA {
	t.Helper()
	return &ownUserCA{signer: newSigner(t)}
}

// certSigner returns a fresh key with a certificate for principal.
func (ca *ownUserCA) certSigner(t *testing.T, principal string) ssh.Signer {
	t.Helper()
	key := newSigner(t)
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, KeyId: "x11-control", ValidPrincipals: []string{principal},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(10 * time.Minute).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-X11-forwarding": "", "permit-pty": ""}}}
	if err := cert.SignCert(rand.Reader, ca.signer); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// x11Session opens a session on client, asks for X11 forwarding and
// returns the answer and what the command printed.
func x11Session(t *testing.T, client *ssh.Client, command string) (bool, string) {
	t.Helper()
	s, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ok, err := s.SendRequest("x11-req", true, x11Payload)
	if err != nil {
		t.Fatalf("x11-req: %v", err)
	}
	out, err := s.Output(command)
	if err != nil {
		t.Fatalf("%s after x11-req: %v", command, err)
	}
	return ok, string(out)
}

// X11 forwarding towards a target whose sshd allows it: the target itself
// accepts x11-req when asked directly (the control), but through sekisho
// ssh -X, ssh -Y and an x/crypto client's x11-req are refused at sekisho
// and audited, and the target's log (every channel request, DEBUG1) shows
// no x11-req from any of them. (Were one forwarded, the target would
// still refuse it: Vault's certificates carry no permit-X11-forwarding.
// The log check is what tells sekisho's refusal from that one.)
func TestX11RefusedAtSekisho(t *testing.T) {
	t.Parallel()
	ca := newOwnUserCA(t)
	vaultCA, err := os.ReadFile(sharedUserCA())
	if err != nil {
		t.Fatal(err)
	}
	cas := filepath.Join(t.TempDir(), "user_cas.pub")
	os.WriteFile(cas, append(append(vaultCA, '\n'), ssh.MarshalAuthorizedKey(ca.signer.PublicKey())...), 0o600)
	tg := startOwnTarget(t, cas, "ed25519")
	allowX11(t, tg)
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(tg.hostKey))
	if err != nil {
		t.Fatal(err)
	}
	login := targetNamed(t, "web-sg-01").Login

	// The control: asked directly, the target sets X11 forwarding up.
	direct, err := ssh.Dial("tcp", tg.addr, &ssh.ClientConfig{User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(ca.certSigner(t, login))},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 15 * time.Second})
	if err != nil {
		t.Fatalf("direct login to the own target: %v", err)
	}
	ok, out := x11Session(t, direct, "echo display=[$DISPLAY]")
	direct.Close()
	if !ok || !strings.Contains(out, "display=[localhost:") {
		t.Fatalf("the control failed: the target answered x11-req %v and set %q; it must allow X11 for this test to mean anything", ok, out)
	}
	if !strings.Contains(tg.logText(t), "request x11-req") {
		t.Fatalf("the target does not log x11-req requests; the log cannot show their absence:\n%s", tail(tg.logText(t), 30))
	}

	v := startVariant(t, tg.asWebTarget(t))
	mark := tg.logSize(t)

	// OpenSSH clients, with a DISPLAY to forward (nothing listens there:
	// nothing should ever connect to it).
	xauthority := filepath.Join(t.TempDir(), "Xauthority")
	var told []string
	for _, flag := range []string{"-X", "-Y"} {
		cmd := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo display=[$DISPLAY]")
		cmd.Args = append(cmd.Args[:1], append([]string{flag, "-o", "LogLevel=VERBOSE"}, cmd.Args[1:]...)...)
		cmd.Env = append(os.Environ(), "DISPLAY=127.0.0.1:79", "XAUTHORITY="+xauthority)
		r := run(t, cmd, nil)
		if r.code != 0 || r.stdout != "display=[]\n" {
			t.Fatalf("ssh %s: exit %d, stdout %q, stderr %q", flag, r.code, r.stdout, r.stderr)
		}
		switch {
		case strings.Contains(r.stderr, "X11 forwarding request failed"):
			told = append(told, flag+": X11 forwarding request failed")
		case strings.Contains(r.stderr, "Requesting X11 forwarding"):
			t.Fatalf("ssh %s asked for X11 forwarding and was not told it failed: %q", flag, r.stderr)
		default:
			told = append(told, flag+": no x11-req sent (the client has no X server to make an untrusted cookie)")
		}
	}

	// An x/crypto client's x11-req gets a false reply; the session goes on.
	client, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, &ssh.ClientConfig{User: "aiko+web-sg-01",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))}, HostKeyCallback: ssh.FixedHostKey(variantHostKey(t, v))})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ok, out = x11Session(t, client, "echo display=[$DISPLAY]")
	if ok || out != "display=[]\n" {
		t.Fatalf("x11-req through sekisho: reply %v, the target set %q", ok, out)
	}
	client.Close()

	var audited int
	waitUntil(t, 30*time.Second, "the x11-req refusals in the audit log", func() bool {
		audited = 0
		for _, e := range v.audit(t) {
			if e["kind"] == "refused" && e["detail"] == "x11-req refused" && e["technician"] == "aiko" && e["session"] != "" {
				audited++
			}
		}
		return audited >= len(told)
	})
	since := tg.logSince(t, mark)
	if n := strings.Count(since, "request exec"); n < 3 {
		t.Fatalf("the target logged %d exec requests through sekisho, want 3:\n%s", n, tail(since, 40))
	}
	// (The test's name is in the log's paths: look for requests only.)
	if strings.Contains(since, "x11-req") || strings.Contains(since, "X11 forwarding") || strings.Contains(since, "x11_") {
		t.Fatalf("an X11 request reached the target through sekisho:\n%s", grepLines(since, "x11-req")+grepLines(since, "X11 forwarding")+grepLines(since, "x11_"))
	}
	hardening.Report(t, "16", "a target whose sshd allows X11 (the control: asked directly it sets DISPLAY): through sekisho an x/crypto x11-req gets a false reply, %s; %d refusals audited; 3 commands ran with no DISPLAY and the target's DEBUG log shows their exec requests and no x11-req",
		strings.Join(told, ", "), audited)
}

// A target that opens an "x11" channel towards sekisho (as a compromised
// one might, unasked) is refused, and nothing reaches the technician's
// client, which would accept one.
func TestX11ChannelFromTargetRefused(t *testing.T) {
	t.Parallel()
	hostKey := newSigner(t)
	h := startHostileTarget(t, hostKey, func(sc *ssh.ServerConn, ch ssh.Channel, req *ssh.Request, command string) {
		_, _, err := sc.OpenChannel("x11", ssh.Marshal(struct {
			Addr string
			Port uint32
		}{"127.0.0.1", 6010}))
		fmt.Fprintf(ch, "x11 channel: %v\n", err)
		exitWith(ch, 0)
	})
	v := startVariant(t, func(cfg string) string { return pinHostile(t, cfg, h.addr(), authorizedLine(hostKey.PublicKey())) })
	client, err := ssh.Dial("tcp", "127.0.0.1:"+v.port, &ssh.ClientConfig{User: "aiko+db-jp-01",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(techSigner(t, "aiko"))}, HostKeyCallback: ssh.FixedHostKey(variantHostKey(t, v))})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	x11 := client.HandleChannelOpen("x11")
	out, err := runOn(client, "open-x11")
	if err != nil || !strings.Contains(out, "x11 channel: ssh: rejected") {
		t.Fatalf("the target's x11 channel: %q, %v", out, err)
	}
	select {
	case nch := <-x11:
		nch.Reject(ssh.Prohibited, "test")
		t.Fatal("the target's x11 channel reached the technician's client")
	default:
	}
	waitUntil(t, 10*time.Second, "the target's x11 channel in the audit log", func() bool {
		for _, e := range v.audit(t) {
			if e["kind"] == "refused" && strings.Contains(e["detail"], `channel "x11" refused: opened by the target`) {
				return true
			}
		}
		return false
	})
	hardening.Report(t, "16", "a target opening an x11 channel towards sekisho during a command: refused (%s) and audited; the technician's client, listening for x11 channels, got none", strings.TrimSpace(strings.TrimPrefix(out, "x11 channel: ")))
}
