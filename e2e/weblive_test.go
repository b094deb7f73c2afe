package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/webdriver"
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
	overviewFollowsCrossBorder(t, b)
	b.Go(c.url + "/sessions/" + s.ID + "/live")
	// The watch joins at the live point, with what is on the screen now,
	// then follows.
	waitPlayerText(t, b, "before-"+m+"-42")
	tm.send("echo during-"+m+"-$((6*8))", "Enter")
	waitPlayerText(t, b, "during-"+m+"-48")
	if cols := playerCols(b); cols != 120 {
		t.Errorf("the player shows %d columns; the technician's terminal has 120", cols)
	}
	// The technician widens the terminal: the player follows.
	// The command that prints the width is typed once the resize went
	// through sekisho (the player shows it): typed before, on a loaded
	// machine, it could run at the old width.
	tm.run("resize-window", "-t", tm.name, "-x", "150", "-y", "35")
	webdriver.Wait(t, "the player to show 150 columns", func() bool { return playerCols(b) == 150 })
	tm.send("echo cols-"+m+"-$(tput cols)", "Enter")
	waitPlayerText(t, b, "cols-"+m+"-150")
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

// TestReviewerWatchFollowsResidency: over SSH as in the console, sara
// (review_residency SG) watches a live SG session but not a JP one, which
// is "not found" for her.
func TestReviewerWatchFollowsResidency(t *testing.T) {
	t.Parallel()
	m := randHex(t)
	jp := shellSession(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	jp.send("echo jp-"+m, "Enter")
	jp.waitScreen("jp-" + m + "\nprompt>")
	sg := shellSession(t, sshCmd(ctxT(t), "aiko", "aiko+web-sg-01").Args)
	sg.send("echo sg-"+m, "Enter")
	sg.waitScreen("sg-" + m + "\nprompt>")
	jpID := sessionOn(t, env.state.Config, "aiko", "db-jp-01", "jp-"+m, false).ID
	sgID := sessionOn(t, env.state.Config, "aiko", "web-sg-01", "sg-"+m, false).ID

	if r := demoLogins().command(t, "sara", "watch", jpID); r.code != 1 || !strings.Contains(r.stderr, "no session "+jpID) || strings.Contains(r.stdout, m) {
		t.Errorf("sara watch of a JP session: exit %d, stdout %q, stderr %q; want 1 and no session", r.code, r.stdout, r.stderr)
	}
	out := &syncBuffer{}
	w := demoLogins().mustCmd(t, "sara", "watch", sgID)
	w.Stdout = out
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	sg.send("echo live-"+m, "Enter")
	waitUntil(t, 10*time.Second, "sara's watch to show the SG session", func() bool { return strings.Contains(out.String(), "live-"+m) })
	found := false
	for _, e := range strings.Split(sekishoCLI(t, "audit", "--limit", "5000"), "\n") {
		found = found || strings.Contains(e, `"refused"`) && strings.Contains(e, jpID) && strings.Contains(e, "outside the reviewer's residencies")
	}
	if !found {
		t.Error("sara's refused watch of the JP session is not audited with the reason")
	}
}

// TestScopedAdminSeesAndEndsOnlyTheirResidencies: an admin limited to SG
// lists and ends SG sessions over SSH; a JP session is not theirs to see
// or end.
func TestScopedAdminSeesAndEndsOnlyTheirResidencies(t *testing.T) {
	t.Parallel()
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "  - name: kenji\n    affiliate: operator-jp\n", "  - name: kenji\n    affiliate: operator-jp\n    review_residency: [SG]\n", 1)
	})
	m := randHex(t)
	jp := shellSession(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	jp.send("echo jp-"+m, "Enter")
	jp.waitScreen("jp-" + m + "\nprompt>")
	sg := shellSession(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01").Args)
	sg.send("echo sg-"+m, "Enter")
	sg.waitScreen("sg-" + m + "\nprompt>")
	jpID := sessionOn(t, v.config, "aiko", "db-jp-01", "jp-"+m, false).ID
	sgID := sessionOn(t, v.config, "aiko", "web-sg-01", "sg-"+m, false).ID

	r := v.command(t, "kenji", "sessions", "--live")
	if r.code != 0 || !strings.Contains(r.stdout, sgID) || strings.Contains(r.stdout, jpID) {
		t.Errorf("kenji (SG) sessions --live: exit %d\n%s\nwant the SG session only", r.code, r.stdout)
	}
	if r := v.command(t, "kenji", "kill", jpID, "--reason", "not-mine"); r.code != 1 || !strings.Contains(r.stderr, "no live session "+jpID) {
		t.Errorf("kenji (SG) kill of the JP session: exit %d, stderr %q", r.code, r.stderr)
	}
	// Still running: the shell computes what the terminal would only echo.
	jp.send("echo still-here-"+m+"-$((6*7))", "Enter")
	jp.waitScreen("still-here-" + m + "-42")
	if r := v.command(t, "kenji", "kill", sgID, "--reason", "scoped-"+m); r.code != 0 {
		t.Errorf("kenji (SG) kill of the SG session: exit %d, stderr %q", r.code, r.stderr)
	}
	sg.waitScreen("ssh-exited-")
}

// overviewFollowsCrossBorder checks that the overview open in b shows a
// cross-border session that starts after it was loaded, without a
// reload, and counts it in the page's title.
func overviewFollowsCrossBorder(t *testing.T, b *webdriver.Browser) {
	t.Helper()
	rows := func() []string {
		got, _ := b.Exec(`return Array.from(document.querySelectorAll("#live-sessions tr.cross-border")).map(r => r.dataset.session);`).([]any)
		var ids []string
		for _, id := range got {
			ids = append(ids, fmt.Sprint(id))
		}
		return ids
	}
	before := rows()
	ctx, cancel := context.WithCancel(context.Background())
	li := sshCmd(ctx, "li", "li+web-sg-01", "echo started; sleep 120")
	if err := li.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() { cancel(); li.Wait() }() // the client killed, its session ends
	b.Exec(`window.sekishoNotReloaded = true;`)
	// The page refreshes every 5 s: allow a few rounds on a busy machine.
	waitUntil(t, 30*time.Second, "li's cross-border session to appear on the overview without a reload", func() bool {
		for _, id := range rows() {
			if !slices.Contains(before, id) {
				return true
			}
		}
		return false
	})
	if marker, _ := b.Exec(`return window.sekishoNotReloaded === true;`).(bool); !marker {
		t.Error("the overview was reloaded, not refreshed in place")
	}
	if title, _ := b.Exec(`return document.title;`).(string); !regexp.MustCompile(`^\(\d+ cross-border\) `).MatchString(title) {
		t.Errorf("the title %q does not count the cross-border sessions", title)
	}
}
