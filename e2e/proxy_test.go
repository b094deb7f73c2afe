package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// viaProxy runs ssh through a stand-in load balancer on loopback that
// sends a PROXY v1 header claiming the client is claimed:5555, then relays
// the connection both ways.
func viaProxy(t *testing.T, v *variant, claimed, login, remote string) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		up, err := net.Dial("tcp", "127.0.0.1:"+v.port)
		if err != nil {
			return
		}
		defer up.Close()
		fmt.Fprintf(up, "PROXY TCP4 %s 127.0.0.1 5555 %s\r\n", claimed, v.port)
		done := make(chan struct{}, 2)
		go func() { io.Copy(up, c); done <- struct{}{} }()
		go func() { io.Copy(c, up); done <- struct{}{} }()
		<-done // either side closing ends both
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cmd := v.ssh(ctxT(t), "aiko", login, remote)
	for i, a := range cmd.Args {
		if a == "-p" {
			cmd.Args[i+1] = port
		}
	}
	return run(t, cmd, nil)
}

func TestProxyProtocolFromTrustedBalancer(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\nnetworks:", "\nproxy_protocol:\n  trusted: [127.0.0.1]\n\nnetworks:", 1)
		return strings.Replace(cfg, "\naffiliates:", "\n  - name: partner-vpn\n    country: CN\n    cidrs: [198.51.100.0/24]\n\naffiliates:", 1)
	})
	r := viaProxy(t, v, "198.51.100.7", "aiko+web-sg-01", "echo via-balancer")
	if r.code != 0 || r.stdout != "via-balancer\n" {
		t.Fatalf("through the balancer: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	out, _ := v.cli(t, "sessions", "--json")
	var list []session
	json.Unmarshal([]byte(out), &list)
	if len(list) != 1 || list[0].Source != "198.51.100.7:5555" || list[0].SourceCountry != "CN" || !list[0].CrossBorder {
		t.Errorf("the register does not show the client's address from the header:\n%s", out)
	}
	// The client's address decides: aiko from CN may not reach JP personal data.
	r = viaProxy(t, v, "198.51.100.7", "aiko+db-jp-01", "true")
	if r.code != 255 || !strings.Contains(r.stderr, "connecting from CN") {
		t.Errorf("aiko from CN through the balancer: exit %d, stderr %q", r.code, r.stderr)
	}
	// A trusted balancer must send a header: its own address would pass for
	// every client's.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo direct"), nil); r.code != 255 || strings.Contains(r.stdout, "direct") {
		t.Errorf("no header from a trusted peer: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}

func TestProxyProtocolFromUntrustedPeerRefused(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nnetworks:", "\nproxy_protocol:\n  trusted: [10.9.9.9]\n\nnetworks:", 1)
	})
	r := viaProxy(t, v, "127.0.0.1", "aiko+db-jp-01", "echo spoofed")
	if r.code != 255 || strings.Contains(r.stdout, "spoofed") {
		t.Fatalf("a PROXY header from an untrusted peer was accepted: exit %d, stdout %q", r.code, r.stdout)
	}
	out, _ := v.cli(t, "audit")
	if !strings.Contains(out, "PROXY protocol header from a peer not in proxy_protocol.trusted") {
		t.Errorf("the refusal is not audited:\n%s", out)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo direct"), nil); r.code != 0 || r.stdout != "direct\n" {
		t.Errorf("direct: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}
