package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestWebFreezeAffiliate: an admin freezes an affiliate from the browser;
// its technician's live session ends with the reason, a new one is
// refused; lifting the lock from the browser lets them in again.
func TestWebFreezeAffiliate(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := startVariant(t, withWeb(port, nil))
	c := variantConsole(v, port)
	m := randHex(t)

	tm := shellSession(t, v.ssh(ctxT(t), "wei", "wei+web-sg-01").Args)
	tm.send("echo working-"+m, "Enter")
	tm.waitScreen("working-" + m + "\nprompt>")

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	b.Go(c.url + "/locks")
	b.Find("#no-locks")
	reason := "INC-77 contract under review " + m
	b.Exec(`document.querySelector("#lock-kind").value = "affiliate";`)
	b.Find("#lock-name").Type("ops-cn")
	b.Find("#lock-reason").Type(reason)
	b.Find("#lock").Click()
	b.WaitText("#locks", reason)
	b.WaitText("#locks", "until removed")

	tm.waitScreen("ssh-exited-")
	if screen := strings.ReplaceAll(tm.screen(), "\n", ""); !strings.Contains(screen, "affiliate ops-cn is locked (lock 1): "+reason) {
		t.Errorf("wei's terminal does not show the lock and its reason:\n%s", tm.screen())
	}
	if r := run(t, v.ssh(ctxT(t), "wei", "wei+web-sg-01", "echo should-not-run"), nil); r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, reason) {
		t.Errorf("wei while ops-cn is locked: exit %d, stdout %q, stderr %q; want a refusal naming the reason", r.code, r.stdout, r.stderr)
	}

	b.Find("#locks .remove-reason").Type("INC-77 review done")
	b.Find("#locks button.remove").Click()
	b.Find("#no-locks")
	waitUntil(t, 10*time.Second, "wei to be let in again", func() bool {
		r := run(t, v.ssh(ctxT(t), "wei", "wei+web-sg-01", "echo back-"+m), nil)
		return r.code == 0 && strings.Contains(r.stdout, "back-"+m)
	})
	noSevere(t, b, "locks")
	audit := v.audit(t)
	var added, removed bool
	for _, e := range audit {
		added = added || e["kind"] == "lock.added" && e["technician"] == "kenji" && strings.Contains(e["detail"], reason)
		removed = removed || e["kind"] == "lock.removed" && e["technician"] == "kenji" && strings.Contains(e["detail"], "INC-77 review done")
	}
	if !added || !removed {
		t.Errorf("lock added %v and removed %v in the audit log by kenji; want both", added, removed)
	}
}
