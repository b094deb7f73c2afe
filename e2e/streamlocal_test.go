package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestStreamlocalForwardRefused: ssh -L to a Unix socket on the target
// opens a direct-streamlocal channel. The demo's sshd would allow it (its
// AllowStreamLocalForwarding is the default, yes), so what keeps the
// socket's bytes from the technician is sekisho refusing the channel,
// and that refusal is audited.
func TestStreamlocalForwardRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	targetSock := filepath.Join(dir, "target.sock")
	ln, err := net.Listen("unix", targetSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "socket-on-the-target\n")
			c.Close()
		}
	}()

	local := filepath.Join(dir, "local.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append(sshOpts("aiko"), "-p", env.port, "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", local+":"+targetSock, "aiko+db-jp-01@"+env.host)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var c net.Conn
	waitUntil(t, 30*time.Second, "the client's local socket", func() bool {
		c, err = net.Dial("unix", local)
		return err == nil
	})
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if strings.Contains(line, "socket-on-the-target") {
		t.Fatalf("a Unix socket on the target was reached through sekisho: %q", line)
	}
	waitUntil(t, 20*time.Second, "the client to report the refusal", func() bool {
		return strings.Contains(stderr.String(), "port forwarding is not allowed through sekisho")
	})
	audit := sekishoCLI(t, "audit", "--limit", "10000")
	if !strings.Contains(audit, "direct-streamlocal@openssh.com") {
		t.Fatalf("the refused direct-streamlocal channel is not in the audit log")
	}
	hardening.Report(t, "16", "ssh -L from a local socket to a Unix socket the target serves: the direct-streamlocal channel refused, nothing from the target's socket reached the client, the refusal told to the client and audited")
}
