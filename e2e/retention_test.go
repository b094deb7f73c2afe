package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Recordings past their zone's retention are deleted, with an audit
// event; one under a legal hold is kept until it is released.
func TestRetentionKeepsHeldRecordings(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", `
retention_interval: 1s
recording_stores:
  - name: spool
    residency: ["*"]
    retention: 1s
rules:
`, 1)
	})
	for _, m := range []string{"kept-" + randHex(t), "deleted-" + randHex(t)} {
		if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo "+m), nil); r.code != 0 {
			t.Fatalf("exit %d, %q", r.code, r.stderr)
		}
	}
	var list []session
	waitUntil(t, 30*time.Second, "both sessions ended", func() bool {
		out, _ := v.cli(t, "sessions", "--json")
		list = nil
		json.Unmarshal([]byte(out), &list)
		return len(list) == 2 && list[0].EndedAt != "" && list[1].EndedAt != ""
	})
	held, other := list[1].ID, list[0].ID // oldest first is the one to keep
	if out, err := v.cli(t, "hold", "--reason", "case 2026-117, court order", held); err != nil || !strings.Contains(out, "held") {
		t.Fatalf("hold: %v %s", err, out)
	}
	gone := func(id string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(v.dir, "recordings", id))
			return os.IsNotExist(err)
		}
	}
	waitUntil(t, 30*time.Second, "the unheld recording to be deleted", gone(other))
	if gone(held)() {
		t.Fatal("the held recording was deleted")
	}
	if out, _ := v.cli(t, "holds"); !strings.Contains(out, held) || !strings.Contains(out, "court order") {
		t.Errorf("holds: %s", out)
	}
	if out, err := v.cli(t, "release", held); err != nil || !strings.Contains(out, "released") {
		t.Fatalf("release: %v %s", err, out)
	}
	waitUntil(t, 30*time.Second, "the released recording to be deleted", gone(held))
	deleted := 0
	for _, e := range v.audit(t) {
		if e["kind"] == "recording.deleted" {
			deleted++
		}
	}
	if deleted != 2 {
		t.Errorf("%d recording.deleted audit events, want 2", deleted)
	}
}
