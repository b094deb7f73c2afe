package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/sekisho/sekisho/internal/hardening"
)

// silentHolder opens connections from one address to sekisho and says
// nothing on them; each one sekisho closes is dialled again (at most
// redialRate a second, at most maxDials in all), so that the address
// goes on trying to hold all of them until stop.
type silentHolder struct {
	dials, closed, failed atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

const (
	redialRate = 2000
	maxDials   = 40000
)

func holdSilently(t *testing.T, from, addr string, n int) *silentHolder {
	t.Helper()
	h := &silentHolder{stop: make(chan struct{})}
	tokens := make(chan struct{}, redialRate/1000) // no bursts beyond the rate
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				for range redialRate / 1000 {
					select {
					case tokens <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	for i := range n {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for first := true; h.dials.Add(1) <= maxDials; first = false {
				if !first {
					select {
					case <-tokens:
					case <-h.stop:
						return
					}
				}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					h.failed.Add(1)
					if i == 0 {
						t.Logf("a silent connection from %s not dialled: %v", from, err)
					}
					continue
				}
				// Nothing is sent; the banner and whatever follows are
				// read until sekisho closes the connection.
				done := make(chan struct{})
				go func() { io.Copy(io.Discard, c); close(done) }()
				select {
				case <-done:
					c.Close()
					h.closed.Add(1)
				case <-h.stop:
					c.Close()
					<-done
					return
				}
			}
		}()
	}
	t.Cleanup(h.end)
	return h
}

// end stops dialling and closes every connection still held.
func (h *silentHolder) end() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

// fromAddress makes cmd (an ssh command line) connect from addr, with
// opts before the others (ssh takes an option's first value).
func fromAddress(cmd *exec.Cmd, addr string, opts ...string) *exec.Cmd {
	cmd.Args = append(cmd.Args[:1], append(append([]string{"-o", "BindAddress=" + addr}, opts...), cmd.Args[1:]...)...)
	return cmd
}

var heldBackCount = regexp.MustCompile(`(\d+) (?:refused or closed|more connections) from 127\.0\.3\.1 `)

// TestNATAddressHoldingSilentConnectionsDoesNotLockOutItsOffice: an
// office behind one NAT address shares it with whoever holds hundreds of
// silent connections from there, dialling again each one sekisho
// closes. With ssh.max_unauthenticated_per_source at its default (50),
// technicians of that office still log in with OpenSSH, again and
// again; a session the office had already authenticated goes on (no
// flood can close it); and a technician who was typing a second-factor
// code when the flood began logs in with it (a pending connection with a
// proven key never gives way). The connections closed to make room are
// audited per burst with their count, not one by one.
func TestNATAddressHoldingSilentConnectionsDoesNotLockOutItsOffice(t *testing.T) {
	const office, silent, logins = "127.0.3.1", 300, 3
	v := startVariant(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "    targets: [web-sg-01]\n", "    targets: [web-sg-01]\n    require_mfa: true\n", 1)
		return cfg + "\nssh:\n  auth_timeout: 2m\n"
	})
	secret := enrollSecret(t, v, "aiko")

	// A session of the office, authenticated before the flood.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	live := fromAddress(v.ssh(ctx, "aiko", "aiko+db-jp-01", `echo ready; read line; echo "got $line"`), office)
	liveIn, err := live.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	liveOut, liveErr := &syncBuffer{}, &syncBuffer{}
	live.Stdout, live.Stderr = liveOut, liveErr
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	liveDone := make(chan error, 1)
	go func() { liveDone <- live.Wait() }()
	waitUntil(t, 30*time.Second, "the office's first session to start", func() bool { return strings.Contains(liveOut.String(), "ready\n") })

	// A technician of the office at the verification code prompt: the
	// code comes through SSH_ASKPASS, which waits on a pipe the test
	// writes the code into once the flood is on.
	dir := t.TempDir()
	fifo, asked, askpass := filepath.Join(dir, "code"), filepath.Join(dir, "asked"), filepath.Join(dir, "askpass")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(askpass, []byte("#!/bin/sh\n: > "+asked+"\nread code < "+fifo+"\necho \"$code\"\n"), 0o700)
	t.Cleanup(func() {
		// An askpass still waiting reads an empty code and ends.
		if f, err := os.OpenFile(fifo, os.O_RDWR, 0); err == nil {
			f.Close()
		}
	})
	typist := fromAddress(v.ssh(ctx, "aiko", "aiko+web-sg-01", "echo typed"), office, "-o", "BatchMode=no", "-o", "NumberOfPasswordPrompts=1")
	typist.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	typistOut, typistErr := &syncBuffer{}, &syncBuffer{}
	typist.Stdout, typist.Stderr = typistOut, typistErr
	if err := typist.Start(); err != nil {
		t.Fatal(err)
	}
	typistDone := make(chan error, 1)
	go func() { typistDone <- typist.Wait() }()
	waitUntil(t, 30*time.Second, "the verification code prompt", func() bool { _, err := os.Stat(asked); return err == nil })

	// The flood: hundreds of silent connections from the office's
	// address, each dialled again as sekisho closes it.
	floodStart := time.Now()
	h := holdSilently(t, office, net.JoinHostPort("127.0.0.1", v.port), silent)
	waitUntil(t, 60*time.Second, "sekisho to be closing the office's silent connections", func() bool { return h.closed.Load() >= silent })

	var took []time.Duration
	for i := range logins {
		began := time.Now()
		r := run(t, fromAddress(v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "served"), office), nil)
		took = append(took, time.Since(began))
		if r.code != 0 || r.stdout != "served\n" {
			t.Fatalf("login %d from %s during the flood (%d dials, %d closed by sekisho): exit %d, stdout %q, stderr %q",
				i+1, office, h.dials.Load(), h.closed.Load(), r.code, r.stdout, r.stderr)
		}
	}
	closedDuringLogins := h.closed.Load()

	// The technician at the prompt types the code: still served.
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(code + "\n")
	f.Close()
	select {
	case err := <-typistDone:
		if err != nil || typistOut.String() != "typed\n" {
			t.Fatalf("the technician typing a code through the flood: %v, stdout %q, stderr %q", err, typistOut.String(), typistErr.String())
		}
	case <-ctx.Done():
		t.Fatal("the technician typing a code through the flood was not served")
	}

	// The session authenticated before the flood goes on.
	io.WriteString(liveIn, "still-here\n")
	liveIn.Close()
	select {
	case err := <-liveDone:
		if err != nil || !strings.Contains(liveOut.String(), "got still-here\n") {
			t.Fatalf("the office's session authenticated before the flood: %v, stdout %q, stderr %q", err, liveOut.String(), liveErr.String())
		}
	case <-ctx.Done():
		t.Fatal("the office's session authenticated before the flood did not answer")
	}
	if closed := h.closed.Load(); closed <= closedDuringLogins {
		t.Fatalf("the flood stopped during the test (%d closed by sekisho, %d dials): the logins were not made through it", closed, h.dials.Load())
	}
	h.end()
	floodFor := time.Since(floodStart)
	dials, closed := h.dials.Load(), h.closed.Load()

	// Audited per burst with the count: the first at once, the rest of
	// each window when it ends.
	var rows []string
	counted := int64(0)
	waitUntil(t, 45*time.Second, "the closed connections to be audited with their count", func() bool {
		rows, counted = nil, 0
		for _, e := range v.audit(t) {
			if e["kind"] == "refused" && strings.HasPrefix(e["source"], office) {
				rows = append(rows, e["detail"])
				for _, m := range heldBackCount.FindAllStringSubmatch(e["detail"], -1) {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					counted += n
				}
			}
		}
		return counted >= closed
	})
	named := false
	for _, r := range rows {
		named = named || strings.Contains(r, "ssh.max_unauthenticated_per_source (50) reached for 127.0.3.1")
	}
	if !named {
		t.Fatalf("audit rows for %s: %q; want one naming the per-source limit", office, rows)
	}
	if bound := 2 * (int(time.Since(floodStart)/(10*time.Second)) + 2); len(rows) > bound {
		t.Fatalf("%d audit rows for %d connections closed to make room in %s; want at most %d (a row when a burst starts and one with the count when its 10 s window ends)",
			len(rows), closed, time.Since(floodStart).Round(time.Second), bound)
	}
	if counted > closed+silent {
		t.Fatalf("the audit counts %d connections closed or refused; the flood saw %d closed (and at most %d more were in flight)", counted, closed, silent)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	hardening.Report(t, "21", "%d silent connections from one address (an office behind NAT), each dialled again as sekisho closed it (%d dials in %.1f s, ssh.max_unauthenticated_per_source 50): %d OpenSSH logins from that address served (slowest %.2f s), a session authenticated there before went on, a technician at the verification code prompt since before the flood logged in; %d connections closed to make room, audited in %d rows that count them",
		silent, dials, floodFor.Seconds(), logins, took[len(took)-1].Seconds(), closed, len(rows))
}
