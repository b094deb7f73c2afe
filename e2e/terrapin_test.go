package e2e

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// capture is a TCP proxy that keeps the first bytes each side sends.
type capture struct {
	addr     string
	mu       sync.Mutex
	fromDial bytes.Buffer // what the dialling side (sekisho) sent
	fromUp   bytes.Buffer // what the upstream (the target) sent
}

// startCapture is a TCP proxy to upstream that keeps the first 64 KiB
// each way.
func startCapture(t *testing.T, upstream string) *capture {
	t.Helper()
	p := &capture{}
	p.addr = startTCPProxy(t, upstream, func(dir int, b []byte) []byte {
		p.mu.Lock()
		defer p.mu.Unlock()
		keep := &p.fromDial
		if dir == toDialer {
			keep = &p.fromUp
		}
		if keep.Len() < 64<<10 {
			keep.Write(b)
		}
		return b
	})
	return p
}

func (p *capture) sent() (dial, up string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fromDial.String(), p.fromUp.String()
}

// TestStrictKeyExchangeOnBothLegs: both of sekisho's legs negotiate the
// strict key exchange that defeats the Terrapin prefix-truncation attack
// (CVE-2023-48795). On the technician's leg OpenSSH says it uses it; on
// the target's leg both key exchange offers, seen on the wire, carry the
// strict markers, which makes strict ordering mandatory for both.
func TestStrictKeyExchangeOnBothLegs(t *testing.T) {
	target := env.state.Targets[0]
	proxy := startCapture(t, target.Address)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "address: "+target.Address, "address: "+proxy.addr, 1)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "through")
	cmd.Args = append([]string{cmd.Args[0], "-vvv"}, cmd.Args[1:]...)
	r := run(t, cmd, nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "through" {
		t.Fatalf("ssh through the capturing proxy: exit %d, stdout %q\n%s", r.code, r.stdout, tail(r.stderr, 20))
	}
	if !strings.Contains(r.stderr, "will use strict KEX ordering") {
		t.Errorf("the technician's leg did not negotiate strict KEX:\n%s", tail(r.stderr, 40))
	}
	dial, up := proxy.sent()
	if !strings.Contains(dial, "kex-strict-c-v00@openssh.com") {
		t.Errorf("sekisho's key exchange offer to the target lacks kex-strict-c-v00@openssh.com")
	}
	if !strings.Contains(up, "kex-strict-s-v00@openssh.com") {
		t.Errorf("the target's key exchange offer lacks kex-strict-s-v00@openssh.com (its sshd predates the Terrapin fix)")
	}
	hardening.Report(t, "18", "OpenSSH reports strict KEX ordering on the technician's leg; a capturing proxy on the target's leg sees kex-strict-c-v00 in sekisho's offer and kex-strict-s-v00 in the target's")
}
