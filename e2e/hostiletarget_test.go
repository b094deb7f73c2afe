package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// hostileTarget is a fake target sshd, written with x/crypto, for the
// faults a real sshd cannot be made to produce: malformed requests,
// unsolicited replies, channels opened towards sekisho. It accepts any
// client key (sekisho presents its Vault certificate) and runs, for each
// exec request, the behaviour the command names.
type hostileTarget struct {
	ln      net.Listener
	hostKey ssh.Signer
	// exec runs a command on an accepted session channel; the request
	// was answered already.
	exec func(sc *ssh.ServerConn, ch ssh.Channel, req *ssh.Request, command string)
	// handshakes counts connections that reached the SSH handshake.
	handshakes atomic.Int64
}

// startHostileTarget listens on loopback with hostKey as its host key.
func startHostileTarget(t *testing.T, hostKey ssh.Signer, exec func(sc *ssh.ServerConn, ch ssh.Channel, req *ssh.Request, command string)) *hostileTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileTarget{ln: ln, hostKey: hostKey, exec: exec}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil },
		ServerVersion:     "SSH-2.0-OpenSSH_9.6",
	}
	cfg.AddHostKey(hostKey)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				h.handshakes.Add(1)
				nc.SetDeadline(time.Now().Add(30 * time.Second))
				sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				nc.SetDeadline(time.Time{})
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					if nch.ChannelType() != "session" {
						nch.Reject(ssh.UnknownChannelType, "no")
						continue
					}
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						for req := range creqs {
							if req.Type != "exec" {
								req.Reply(req.Type == "pty-req" || req.Type == "env", nil)
								continue
							}
							var cmd struct{ Command string }
							ssh.Unmarshal(req.Payload, &cmd)
							req.Reply(true, nil)
							wg.Add(1)
							go func() {
								defer wg.Done()
								h.exec(sc, ch, req, cmd.Command)
							}()
						}
					}()
				}
			}()
		}
	}()
	return h
}

func (h *hostileTarget) addr() string { return h.ln.Addr().String() }

// pinHostile rewrites the config so that db-jp-01 is the hostile target:
// its address, and its host key pinned as pinned (an authorized_keys
// line).
func pinHostile(t testing.TB, cfg, addr, pinned string) string {
	return asTarget(t, "db-jp-01", addr, pinned)(cfg)
}

func authorizedLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func variantPID(t testing.TB, v *variant) int {
	t.Helper()
	b, err := os.ReadFile(v.pidPath())
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// exitWith sends a well-formed exit status and closes the channel.
func exitWith(ch ssh.Channel, status uint32) {
	ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	ch.CloseWrite()
	ch.Close()
}

// TestHostileTargetMuxAbuse: a compromised target (its host key pinned,
// so sekisho connects to it) abuses the SSH connection multiplexer of
// sekisho's target leg while a technician's session runs on it:
//
//   - an exit-status whose payload is cut short, then the channel closed;
//   - thousands of unsolicited channel request replies, global requests
//     and channel requests;
//   - 20,000 channels opened towards sekisho (forwarded-tcpip, x11,
//     auth-agent@openssh.com, session), which sekisho must refuse.
//
// The technician's ssh ends with a defined status, sekisho refuses every
// channel, its goroutines come back to where they were and its memory
// stays flat, and a real OpenSSH session through the same sekisho works
// during the abuse.
func TestHostileTargetMuxAbuse(t *testing.T) {
	t.Parallel()
	hostKey := newSigner(t)

	const flood = 20000
	var (
		opened, refused    atomic.Int64
		unsolicited, globs atomic.Int64
		// flooding is closed when the channel flood is halfway; one of
		// its openers then waits for served, so that the real session
		// runs while the flood does.
		flooding, served = make(chan struct{}), make(chan struct{})
	)
	target := startHostileTarget(t, hostKey, func(sc *ssh.ServerConn, ch ssh.Channel, req *ssh.Request, command string) {
		switch command {
		case "truncated-exit-status":
			fmt.Fprintln(ch, "before the truncated exit status")
			ch.SendRequest("exit-status", false, []byte{0, 0})
			ch.CloseWrite()
			ch.Close()
		case "spam":
			// Replies to a request sekisho made long ago, over and over.
			for i := range 5000 {
				req.Reply(i%2 == 0, nil)
				unsolicited.Add(1)
			}
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 1000 {
						sc.SendRequest(fmt.Sprintf("spam-%d@example.com", w), i%2 == 0, make([]byte, 512))
						globs.Add(1)
					}
				}()
			}
			// Requests on the session channel, relayed to the technician.
			for i := range 1000 {
				ch.SendRequest("keepalive@openssh.com", i%10 == 0, nil)
			}
			wg.Wait()
			fmt.Fprintln(ch, "survived the spam")
			exitWith(ch, 0)
		case "open-channels":
			var wg sync.WaitGroup
			kinds := []string{"forwarded-tcpip", "x11", "auth-agent@openssh.com", "session"}
			for w, kind := range kinds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range flood / len(kinds) {
						var payload []byte
						switch kind {
						case "forwarded-tcpip":
							payload = ssh.Marshal(struct {
								Addr       string
								Port       uint32
								OriginAddr string
								OriginPort uint32
							}{"127.0.0.1", 8080, "10.0.0.1", uint32(40000 + i%1000)})
						case "x11":
							payload = ssh.Marshal(struct {
								Addr string
								Port uint32
							}{"127.0.0.1", 6000})
						}
						c, reqs, err := sc.OpenChannel(kind, payload)
						if err == nil {
							opened.Add(1)
							go ssh.DiscardRequests(reqs)
							c.Close()
						} else {
							refused.Add(1)
						}
						if w == 0 && i == flood/len(kinds)/2 {
							close(flooding)
							<-served
						}
					}
				}()
			}
			wg.Wait()
			fmt.Fprintf(ch, "opened %d channels\n", flood)
			exitWith(ch, 0)
		default:
			fmt.Fprintln(ch, "unknown behaviour", command)
			exitWith(ch, 2)
		}
	})

	metrics := freePort(t)
	v := startVariant(t, func(cfg string) string {
		return pinHostile(t, cfg, target.addr(), authorizedLine(hostKey.PublicKey())) + "\nmetrics:\n  listen: 127.0.0.1:" + metrics + "\n"
	})
	maddr := "127.0.0.1:" + metrics
	pid := variantPID(t, v)
	// A first session settles the server's own goroutines and memory.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo", "warm"), nil); r.code != 0 {
		t.Fatalf("first session: exit %d, %q", r.code, r.stderr)
	}
	var before int
	waitUntil(t, 10*time.Second, "the first session's goroutines to settle", func() bool {
		a := goroutines(t, maddr)
		before = goroutines(t, maddr)
		return a == before
	})
	rssBefore := vmRSS(t, pid)
	flat := func(t *testing.T, what string) int {
		t.Helper()
		var now int
		deadline := time.Now().Add(15 * time.Second)
		for {
			if now = goroutines(t, maddr); now <= before+10 {
				return now
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %d goroutines, %d before", what, now, before)
			}
			time.Sleep(50 * time.Millisecond) // polling the metrics for a condition, with a deadline
		}
	}
	alive := func(t *testing.T, what string) {
		t.Helper()
		r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "echo", "served"), nil)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "served" {
			t.Fatalf("a real session %s: exit %d, stdout %q, stderr %q", what, r.code, r.stdout, r.stderr)
		}
	}

	t.Run("truncated_exit_status", func(t *testing.T) {
		start := time.Now()
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "truncated-exit-status"), nil)
		took := time.Since(start)
		if !strings.Contains(r.stdout, "before the truncated exit status") {
			t.Fatalf("the output before the exit status is lost: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if r.code == 0 {
			t.Fatalf("ssh exited 0 although the target never sent a valid exit status; stderr %q", r.stderr)
		}
		// The technician's client was not handed the malformed request
		// (OpenSSH drops the connection on one); the recording says what
		// the target sent.
		if strings.Contains(r.stderr, "incomplete message") {
			t.Errorf("the malformed exit status reached the technician's client: %q", r.stderr)
		}
		s := variantSession(t, v, "before the truncated exit status")
		if ev, err := v.cli(t, "replay", "--events", s.ID); err != nil || !strings.Contains(ev, "x-malformed-exit-status") {
			t.Errorf("the recording does not name the malformed exit status (%v):\n%s", err, ev)
		}
		alive(t, "after the truncated exit status")
		n := flat(t, "the truncated exit status")
		hardening.Report(t, "22", "target sends a 2-byte exit-status and closes: not relayed, recorded as malformed; the technician gets the output and ssh exits %d in %.1f s; session ended %q; goroutines %d → %d; next login ok",
			r.code, took.Seconds(), s.EndReason, before, n)
	})

	t.Run("spam", func(t *testing.T) {
		start := time.Now()
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "spam"), nil)
		took := time.Since(start)
		if r.code != 0 || !strings.Contains(r.stdout, "survived the spam") {
			t.Fatalf("session under spam: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		alive(t, "after the spam")
		n := flat(t, "the spam")
		hardening.Report(t, "22", "target sends %d unsolicited channel request replies, %d global requests and 1000 channel requests: the session finishes normally in %.1f s; goroutines %d → %d; next login ok",
			unsolicited.Load(), globs.Load(), took.Seconds(), before, n)
	})

	t.Run("open_channels", func(t *testing.T) {
		start := time.Now()
		cmd := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "open-channels")
		stdout, stderr := &syncBuffer{}, &syncBuffer{}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-flooding:
		case err := <-exited:
			t.Fatalf("the session ended before the flood was halfway: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
		case <-time.After(60 * time.Second):
			t.Fatal("the flood did not get halfway in 60 s")
		}
		during := goroutines(t, maddr)
		alive(t, "during the channel flood")
		close(served)
		select {
		case err := <-exited:
			if err != nil || !strings.Contains(stdout.String(), "opened") {
				t.Fatalf("session under the channel flood: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
			}
		case <-time.After(90 * time.Second):
			t.Fatal("the channel flood session did not end in 90 s")
		}
		took := time.Since(start)
		if opened.Load() != 0 {
			t.Fatalf("sekisho accepted %d of the %d channels the target opened", opened.Load(), flood)
		}
		n := flat(t, "the channel flood")
		rssAfter := vmRSS(t, pid)
		if grew := rssAfter - rssBefore; grew > 64<<20 {
			t.Fatalf("RSS grew by %d MiB over the abuse", grew>>20)
		}
		hardening.Report(t, "22", "target opens %d channels (forwarded-tcpip, x11, auth-agent, session) in %.1f s: %d refused, 0 accepted; goroutines %d before, %d during, %d after; RSS %d → %d MiB; a real OpenSSH session served during the flood",
			flood, took.Seconds(), refused.Load(), before, during, n, rssBefore>>20, rssAfter>>20)
	})
}
