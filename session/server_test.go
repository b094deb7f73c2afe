package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// These tests put a scripted x/crypto SSH server in the target's place to
// produce what a real sshd does not do on demand: never answer, refuse a
// subsystem every time, flood a technician who does not read. The
// end-to-end suite covers the real sshd.

type fakeBroker struct {
	tech *broker.Technician
	tg   *broker.Target
	ca   ssh.Signer

	decision *broker.Decision // what Authorize returns; nil: allow
	onAudit  func(broker.AuditEvent)

	mu   sync.Mutex
	ends []string
}

func (f *fakeBroker) Technician(name string) (*broker.Technician, bool) {
	return f.tech, name == f.tech.Name
}

func (f *fakeBroker) Target(name string) (*broker.Target, bool) {
	return f.tg, f.tg != nil && name == f.tg.Name
}

func (f *fakeBroker) Authorize(context.Context, string, string, string) (broker.Decision, *broker.Target, error) {
	if f.decision != nil {
		return *f.decision, f.tg, nil
	}
	return broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "test"}, f.tg, nil
}

func (f *fakeBroker) Certificate(_ context.Context, _ *broker.Technician, _ broker.Decision, _ *broker.Target, _ string, _ []netip.Addr) (*broker.Credential, error) {
	key := newSigner()
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"ops"},
		ValidBefore: uint64(time.Now().Add(5 * time.Minute).Unix()), KeyId: "test"}
	if err := cert.SignCert(rand.Reader, f.ca); err != nil {
		return nil, err
	}
	signer, err := ssh.NewCertSigner(cert, key)
	return &broker.Credential{Certificate: cert, Signer: signer}, err
}

func (f *fakeBroker) SessionStarted(context.Context, *broker.SessionRecord) error { return nil }

func (f *fakeBroker) SessionEnded(_ context.Context, _ string, end broker.SessionEnd) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends = append(f.ends, end.Reason)
	return nil
}

func (f *fakeBroker) Audit(_ context.Context, e broker.AuditEvent) {
	if f.onAudit != nil {
		f.onAudit(e)
	}
}

func (f *fakeBroker) SessionRefused(context.Context, *broker.SessionRecord, time.Time, string) error {
	return nil
}

func (f *fakeBroker) StillAllowed(string, string, string, ssh.PublicKey, broker.Decision) (bool, string) {
	return true, ""
}

func (f *fakeBroker) VerifyTOTP(context.Context, string, string, string) error { return nil }

func (f *fakeBroker) TOTPEnrolled(context.Context, string) (bool, error) { return true, nil }

func (f *fakeBroker) RecordingSealed(context.Context, broker.RecordingSeal) error { return nil }

func (f *fakeBroker) endReasons() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ends...)
}

func newSigner() ssh.Signer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := ssh.NewSignerFromKey(priv)
	return s
}

// scriptedTarget serves SSH on loopback and hands each channel request to
// onReq, which replies (or not) itself.
func scriptedTarget(t *testing.T, hostKey ssh.Signer, onReq func(ch ssh.Channel, req *ssh.Request)) string {
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	acceptChannels(ln, cfg, func(ch ssh.Channel, reqs <-chan *ssh.Request) {
		for r := range reqs {
			onReq(ch, r)
		}
	})
	return ln.Addr().String()
}

// acceptChannels serves SSH on ln with cfg, handing every session channel
// and its requests to serve on a goroutine of its own.
func acceptChannels(ln net.Listener, cfg *ssh.ServerConfig, serve func(ch ssh.Channel, reqs <-chan *ssh.Request)) {
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					go serve(ch, creqs)
				}
			}()
		}
	}()
}

type harness struct {
	srv    *Server
	broker *fakeBroker
	addr   string
	key    ssh.Signer
	recDir string
}

func newHarness(t *testing.T, onReq func(ch ssh.Channel, req *ssh.Request)) *harness {
	return newHarnessWith(t, nil, nil, onReq)
}

// newHarnessWith is newHarness with a decision of the broker's and a
// change to the server's config.
func newHarnessWith(t *testing.T, d *broker.Decision, edit func(*Config), onReq func(ch ssh.Channel, req *ssh.Request)) *harness {
	hostKey := newSigner()
	h := &harness{key: newSigner(), recDir: t.TempDir()}
	h.broker = &fakeBroker{
		tech:     &broker.Technician{Name: "li", Keys: []ssh.PublicKey{h.key.PublicKey()}},
		tg:       &broker.Target{Name: "db", Address: scriptedTarget(t, hostKey, onReq), Login: "ops", HostKeys: []ssh.PublicKey{hostKey.PublicKey()}},
		ca:       newSigner(),
		decision: d,
	}
	cfg := Config{HostKey: newSigner(), Broker: h.broker, RecordingDir: h.recDir}
	if edit != nil {
		edit(&cfg)
	}
	h.srv, h.addr = serveOnLoopback(t, cfg)
	return h
}

