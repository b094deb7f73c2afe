package e2e

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/webdriver"
)

// The web console's user journeys, through real OpenSSH (the sign-in link
// comes from `ssh … login`, sessions are typed in tmux) and a real headless
// Chromium. What is asserted is what a person sees: text on the page, the
// player's terminal, dialogs, the console log.

// An admin signs in with the link ssh prints, once; a technician without
// a console role gets no link; the cookie is out of reach of scripts and
// other sites; signing out ends the session.
func TestWebSignInWithLinkFromSSH(t *testing.T) {
	t.Parallel()
	c := demoConsole(t)
	b := startBrowser(t)

	link := c.link(t, "kenji")
	b.Go(link)
	b.WaitText("#link-technician", "kenji")
	b.Find("#continue").Click()
	b.WaitText("#me-name", "kenji")
	if u := b.URL(); u != c.url+"/" {
		t.Errorf("after sign-in the browser is at %s, want the overview %s/", u, c.url)
	}
	b.Find("#pending-count") // the overview, not an error page
	noSevere(t, b, "overview")
	var cookie *webdriver.Cookie
	for _, ck := range b.Cookies() {
		if ck.Name == "sekisho" {
			cookie = &ck
		}
	}
	if cookie == nil || !cookie.HTTPOnly || cookie.SameSite != "Strict" || cookie.Path != "/" {
		t.Errorf("session cookie = %+v, want sekisho, HttpOnly, SameSite Strict, path /", cookie)
	}
	if got := fetchStatus(t, b, "/api/me"); got != 200 {
		t.Errorf("/api/me signed in: status %d, want 200", got)
	}

	// The link worked once.
	b.Go(link)
	b.WaitText("#signin-error", "unknown, used or expired")
	if n := len(b.FindAll("#continue")); n != 0 {
		t.Errorf("a used link still offers to continue (%d buttons)", n)
	}

	r := c.login(t, "aiko")
	if r.code != 1 || !strings.Contains(r.stderr, "the console is for admins, approvers and reviewers") ||
		strings.Contains(r.stdout+r.stderr, "/login/") {
		t.Errorf("aiko's login: exit %d, stdout %q, stderr %q; want exit 1, no link, the reason", r.code, r.stdout, r.stderr)
	}

	b.Go(c.url + "/")
	b.Find("#sign-out").Click()
	b.Find("#signed-out")
	b.Go(c.url + "/")
	b.WaitText("h1", "Sign in")
	if n := len(b.FindAll("#me-name")); n != 0 {
		t.Errorf("signed out, the overview still names someone")
	}
	for _, ck := range b.Cookies() {
		if ck.Name == "sekisho" {
			t.Errorf("signed out, the browser still holds the session cookie %+v", ck)
		}
	}
	if got := fetchStatus(t, b, "/api/me"); got != 401 {
		t.Errorf("/api/me signed out: status %d, want 401", got)
	}
}

