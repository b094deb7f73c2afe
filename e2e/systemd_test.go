package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The unit shipped in deploy/systemd passes systemd-analyze verify:
// every directive known, the binary found, nothing warned about.
func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze (Debian's systemd) is required: run tools/install-deps.sh test")
	}
	b, err := os.ReadFile(filepath.Join(env.root, "deploy", "systemd", "sekisho.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=notify", "ExecStart=/usr/local/bin/sekisho serve --config /etc/sekisho/sekisho.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/sekisho",
		"PrivateTmp=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("the unit lacks %q", want)
		}
	}
	// verify checks that the binary exists: point it at the one built.
	path := filepath.Join(t.TempDir(), "sekisho.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/sekisho", env.sekisho)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Under systemd (Type=notify), sekisho serve says READY=1 once it
// serves SSH, RELOADING=1 and READY=1 around a SIGHUP reload, and
// STOPPING=1 on SIGTERM, on the socket NOTIFY_SOCKET names.
func TestServeTellsSystemd(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		select {
		case m := <-got:
			if !strings.HasPrefix(m, want) {
				t.Fatalf("sekisho told systemd %q; want %q first", m, want)
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("sekisho did not tell systemd %q within 30s", want)
		}
		return ""
	}
	v := startVariant(t, nil, "env", "NOTIFY_SOCKET="+sock)
	if m := next("READY=1"); !strings.Contains(m, "STATUS=serving SSH on 127.0.0.1:"+v.port) {
		t.Errorf("READY without the status: %q", m)
	}
	v.kill(t, syscall.SIGHUP)
	next("RELOADING=1")
	next("READY=1")
	v.kill(t, syscall.SIGTERM)
	next("STOPPING=1")
}
