package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestWebHugeLineDoesNotHangThePage: a target prints 100 MB on one line;
// the session page still opens, the player loads what it is given (32
// MiB) and says where the rest is, and the page keeps answering.
func TestWebHugeLineDoesNotHangThePage(t *testing.T) {
	hardening.Long(t)
	t.Parallel()
	c := demoConsole(t)
	m := randHex(t)
	r := run(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01", "-tt", "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo huge-"+m), nil)
	if r.code != 0 || !strings.Contains(r.stdout, "huge-"+m) {
		t.Fatalf("100 MB line: exit %d, %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
	var id string
	waitUntil(t, 30*time.Second, "the session to end in the register", func() bool {
		for _, s := range sessions(t) {
			if s.Technician == "aiko" && s.BytesOut > 100_000_000 && s.EndedAt != "" {
				id = s.ID
				return true
			}
		}
		return false
	})

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	start := time.Now()
	b.Go(c.url + "/sessions/" + id)
	loaded := time.Since(start)
	b.WaitText("#integrity", "verified")
	d := waitPlayerLoaded(t, b)
	ready := time.Since(start)
	seek(t, b, d)
	waitPlayerText(t, b, "sekisho replay and sekisho export show all of it")
	if title := b.Title(); !strings.Contains(title, id) {
		t.Errorf("title %q after the replay", title)
	}
	noSevere(t, b, "huge session")
	hardening.Report(t, "28", "a 100 MB single line of output: the session page opened in %.1f s, the player was ready in %.1f s with the first 32 MiB "+
		"and a note naming sekisho replay and export for the rest, and the page kept answering", loaded.Seconds(), ready.Seconds())
}
