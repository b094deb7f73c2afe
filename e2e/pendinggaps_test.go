package e2e

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/internal/hardening"
)

// refusedWith reports whether the audit log of v has a refusal whose
// detail contains every one of parts.
func refusedWith(t *testing.T, v *variant, parts ...string) bool {
	t.Helper()
	for _, e := range v.audit(t) {
		if e["kind"] != "refused" {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(e["detail"], p)
		}
		if all {
			return true
		}
	}
	return false
}

// certificatesIssued counts the certificates issued for tech.
func certificatesIssued(t *testing.T, v *variant, tech string) int {
	t.Helper()
	n := 0
	for _, e := range v.audit(t) {
		if e["kind"] == "cert.issued" && e["technician"] == tech {
			n++
		}
	}
	return n
}

// exists reports whether path exists on the (local) demo target.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// While a request is pending, an sftp subsystem is held (its upload
// reaches the target only after the approval) and an ssh -R forward is
// refused and audited, before and after the approval.
func TestSFTPAndRemoteForwardWhilePending(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "db-jp-01")
	dir := t.TempDir()
	src := filepath.Join(dir, "upload")
	os.WriteFile(src, []byte("uploaded after approval\n"), 0o600)
	dst := "/tmp/sekisho-e2e-pending-sftp-" + randHex(t)
	t.Cleanup(func() { os.Remove(dst) })
	batch := filepath.Join(dir, "batch")
	os.WriteFile(batch, []byte("put "+src+" "+dst+"\n"), 0o600)
	sftp := exec.CommandContext(ctxT(t), "sftp", append(scpOpts(t, v, "li"), "-b", batch, "li+db-jp-01@127.0.0.1")...)
	_, sftpErr, sftpDone := startWaiting(t, sftp)

	// ssh -R on its own connection, with a command held behind the wait.
	rport, lport := freePort(t), freePort(t)
	marker := "/tmp/sekisho-e2e-pending-R-" + randHex(t)
	t.Cleanup(func() { os.Remove(marker) })
	cmd := v.ssh(ctxT(t), "li", "li+db-jp-01", "touch "+marker+"; echo remote-forward-session")
	cmd.Args = append(cmd.Args[:1], append([]string{"-R", rport + ":127.0.0.1:" + lport}, cmd.Args[1:]...)...)
	rOut, rErr, rDone := startWaiting(t, cmd)
	waitUntil(t, 30*time.Second, "the client to be told its remote forward failed", func() bool {
		return strings.Contains(rErr.String(), "remote port forwarding failed for listen port "+rport)
	})
	waitUntil(t, 30*time.Second, "the remote forward's refusal in the audit log", func() bool {
		return refusedWith(t, v, "tcpip-forward refused: port forwarding is not allowed through sekisho")
	})

	// Nothing reached the target: no file, no marker, no listener, no
	// certificate, no session.
	if exists(dst) || exists(marker) {
		t.Fatalf("the target was reached while pending: upload %v, marker %v", exists(dst), exists(marker))
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+rport, time.Second); err == nil {
		c.Close()
		t.Fatalf("the target listens on the remote forward's port %s while pending", rport)
	}
	if n := certificatesIssued(t, v, "li"); n != 0 {
		t.Fatalf("%d certificates issued while pending", n)
	}
	if out, _ := v.cli(t, "sessions", "--json"); strings.Contains(out, `"technician": "li"`) {
		t.Fatalf("a session was registered while pending: %s", out)
	}
	if rOut.String() != "" {
		t.Fatalf("output while pending: %q", rOut.String())
	}

	if r := v.command(t, "kenji", "approve", id); r.code != 0 {
		t.Fatalf("approve: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if w := waitResult(t, sftpDone); w.code != 0 {
		t.Fatalf("sftp after approval: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
	if b, _ := os.ReadFile(dst); string(b) != "uploaded after approval\n" {
		t.Fatalf("uploaded %q", b)
	}
	if !strings.Contains(sftpErr.String(), "approved by kenji") {
		t.Errorf("sftp's technician was not told of the approval: %q", sftpErr.String())
	}
	w := waitResult(t, rDone)
	if w.code != 0 || w.stdout != "remote-forward-session\n" || !exists(marker) {
		t.Fatalf("command after approval: exit %d, %q, %q", w.code, w.stdout, w.stderr)
	}
	// The approval let the command through, not the forward.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+rport, time.Second); err == nil {
		c.Close()
		t.Fatalf("the remote forward's port %s listens after approval", rport)
	}

	// The upload is recorded with its path in the session that waited.
	var sftpSession string
	waitUntil(t, 30*time.Second, "the sftp session's upload in its recording", func() bool {
		out, err := v.cli(t, "sessions", "--json")
		if err != nil {
			return false
		}
		for _, s := range parseSessions(t, out) {
			if s.Technician != "li" || s.EndedAt == "" {
				continue
			}
			if ev, err := v.cli(t, "replay", "--events", s.ID); err == nil && strings.Contains(ev, dst) && strings.Contains(ev, "x-subsystem") {
				sftpSession = s.ID
				return true
			}
		}
		return false
	})
	hardening.Report(t, "10", "sftp (put) and ssh -R with a command while the request is pending: the sftp channel is held, its upload reaches the target only after the approval and is recorded (session %s); -R is refused at once with the client told, audited, no listener on the target before or after the approval; no certificate, session or marker file before the approval", sftpSession[:8])
}

// parseSessions reads `sekisho sessions --json`.
func parseSessions(t *testing.T, out string) []session {
	t.Helper()
	var list []session
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	return list
}

// A modified client opens several channels on one connection while its
// request is pending: the first session channel is held, every other one
// (a second session, a direct-tcpip) is refused with the reason and
// audited, and nothing reaches the target. After the approval the held
// channel runs, a new session channel works and is recorded, and a
// forward the rule does not allow stays refused. Revoking the grant then
// ends the connection, and the time it takes is measured.
func TestChannelsWhilePendingThenRevoked(t *testing.T) {
	t.Parallel()
	v := approvalVariant(t, "15m", nil)
	id := fileRequest(t, v, "li", "db-jp-01")
	client := benchClient(t, v, "li", variantHostKey(t, v))
	defer client.Close()

	tag := randHex(t)
	held := "/tmp/sekisho-e2e-pending-held-" + tag
	second := "/tmp/sekisho-e2e-pending-second-" + tag
	t.Cleanup(func() { os.Remove(held); os.Remove(second) })

	first, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	firstOut, firstErr := &syncBuffer{}, &syncBuffer{}
	first.Stdout, first.Stderr = firstOut, firstErr
	if err := first.Start("touch " + held + "; echo held-" + tag); err != nil {
		t.Fatalf("the first channel's command was refused: %v", err)
	}
	waitUntil(t, 30*time.Second, "the first channel to wait on the request", func() bool {
		return strings.Contains(firstErr.String(), "waiting on your request "+id)
	})

	// More channels on the same connection while pending.
	for i := range 3 {
		ch, _, err := client.OpenChannel("session", nil)
		if err == nil {
			// Accepted: what would it run? (Never wait on it.)
			go ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"touch " + second}))
			t.Fatalf("session channel %d was accepted while pending", i+2)
		}
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.Contains(oce.Message, "access to db-jp-01 awaits approval") {
			t.Fatalf("session channel %d while pending: %v", i+2, err)
		}
	}
	for _, dest := range []string{"127.0.0.1:22", targetNamed(t, "db-jp-01").Address} {
		_, err := client.Dial("tcp", dest)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || !strings.Contains(oce.Message, "awaits approval") {
			t.Fatalf("direct-tcpip to %s while pending: %v", dest, err)
		}
	}
	waitUntil(t, 30*time.Second, "the refusals in the audit log", func() bool {
		return refusedWith(t, v, `channel "session" refused`, "awaits approval") && refusedWith(t, v, `channel "direct-tcpip" refused`, "awaits approval")
	})
	if exists(held) || exists(second) || firstOut.String() != "" {
		t.Fatalf("the target was reached while pending: held %v, second %v, output %q", exists(held), exists(second), firstOut.String())
	}
	if n := certificatesIssued(t, v, "li"); n != 0 {
		t.Fatalf("%d certificates issued while pending", n)
	}

	if r := v.command(t, "kenji", "approve", id); r.code != 0 {
		t.Fatalf("approve: exit %d, %q", r.code, r.stdout)
	}
	if err := first.Wait(); err != nil || firstOut.String() != "held-"+tag+"\n" || !exists(held) {
		t.Fatalf("the held channel after approval: %v, %q, %q", err, firstOut.String(), firstErr.String())
	}
	if exists(second) {
		t.Fatal("a channel refused while pending ran after the approval")
	}
	// After the approval: what the rule allows proceeds, the rest not.
	if out, err := runOn(client, "echo after-"+tag); err != nil || out != "after-"+tag+"\n" {
		t.Fatalf("a new session channel after approval: %q, %v", out, err)
	}
	if _, err := client.Dial("tcp", targetNamed(t, "db-jp-01").Address); err == nil || !strings.Contains(err.Error(), "port forwarding is not allowed to db-jp-01") {
		t.Fatalf("direct-tcpip after approval: %v", err)
	}

	// A long command on this connection and an OpenSSH session under the
	// same grant, then the revocation.
	long, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	longOut := &syncBuffer{}
	long.Stdout, long.Stderr = longOut, longOut
	if err := long.Start("echo started; sleep 300"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the long command to start", func() bool { return strings.Contains(longOut.String(), "started") })
	live := startLive(t, v, "li", "li+db-jp-01")
	clientGone := make(chan struct{})
	go func() { client.Wait(); close(clientGone) }()

	asked := time.Now()
	r := v.command(t, "kenji", "revoke", id, "--reason", "revocation timing")
	returned := time.Now()
	if r.code != 0 || !strings.Contains(r.stdout, "revoked by kenji") {
		t.Fatalf("revoke: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	const bound = time.Second
	var sshEnded, clientEnded time.Duration
	for _, w := range []struct {
		done <-chan struct{}
		took *time.Duration
		what string
	}{{live.exited, &sshEnded, "OpenSSH session"}, {clientGone, &clientEnded, "x/crypto connection"}} {
		select {
		case <-w.done:
			*w.took = time.Since(returned)
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s still runs 10s after the revocation", w.what)
		}
	}
	if sshEnded > bound || clientEnded > bound {
		t.Errorf("sessions ended %s (ssh) and %s (x/crypto) after the revoke command returned; want within %s", sshEnded, clientEnded, bound)
	}
	if !strings.Contains(live.stderr.String(), "was revoked by kenji: revocation timing") {
		t.Errorf("the technician was not told why: %q", live.stderr.String())
	}
	// The x/crypto session copies its stderr in a goroutine of its own,
	// which may still be at it when the connection's end is seen.
	told := func() bool { return strings.Contains(longOut.String(), "was revoked by kenji: revocation timing") }
	for deadline := time.Now().Add(5 * time.Second); !told() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !told() {
		t.Errorf("the x/crypto channel was not told why: %q", longOut.String())
	}

	// Recorded: the held channel and the one opened after approval.
	var ev string
	waitUntil(t, 30*time.Second, "the connection's recording", func() bool {
		out, err := v.cli(t, "sessions", "--json")
		if err != nil {
			return false
		}
		for _, s := range parseSessions(t, out) {
			if s.Technician == "li" && s.EndedAt != "" {
				if e, err := v.cli(t, "replay", "--events", s.ID); err == nil && strings.Contains(e, "held-"+tag) {
					ev = e
					return true
				}
			}
		}
		return false
	})
	if !strings.Contains(ev, "after-"+tag) || strings.Contains(ev, second) {
		t.Errorf("the recording should hold the held and the later channel only:\n%s", ev)
	}
	hardening.Report(t, "10", "one connection while pending: the first session channel held, 3 more session channels and 2 direct-tcpip refused with 'awaits approval' and audited, no certificate, no marker file; after the approval the held command and a new channel ran and were recorded, a forward stayed refused; revoking the grant (in-process, same node) ended an OpenSSH session %d ms and the x/crypto connection %d ms after the revoke command returned (%d ms after it was sent)",
		sshEnded.Milliseconds(), clientEnded.Milliseconds(), max(sshEnded, clientEnded).Milliseconds()+returned.Sub(asked).Milliseconds())
}