// serveOnLoopback runs a Server for cfg on a loopback port until the test
// ends, and returns it with its address.
func serveOnLoopback(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String()
}

func (h *harness) dial(t *testing.T) *ssh.Client {
	t.Helper()
	pinned := h.srv.cfg.HostKey.PublicKey()
	c, err := ssh.Dial("tcp", h.addr, &ssh.ClientConfig{User: "li+db", Auth: []ssh.AuthMethod{ssh.PublicKeys(h.key)},
		HostKeyCallback: ssh.FixedHostKey(pinned), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func replyAll(ch ssh.Channel, r *ssh.Request) {
	if r.WantReply {
		r.Reply(true, nil)
	}
}

func TestTechnicianLeavingEndsSessionWhenTargetHangs(t *testing.T) {
	asked := make(chan struct{}, 1)
	h := newHarness(t, func(ch ssh.Channel, r *ssh.Request) {
		if r.Type == "shell" {
			asked <- struct{}{} // and never answer
			return
		}
		replyAll(ch, r)
	})
	c := h.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	go s.Shell()
	<-asked
	left := time.Now()
	c.Close()
	waitFor(t, "the session to end after the technician left", func() bool { return len(h.broker.endReasons()) == 1 })
	took := time.Since(left)
	if got := h.broker.endReasons()[0]; got != EndClientClosed {
		t.Errorf("end reason %q, want %q", got, EndClientClosed)
	}
	hardening.Report(t, "partition", "a target that never answers the shell request, then the technician leaves: session ended within %d ms with reason %q", took.Milliseconds(), EndClientClosed)
}

func TestShutdownEndsLiveSessions(t *testing.T) {
	h := newHarness(t, replyAll)
	c := h.dial(t)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := h.broker.endReasons(); len(got) != 1 || got[0] != EndShutdown {
		t.Errorf("end reasons %q, want [%q]", got, EndShutdown)
	}
}

func TestRefusedStartsDoNotPileUpRecordings(t *testing.T) {
	h := newHarness(t, func(ch ssh.Channel, r *ssh.Request) {
		if r.WantReply {
			r.Reply(r.Type != "subsystem", nil)
		}
	})
	c := h.dial(t)
	defer c.Close()
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	for i := 0; i < 50; i++ {
		if ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(stringRequest{"sftp"})); ok || err != nil {
			t.Fatalf("attempt %d: ok=%v err=%v, want a refusal", i, ok, err)
		}
	}
	casts, _ := filepath.Glob(filepath.Join(h.recDir, "*", "*.cast"))
	if len(casts) != 1 {
		t.Fatalf("%d channel recordings for one channel, want 1", len(casts))
	}
	b, _ := os.ReadFile(casts[0])
	if !strings.Contains(string(b), `"x-start-refused","subsystem"`) {
		t.Errorf("the refusal is not recorded:\n%s", b)
	}
	hardening.Report(t, "22", "50 subsystem requests the target refuses on one channel: %d channel recording, the refusals recorded in it", len(casts))
}

func TestEnvIsRecordedBeforeItIsForwarded(t *testing.T) {
	got := make(chan string, 4)
	h := newHarness(t, func(ch ssh.Channel, r *ssh.Request) {
		switch r.Type {
		case "env":
			var e envRequest
			ssh.Unmarshal(r.Payload, &e)
			got <- e.Name + "=" + e.Value
		case "exec":
			r.Reply(true, nil)
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{0}))
			ch.Close()
			return
		}
		replyAll(ch, r)
	})
	c := h.dial(t)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Setenv("LC_PAYLOAD", "payload-bytes"); err != nil {
		t.Fatal(err)
	}
	if err := s.Setenv("LD_PRELOAD", "/tmp/x.so"); err == nil {
		t.Error("LD_PRELOAD was accepted")
	}
	if err := s.Run("true"); err != nil {
		t.Fatal(err)
	}
	if e := <-got; e != "LC_PAYLOAD=payload-bytes" {
		t.Fatalf("target got env %q", e)
	}
	select {
	case e := <-got:
		t.Fatalf("target also got %q", e)
	default:
	}
	casts, _ := filepath.Glob(filepath.Join(h.recDir, "*", "*.cast"))
	if len(casts) != 1 {
		t.Fatalf("%d recordings", len(casts))
	}
	b, _ := os.ReadFile(casts[0])
	if !strings.Contains(string(b), `"x-env","LC_PAYLOAD=payload-bytes"`) {
		t.Errorf("env not recorded:\n%s", b)
	}
	hardening.Report(t, "29", "LC_PAYLOAD and LD_PRELOAD sent: LD_PRELOAD refused and never forwarded, LC_PAYLOAD recorded in the channel recording and forwarded once")
}

