package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/webdriver"
)

// A moderator in the console: kenji finds aiko's waiting session on the
// overview, joins it as moderator (the session starts), watches it, sends
// her a line, holds and releases her input, leaves (her input is held)
// and comes back (released), and ends it with a reason she reads. wei, of
// aiko's own affiliate, is refused the seat.
func TestWebModerator(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := startVariant(t, withWeb(port, func(cfg string) string {
		return strings.Replace(moderatedWeb("20s")(cfg), "  - name: wei\n    affiliate: ops-cn\n", "  - name: wei\n    affiliate: ops-jp\n    groups: [approvers, reviewers]\n", 1)
	}))
	c := variantConsole(v, port)
	m := randHex(t)

	tech := v.ssh(ctxT(t), "aiko", "aiko+web-sg-01")
	tech.Args = append(tech.Args[:1], append([]string{"-tt"}, tech.Args[1:]...)...)
	tm := newTmux(t, 120, 30, "sh -c "+shellQuote(shellLine(tech.Args)+"; echo ssh-exited-$?; sleep 3600"))
	tm.waitScreen("a moderator joins in the console")

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	b.Go(c.url + "/")
	b.WaitText("#moderated-sessions tr.awaiting", "aiko")
	id := b.Find("#moderated-sessions tr.awaiting").Attr("data-session")
	if !strings.Contains(tm.screen(), "session "+id+":") {
		t.Fatalf("the overview lists session %q; aiko waits in another:\n%s", id, tm.screen())
	}
	screenshot(t, b, "console-moderate-waiting")

	// wei may not moderate his own affiliate's session: not listed, and
	// the seat refused.
	wb := startBrowser(t)
	c.signIn(t, wb, "wei")
	wb.Go(c.url + "/")
	if n := len(wb.FindAll("#moderated-sessions tr")); n != 0 {
		t.Errorf("wei's overview lists %d sessions to moderate", n)
	}
	if code := fetchStatus(t, wb, "/api/sessions/"+id+"/moderate/live"); code != http.StatusForbidden {
		t.Errorf("wei's seat at aiko's session: HTTP %d, want 403", code)
	}
	wb.Go(c.url + "/sessions/" + id + "/moderate")
	if got := wb.Find("main").Text(); !strings.Contains(got, "no session "+id+" that you may moderate") {
		t.Errorf("wei's moderation page says %q", got)
	}

	b.Find("#moderated-sessions a.join").Click()
	b.WaitURL("/sessions/" + id + "/moderate")
	tm.waitScreen("watched by kenji; connecting to web-sg-01")
	tm.send("echo web-mod-"+m+"-$((6*7))", "Enter")
	waitPlayerText(t, b, "web-mod-"+m+"-42")
	b.WaitText("#moderation-state", "Running; watching: kenji.")

	b.Find(`#say-form input[name="text"]`).Type("stop before the migration " + m)
	b.Find("#say").Click()
	b.WaitText("#moderate-result", "sent.")
	tm.waitScreen("moderator kenji says: stop before the migration " + m)

	b.Find("#hold").Click()
	b.WaitText("#moderate-result", "the technician's input is held.")
	tm.waitScreen("moderator kenji holds your input")
	tm.send("echo held-"+m+"-$((40+2))", "Enter")
	noSevere(t, b, "moderate")
	b.Find("#hold").Click()
	b.WaitText("#moderate-result", "the input is already held by kenji")
	b.Logs() // the refusal's 400, logged by the browser
	b.Find("#release").Click()
	b.WaitText("#moderate-result", "the technician's input goes through.")
	tm.waitScreen("moderator kenji released your input")
	tm.send("echo released-"+m+"-$((40+3))", "Enter")
	waitPlayerText(t, b, "released-"+m+"-43")
	if strings.Contains(tm.screen(), "held-"+m+"-42") {
		t.Errorf("input typed while held reached the target:\n%s", tm.screen())
	}
	screenshot(t, b, "console-moderate")
	noSevere(t, b, "moderate")

	// Leaving the page leaves the seat: her input is held; coming back
	// within the grace period releases it.
	b.Go(c.url + "/")
	tm.waitScreen("the moderators left: your input is held; the session ends in 20s")
	b.Go(c.url + "/sessions/" + id + "/moderate")
	tm.waitScreen("watched again by kenji: your input goes through")
	waitPlayerText(t, b, "released-"+m+"-43") // the view starts from the session's start

	reason := "INC-7 wrong table " + m
	b.Find(`#end-form input[name="reason"]`).Type(reason)
	b.Find("#end").Click()
	tm.waitScreen("session ended: ended by moderator kenji: " + reason)
	tm.waitScreen("ssh-exited-")
	webdriver.Wait(t, "the page to say the session ended", func() bool {
		return strings.Contains(b.Find("#moderation-state").Text(), "The session has ended.")
	})

	kinds := map[string]string{}
	waitUntil(t, 10*time.Second, "the session's end to be audited", func() bool {
		for _, e := range v.audit(t) {
			if e["session"] == id {
				kinds[e["kind"]] = e["source"]
			}
		}
		_, ok := kinds["session.end"]
		return ok
	})
	for _, k := range []string{"moderation.joined", "moderation.message", "moderation.hold", "moderation.release", "moderation.left", "moderation.end"} {
		if kinds[k] != "web" {
			t.Errorf("%s audited from %q, want web (got %v)", k, kinds[k], kinds)
		}
	}
}