// li waits in ssh with a terminal while kenji approves in the browser;
// li's shell opens, and the session page names the request and approval.
func TestWebApproveWhileSSHWaits(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := approvalVariant(t, "15m", withWeb(port, nil))
	c := variantConsole(v, port)

	tm := waitingTerminal(t, v, "li", "li+db-jp-01")
	tm.waitScreen("Reason (ticket and what you will do):")
	reason := "INC-5150 replica lag on db-jp-01, rebuild the index"
	tm.send(reason, "Enter")
	tm.waitScreen("Duration (at most 2h0m0s)")
	tm.send("45m", "Enter")
	tm.waitScreen("is waiting for 1 approval(s)")
	id := regexp.MustCompile(`request (\d+) is waiting`).FindStringSubmatch(tm.screen())[1]

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	b.WaitText("#pending-requests", reason)
	b.Go(c.url + "/requests")
	req := "#request-" + id
	b.WaitText(req+" .request-reason", reason)
	screenshot(t, b, "requests")
	comment := "checked with the DBA lead"
	b.Find(req + " input.comment").Type(comment)
	b.Find(req + " button.approve").Click()

	tm.waitScreen(`approved by kenji ("` + comment + `"); connecting to db-jp-01`)
	tm.send("echo approved-$((6*7))", "Enter")
	tm.waitScreen("approved-42")

	b.WaitURL("/requests")
	b.WaitText("#recent-requests", reason)
	if n := len(b.FindAll(req)); n != 0 {
		t.Errorf("request %s still shown pending after approval", id)
	}
	noSevere(t, b, "requests")

	s := sessionOn(t, v.config, "li", "db-jp-01", "approved-", false)
	b.Go(c.url + "/sessions/" + s.ID)
	b.WaitText("#request-reason", reason)
	b.WaitText("#approvals", "approved by kenji")
	b.WaitText("#approvals", comment)
	if got := b.Find("#integrity").Attr("data-state"); got != "live" {
		t.Errorf("integrity of the live session = %q, want live", got)
	}

	// The overview highlights the live cross-border session (li of a CN
	// affiliate on a JP target).
	b.Go(c.url + "/")
	b.Find(fmt.Sprintf(`#live-sessions tr.cross-border[data-session=%q]`, s.ID))
	b.Find("#cross-border-chart")
	if !screenshots() {
		return
	}

	// For the README: more cross-border sessions in the chart, a lock and
	// the report.
	for _, tech := range []string{"aiko", "aiko", "aiko"} {
		if r := run(t, v.ssh(ctxT(t), tech, tech+"+web-sg-01", "true"), nil); r.code != 0 {
			t.Fatalf("%s to web-sg-01: exit %d, %q", tech, r.code, r.stderr)
		}
	}
	b.Go(c.url + "/")
	b.Find(fmt.Sprintf(`#live-sessions tr.cross-border[data-session=%q]`, s.ID))
	b.WaitText("#chart-total", "4")
	screenshot(t, b, "overview")

	b.Go(c.url + "/locks")
	b.Find(`#lock-kind option[value="technician"]`).Click()
	b.Find("#lock-name").Type("wei")
	b.Find("#lock-reason").Type("INC-5151 key reported lost; until it is replaced")
	b.Find("#lock").Click()
	b.WaitText("#locks", "wei")
	if until := b.Find("#locks tbody tr td:nth-child(6)").Text(); until == "removed" {
		t.Errorf("a lock in force until removed reads %q in its Until column", until)
	}
	screenshot(t, b, "locks")

	b.Go(c.url + "/reports/cross-border")
	b.WaitText("#report", "li")
	screenshot(t, b, "report")
}