// The recording fails while the technician reads nothing and the window
// to them is full: the target must still be cut off at once. (Not
// parallel: it limits the size of files this process may write.)
func TestRecordingFailureEndsSessionWhenTechnicianDoesNotRead(t *testing.T) {
	var written atomic.Int64
	targetSawClose := make(chan struct{})
	h := newHarness(t, func(ch ssh.Channel, r *ssh.Request) {
		replyAll(ch, r)
		if r.Type != "shell" {
			return
		}
		go func() {
			buf := make([]byte, 32<<10)
			for i := 0; i < 400; i++ {
				n, err := ch.Write(buf)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
		go func() {
			b := make([]byte, 1024)
			for {
				if _, err := ch.Read(b); err != nil {
					close(targetSawClose)
					return
				}
			}
		}()
	})
	c := h.dial(t)
	defer c.Close()
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	if ok, err := ch.SendRequest("shell", true, nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// Both 2 MiB windows (target to sekisho, sekisho to technician) and the
	// relay buffer are full: the relay is blocked
	// writing to a technician who does not read.
	// How much fits depends on how reads split; wait until the target's
	// writes have stalled past the technician's window.
	var last int64
	stable := 0
	waitFor(t, "the target's writes to stall", func() bool {
		n := written.Load()
		if n == last && n > 2<<20 {
			stable++
		} else {
			stable = 0
		}
		last = n
		return stable >= 40 // unchanged for 40 polls of 5 ms
	})

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	failed := time.Now()
	go ch.Write([]byte("x")) // recording this input fails
	select {
	case <-targetSawClose:
	case <-time.After(10 * time.Second):
		t.Error("the target's channel is still open 10s after the recording failed")
	}
	cutOff := time.Since(failed)
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	waitFor(t, "the session to end", func() bool { return len(h.broker.endReasons()) == 1 })
	if got := h.broker.endReasons()[0]; got != EndRecordingFailed {
		t.Errorf("end reason %q, want %q", got, EndRecordingFailed)
	}
	hardening.Report(t, "23", "a target writing to a technician who reads nothing (stalled after %.1f MiB, every window full), then the recording fails: the target cut off %.1f ms later, session ended with reason %q", float64(written.Load())/(1<<20), float64(cutOff.Microseconds())/1000, EndRecordingFailed)
}

// A session under a grant is warned before the grant ends, and ends with
// it, telling the technician why.
func TestGrantEndWarnsThenEndsTheSession(t *testing.T) {
	d := &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "needs-approval",
		Grant: &broker.Grant{RequestID: 7, Until: time.Now().Add(3 * time.Second), ApprovedBy: []string{"kenji"}}}
	h := newHarnessWith(t, d, func(c *Config) { c.GrantWarnings = []time.Duration{2 * time.Second} }, replyAll)
	c := h.dial(t)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuf
	s.Stderr = &stderr
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the warning", func() bool {
		return strings.Contains(stderr.String(), "the grant of request 7 ends in") && strings.Contains(stderr.String(), "the session will end then")
	})
	waitFor(t, "the end", func() bool {
		return strings.Contains(stderr.String(), "session ended: the grant of request 7 ended at")
	})
	waitFor(t, "the session to be registered as ended", func() bool {
		ends := h.broker.endReasons()
		return len(ends) == 1 && strings.HasPrefix(ends[0], EndRevoked+"the grant of request 7 ended")
	})
	hardening.Report(t, "11", "a session under a grant ending in 3 s: warned 2 s before, ended and registered as ended within %d ms of the grant's end, the technician told why", time.Since(d.Grant.Until).Milliseconds())
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecondFactorLoginsAreNotFailures: a key accepted with a code still
// to come is a partial success. Counting it as a failed attempt locked
// out an office whose technicians use a second factor after
// ssh.max_auth_failures_per_source logins a minute.
func TestSecondFactorLoginsAreNotFailures(t *testing.T) {
	h := newHarnessWith(t, &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "mfa", RequireMFA: true},
		func(c *Config) { c.MaxAuthFailuresPerSource = 3 }, replyAll)
	answer := ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) { return []string{"000000"}, nil })
	for i := range 6 {
		c, err := ssh.Dial("tcp", h.addr, &ssh.ClientConfig{User: "li+db", Auth: []ssh.AuthMethod{ssh.PublicKeys(h.key), answer},
			HostKeyCallback: ssh.FixedHostKey(h.srv.cfg.HostKey.PublicKey()), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("login %d with key and code (max_auth_failures_per_source 3): %v", i+1, err)
		}
		c.Close()
	}
	hardening.Report(t, "6", "6 logins with key and code from one address under max_auth_failures_per_source 3: all served, none counted as a failure")
}
