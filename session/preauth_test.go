package session

import (
	"strings"
	"testing"
	"time"
)

func TestPreauthLimits(t *testing.T) {
	p := newPreauth(2, 3, 100)
	for _, h := range []string{"10.0.0.1", "10.0.0.1"} {
		if ok, why := p.admit(h); !ok {
			t.Fatalf("admit(%s) refused: %s", h, why)
		}
	}
	ok, why := p.admit("10.0.0.1")
	if ok || !strings.Contains(why, "max_unauthenticated_per_source") || !strings.Contains(why, "10.0.0.1") {
		t.Fatalf("third from one source: %v %q; want refused naming the per-source limit", ok, why)
	}
	if ok, _ := p.admit("10.0.0.2"); !ok {
		t.Fatal("another source refused under the global limit")
	}
	ok, why = p.admit("10.0.0.3")
	if ok || !strings.Contains(why, "(ssh.max_unauthenticated)") {
		t.Fatalf("fourth in all: %v %q; want refused naming the global limit", ok, why)
	}
	p.done("10.0.0.1")
	if ok, why := p.admit("10.0.0.3"); !ok {
		t.Fatalf("after one finished, a new source refused: %s", why)
	}
	for _, h := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		p.done(h)
	}
	if p.total != 0 || len(p.perSource) != 0 {
		t.Fatalf("after all finished: total %d, sources %v", p.total, p.perSource)
	}
}

func TestPreauthRefusalsAuditedOncePerWindow(t *testing.T) {
	p := newPreauth(1, 1, 100)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	if n := p.refusal("h"); n != 1 {
		t.Fatalf("first refusal: report %d, want 1", n)
	}
	for range 99 {
		if n := p.refusal("h"); n != 0 {
			t.Fatalf("refusal inside the window reported (%d)", n)
		}
	}
	if n := p.refusal("other"); n != 1 {
		t.Fatalf("another source's first refusal: report %d, want 1", n)
	}
	now = now.Add(auditEvery)
	if n := p.refusal("h"); n != 100 {
		t.Fatalf("after the window: report %d, want 100 (99 held back and this one)", n)
	}
}

func TestPreauthAuthFailuresBlockTheSourceForTheWindow(t *testing.T) {
	p := newPreauth(50, 1000, 3)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	for range 3 {
		if ok, why := p.admit("bad"); !ok {
			t.Fatalf("refused before the failures: %s", why)
		}
		p.done("bad")
		p.failed("bad")
	}
	ok, why := p.admit("bad")
	if ok || !strings.Contains(why, "max_auth_failures_per_source") || !strings.Contains(why, "3 authentication attempts from bad") {
		t.Fatalf("after 3 failures: %v %q; want refused naming the limit", ok, why)
	}
	if ok, _ := p.admit("good"); !ok {
		t.Fatal("another source refused")
	}
	p.done("good")
	now = now.Add(failWindow)
	if ok, why := p.admit("bad"); !ok {
		t.Fatalf("after the window: refused: %s", why)
	}
}