// A recording replays in the browser: verified, with its commands as jump
// points, seeking forwards and back, and a speed change keeping the place.
func TestWebReplayAndSeek(t *testing.T) {
	t.Parallel()
	c := demoConsole(t)
	m := randHex(t)
	alpha, beta, gamma := "alpha-"+m+"-42", "beta-"+m+"-48", "gamma-"+m+"-54"
	tm := shellSession(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	tm.send("echo alpha-"+m+"-$((6*7))", "Enter")
	tm.waitScreen(alpha + "\nprompt>")
	// The pauses are part of the recording: the outputs lie seconds apart.
	tm.send("sleep 2; echo beta-"+m+"-$((6*8))", "Enter")
	tm.waitScreen(beta + "\nprompt>")
	tm.send("sleep 2; echo gamma-"+m+"-$((6*9))", "Enter")
	tm.waitScreen(gamma)
	tm.send("exit", "Enter")
	tm.waitScreen("ssh-exited-0")
	s := sessionOn(t, env.state.Config, "aiko", "db-jp-01", alpha, true)

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	page := c.url + "/sessions/" + s.ID
	b.Go(page)
	webdriver.Wait(t, "the sealed recording to verify", func() bool {
		if b.Find("#integrity").Attr("data-state") == "verified" {
			return true
		}
		b.Go(page)
		return false
	})
	b.WaitText("#meta-technician", "aiko")
	duration := waitPlayerLoaded(t, b)
	if strings.Contains(playerText(b), beta) {
		t.Errorf("before any seek the player already shows %q", beta)
	}

	jumpBeta, tBeta := jumpTo(t, b, "sleep 2; echo beta-"+m)
	_, tGamma := jumpTo(t, b, "sleep 2; echo gamma-"+m)
	if !(tBeta > 0 && tGamma >= tBeta+2 && duration >= tGamma+2) {
		t.Fatalf("timeline times: beta %v, gamma %v, duration %v: want the 2 s pauses between them", tBeta, tGamma, duration)
	}

	// A jump seeks to the command and plays: its output follows.
	b.Find(jumpBeta).Click()
	waitPlayerText(t, b, beta)
	if now := playerNumber(b, "getCurrentTime"); !(now >= tBeta) {
		t.Errorf("after the jump to %v the player is at %v", tBeta, now)
	}
	b.Exec(`window.sekishoPlayer.pause();`)

	// Seeking through the player's API: to the end, then back to between
	// the third command and its output.
	seek(t, b, duration)
	waitPlayerText(t, b, gamma)
	mid := tGamma + 0.5
	seek(t, b, mid)
	webdriver.Wait(t, fmt.Sprintf("the player at %.1fs to show %q and not yet %q", mid, beta, gamma), func() bool {
		txt := playerText(b)
		return strings.Contains(txt, beta) && strings.Contains(txt, "echo gamma-"+m+"-$((6*9))") && !strings.Contains(txt, gamma)
	})
	if screenshots() {
		// The whole page in the viewport: integrity, who, the decision, the
		// player and the first events.
		b.Exec(`document.documentElement.style.zoom = "0.6"; window.scrollTo(0, 0);`)
		screenshot(t, b, "session")
		b.Exec(`document.documentElement.style.zoom = "";`)
	}

	// A speed change replaces the player where it was.
	b.Exec(`window.sekishoPlayer.e2eOld = true;`)
	b.Find(`#speed option[value="4"]`).Click()
	webdriver.Wait(t, "the player at 4x", func() bool {
		return b.Exec(`return !!window.sekishoPlayer && !window.sekishoPlayer.e2eOld;`) == true
	})
	if got := b.Find("#speed").Property("value"); got != "4" {
		t.Errorf("speed select = %v, want 4", got)
	}
	waitSeen(t, fmt.Sprintf("the 4x player to stay at %.1fs showing %q", mid, beta), func() (bool, string) {
		at, txt := playerNumber(b, "getCurrentTime"), playerText(b)
		return math.Abs(at-mid) < 0.5 && strings.Contains(txt, beta),
			fmt.Sprintf("at %.1fs, terminal %q", at, strings.Join(strings.Fields(txt), " "))
	})
	b.Exec(`window.sekishoPlayer.play();`)
	waitPlayerText(t, b, gamma)
	noSevere(t, b, "session")
}

// jumpTo returns the CSS selector of the timeline's jump link to the
// command starting with command, and its time.
func jumpTo(t *testing.T, b *webdriver.Browser, command string) (string, float64) {
	t.Helper()
	b.Find("#timeline li.event")
	for i, li := range b.FindAll("#timeline > li") {
		if !strings.Contains(li.Text(), command) {
			continue
		}
		sel := fmt.Sprintf("#timeline > li:nth-child(%d) a.jump", i+1)
		at, err := strconv.ParseFloat(b.Find(sel).Attr("data-time"), 64)
		if err != nil {
			t.Fatalf("%s: data-time: %v", sel, err)
		}
		return sel, at
	}
	t.Fatalf("the timeline has no command %q:\n%s", command, b.Find("#timeline").Text())
	return "", 0
}

// seek moves the player to at seconds and waits until it is there.
func seek(t *testing.T, b *webdriver.Browser, at float64) {
	t.Helper()
	b.Exec(`return Promise.resolve(window.sekishoPlayer.seek(arguments[0])).then(() => true);`, at)
	webdriver.Wait(t, fmt.Sprintf("the player at %.1fs", at), func() bool {
		return math.Abs(playerNumber(b, "getCurrentTime")-at) < 0.3
	})
}

// searchSessions searches as a person does, typing into the box, and
// returns the IDs of the rows found.
func searchSessions(t *testing.T, b *webdriver.Browser, c console, q string) []string {
	t.Helper()
	b.Go(c.url + "/sessions")
	box := b.Find("#q")
	box.Clear()
	box.Type(q)
	b.Find("#search").Click()
	b.WaitURL("q=" + url.QueryEscape(q))
	b.Find("#sessions, #no-sessions")
	var ids []string
	for _, row := range b.FindAll("#sessions tr[data-session]") {
		ids = append(ids, row.Attr("data-session"))
	}
	return ids
}

// What a technician typed is found by the search box, by a substring too;
// search syntax in a query is taken literally, never an error.
func TestWebSearchFindsTypedCommand(t *testing.T) {
	t.Parallel()
	c := demoConsole(t)
	marker := "find-me-" + randHex(t)
	tm := shellSession(t, sshCmd(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	tm.send("echo "+marker, "Enter")
	tm.waitScreen("\n" + marker + "\n") // the output, not the typed line
	tm.send("exit", "Enter")
	tm.waitScreen("ssh-exited-0")
	s := sessionOn(t, env.state.Config, "aiko", "db-jp-01", marker, true)

	b := startBrowser(t)
	c.signIn(t, b, "kenji")
	// The index fills about a second after the session ends.
	webdriver.Wait(t, "the search to find session "+s.ID, func() bool {
		return len(searchSessions(t, b, c, marker)) > 0
	})
	if ids := searchSessions(t, b, c, marker); len(ids) != 1 || ids[0] != s.ID {
		t.Errorf("search %q found %v, want exactly [%s]", marker, ids, s.ID)
	}
	b.WaitText("#sessions .snippet-text", marker)
	screenshot(t, b, "sessions")
	sub := marker[3 : len(marker)-2] // "d-me-…", cut at both ends
	if ids := searchSessions(t, b, c, sub); len(ids) != 1 || ids[0] != s.ID {
		t.Errorf("search for the substring %q found %v, want exactly [%s]", sub, ids, s.ID)
	}

	for _, q := range []string{`"`, `*`, `(`, `)`, `NEAR`, `"` + marker, marker + `*`, `(` + marker, marker + ` NEAR me`,
		`NEAR(find me)`, `find OR me`, `"find" AND "me"`, `find-me-" OR "x`, `^find`, `me:find`, `{find}`} {
		b.Go(c.url + "/sessions?q=" + url.QueryEscape(q))
		b.Find("#sessions, #no-sessions, #error-message")
		if errs := b.FindAll("#error-message"); len(errs) != 0 {
			t.Errorf("search %q: error page %q", q, errs[0].Text())
		}
	}
	noSevere(t, b, "sessions")
}

// Payloads in a request's reason, a typed command and a session's output
// (an OSC 8 link among them) are shown as text on every page and in the
// player, and never run.
func TestWebUntrustedTextStaysInert(t *testing.T) {
	t.Parallel()
	const (
		img    = `<img src=x onerror=alert(1)>`
		script = `<script>alert(2)</script>`
		js     = `javascript:alert(3)`
		shown  = `<img src=x onerror=alert(5)>`
	)
	port := freePort(t)
	v := approvalVariant(t, "15m", withWeb(port, nil))
	c := variantConsole(v, port)
	m := randHex(t)

	reason := "INC-666 " + img + " " + script + " " + js
	r := v.command(t, "li", "request", "db-jp-01", "--reason", "'"+reason+"'")
	if r.code != 0 || !strings.Contains(r.stdout, "filed") {
		t.Fatalf("li's request: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	typed := "echo 'xss-" + m + " " + script + " " + img + " " + js + "'"
	tm := shellSession(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01").Args)
	tm.send(typed, "Enter")
	tm.waitScreen("\nxss-" + m + " <script>")
	tm.send(`printf '\033]8;;javascript:alert(4)\033\\click-me\033]8;;\033\\\n'`, "Enter")
	tm.waitScreen("click-me")
	tm.send(`printf '`+shown+`\n'`, "Enter")
	tm.send("exit", "Enter")
	tm.waitScreen("ssh-exited-0")
	s := sessionOn(t, v.config, "aiko", "db-jp-01", "xss-"+m, true)

	b := startBrowser(t)
	c.signIn(t, b, "kenji")

	b.WaitText("#pending-requests .reason", reason)
	inert(t, b, "overview")
	b.Go(c.url + "/requests")
	b.WaitText(".request-reason", reason)
	inert(t, b, "requests")

	b.Go(c.url + "/sessions/" + s.ID)
	b.WaitText("#timeline", typed)
	duration := waitPlayerLoaded(t, b)
	seek(t, b, duration)
	waitPlayerText(t, b, "xss-"+m+" "+script+" "+img+" "+js)
	waitPlayerText(t, b, "click-me")
	waitPlayerText(t, b, shown)
	inert(t, b, "session")

	webdriver.Wait(t, "the search to find session "+s.ID, func() bool {
		return len(searchSessions(t, b, c, "xss-"+m)) > 0
	})
	b.WaitText("#sessions .snippet-text", "xss-"+m)
	if got := b.Find("#sessions .snippet-text").Text(); !strings.Contains(got, script) && !strings.Contains(got, img) {
		t.Errorf("snippet %q shows neither payload as text", got)
	}
	inert(t, b, "search")
	hardening.Report(t, "28", "`<img onerror>`, `<script>` and `javascript:` in a request reason, a typed command and terminal output, and an OSC 8 `javascript:` "+
		"hyperlink in output: shown as text on the overview, requests, session (timeline and player) and search pages of headless Chromium; no dialog, "+
		"no javascript: link, no element made, no CSP violation")
}

// inert fails the test if the page opened a dialog, holds a javascript:
// link (the player's terminal included), an element a payload would have
// made, or logged an error or CSP violation.
func inert(t *testing.T, b *webdriver.Browser, page string) {
	t.Helper()
	if text, open := b.AlertText(); open {
		t.Fatalf("%s: a payload opened an alert: %q", page, text)
	}
	if links := javascriptLinks(b); len(links) != 0 {
		t.Errorf("%s: links that run script: %v", page, links)
	}
	made := b.Exec(`return Array.from(document.querySelectorAll('img[src="x"], [onerror], [onclick], script'))
  .filter(e => e.tagName !== "SCRIPT" || /alert\(/.test(e.textContent))
  .map(e => e.outerHTML);`)
	if list, _ := made.([]any); len(list) != 0 {
		t.Errorf("%s: elements made from untrusted text: %v", page, list)
	}
	noSevere(t, b, page)
}

// sara reviews SG sessions only: a JP session is not in her list, not
// found by URL nor through the API, as if it did not exist; an SG one
// replays.
func TestWebReviewerLimitedToSG(t *testing.T) {
	t.Parallel()
	c := demoConsole(t)
	m := randHex(t)
	for _, target := range []string{"db-jp-01", "web-sg-01"} {
		if r := run(t, sshCmd(ctxT(t), "aiko", "aiko+"+target, "echo seen-on-"+target+"-"+m), nil); r.code != 0 {
			t.Fatalf("aiko to %s: exit %d, %q", target, r.code, r.stderr)
		}
	}
	jp := sessionOn(t, env.state.Config, "aiko", "db-jp-01", "seen-on-db-jp-01-"+m, true)
	sg := sessionOn(t, env.state.Config, "aiko", "web-sg-01", "seen-on-web-sg-01-"+m, true)

	b := startBrowser(t)
	c.signIn(t, b, "sara")
	b.Go(c.url + "/sessions?technician=aiko")
	b.Find(fmt.Sprintf(`#sessions tr[data-session=%q]`, sg.ID))
	if n := len(b.FindAll(fmt.Sprintf(`tr[data-session=%q]`, jp.ID))); n != 0 {
		t.Errorf("sara's sessions list shows the JP session %s", jp.ID)
	}
	b.Go(c.url + "/sessions?target=db-jp-01")
	b.Find("#no-sessions")

	b.Go(c.url + "/sessions/" + jp.ID)
	b.WaitText("#error-message", "no session "+jp.ID)
	b.WaitText("h1", "Not found")
	const unknown = "00000000-0000-0000-0000-000000000000"
	b.Go(c.url + "/sessions/" + unknown)
	b.WaitText("#error-message", "no session "+unknown)

	for _, path := range []string{"/api/sessions/" + jp.ID, "/api/sessions/" + jp.ID + "/cast", "/api/sessions/" + jp.ID + "/timeline"} {
		if got := fetchStatus(t, b, path); got != 404 {
			t.Errorf("sara's %s: status %d, want 404", path, got)
		}
	}
	if got := fetchStatus(t, b, "/api/sessions/"+sg.ID); got != 200 {
		t.Errorf("sara's /api/sessions/%s (SG): status %d, want 200", sg.ID, got)
	}
	ids := b.Exec(`return fetch("/api/sessions?technician=aiko").then(r => r.json()).then(j => j.sessions.map(s => s.id));`)
	if list, _ := ids.([]any); !containsAny(list, sg.ID) || containsAny(list, jp.ID) {
		t.Errorf("sara's /api/sessions: %v; want %s and not %s", ids, sg.ID, jp.ID)
	}
	b.Logs() // the 404s above are logged as failed loads: expected

	b.Go(c.url + "/sessions/" + sg.ID)
	b.WaitText("#meta-technician", "aiko")
	seek(t, b, waitPlayerLoaded(t, b))
	waitPlayerText(t, b, "seen-on-web-sg-01-"+m)
	noSevere(t, b, "SG session")
}

func containsAny(list []any, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
