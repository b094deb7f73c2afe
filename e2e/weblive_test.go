package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestWebWatchLiveAndEnd: an admin watches a technician's live shell in
// the browser, sees what is typed as it happens, and ends the session
// with a reason that the technician reads in their terminal.
func TestWebWatchLiveAndEnd(t *testing.T) {
	t.Parallel()
	c := demoConsole(t)
	m := randHex(t)
	tm := shellSession(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	tm.send("echo before-"+m+"-$((6*7))", "Enter")
	tm.waitScreen("before-" + m + "-42")
	s := sessionOn(t, env.state.Config, "aiko", "db-jp-01", "before-"+m, false)

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	b.Go(c.url + "/")
	b.WaitText(`#live-sessions tr[data-session="`+s.ID+`"]`, "aiko")
	b.Go(c.url + "/sessions/" + s.ID + "/live")
	// The watch joins at the live point, with what is on the screen now,
	// then follows.
	waitPlayerText(t, b, "before-"+m+"-42")
	tm.send("echo during-"+m+"-$((6*8))", "Enter")
	waitPlayerText(t, b, "during-"+m+"-48")
	noSevere(t, b, "live")

	reason := "INC-9 watched and stopped " + m
	b.Find(`#kill-form input[name="reason"]`).Type(reason)
	b.Find("#kill").Click()
	b.WaitText("#meta-end", "ended by kenji: "+reason)
	tm.waitScreen("ended by kenji: " + reason)
	tm.waitScreen("ssh-exited-")
	waitUntil(t, 30*time.Second, "the register to record the session's end", func() bool {
		for _, x := range sessionsOn(t, env.state.Config) {
			if x.ID == s.ID {
				return strings.Contains(x.EndReason, "ended by kenji: "+reason)
			}
		}
		return false
	})
	if r := sekishoCLI(t, "audit", "--limit", "2000"); !strings.Contains(r, "session.killed") || !strings.Contains(r, reason) {
		t.Errorf("no session.killed audit row with the reason")
	}
}
