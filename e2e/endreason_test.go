package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestOrdinaryLogoutsEndAsClientClosed: a technician whose command ends
// and whose client then hangs up is registered as "client closed", never
// as the target going away (sekisho closing the target's side after the
// technician left once raced the reason).
func TestOrdinaryLogoutsEndAsClientClosed(t *testing.T) {
	t.Parallel()
	v := startVariant(t, nil)
	const logins = 20
	for i := range logins {
		r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "exit 4"), nil)
		if r.code != 4 {
			t.Fatalf("login %d: exit %d, stderr %q", i, r.code, r.stderr)
		}
	}
	var ss []session
	waitUntil(t, 30*time.Second, "every session to be registered as ended", func() bool {
		out, _ := exec.Command(env.sekisho, "sessions", "--json", "--config", v.config).Output()
		ss = nil
		if json.Unmarshal(out, &ss) != nil || len(ss) != logins {
			return false
		}
		for _, s := range ss {
			if s.EndedAt == "" {
				return false
			}
		}
		return true
	})
	var wrong []string
	for _, s := range ss {
		if s.EndReason != "client closed" {
			wrong = append(wrong, s.EndReason)
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("%d of %d ordinary logouts ended with another reason: %q", len(wrong), logins, strings.Join(wrong, "; "))
	}
}
