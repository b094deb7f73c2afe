package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/webdriver"
)

// console is a web console the tests sign in to: its URL and how to ask
// for a sign-in link over SSH.
type console struct {
	url   string
	login func(t *testing.T, tech string) result // ssh TECH@bastion login
}

// demoConsole is the shared demo's console, at the URL its state file
// gives.
func demoConsole(t *testing.T) console {
	t.Helper()
	var st struct {
		Web string `json:"web"`
	}
	b, err := os.ReadFile(filepath.Join(env.dir, "demo.json"))
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.Web == "" {
		t.Fatalf("the demo's state names no web console (web): %v", err)
	}
	return console{url: strings.TrimRight(st.Web, "/"), login: func(t *testing.T, tech string) result {
		t.Helper()
		return demoLogins().command(t, tech, "login")
	}}
}

// withWeb is a variant's config edit that gives it a console of its own
// on a free port (startVariant strips the demo's), applied after edit.
func withWeb(port string, edit func(string) string) func(string) string {
	return func(cfg string) string {
		if edit != nil {
			cfg = edit(cfg)
		}
		return cfg + "\nweb:\n  listen: 127.0.0.1:" + port + "\n"
	}
}

// variantConsole is the console of a variant started with withWeb(port).
func variantConsole(v *variant, port string) console {
	return console{url: "http://127.0.0.1:" + port, login: func(t *testing.T, tech string) result {
		t.Helper()
		return v.command(t, tech, "login")
	}}
}

var signInLink = regexp.MustCompile(`(?m)^(http://\S+/login/\S+)$`)

// link asks for tech's sign-in link over real OpenSSH.
func (c console) link(t *testing.T, tech string) string {
	t.Helper()
	r := c.login(t, tech)
	m := signInLink.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "it works once and signs you in as "+tech+":") {
		t.Fatalf("ssh %s@bastion login: exit %d, stdout %q, stderr %q", tech, r.code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(m[1], c.url+"/login/") {
		t.Fatalf("sign-in link %q is not on the console %s", m[1], c.url)
	}
	return m[1]
}

// signIn signs tech in on b with a link from ssh, as a person would:
// open it, check whose it is, continue.
func (c console) signIn(t *testing.T, b *webdriver.Browser, tech string) {
	t.Helper()
	b.Go(c.link(t, tech))
	b.WaitText("#link-technician", tech)
	b.Find("#continue").Click()
	b.WaitText("#me-name", tech)
}

// browserSlots bounds the browsers running at once: each costs about
// 400 MiB and a share of the CPU the SSH side needs too.
var browserSlots = make(chan struct{}, 3)

// startBrowser starts a headless Chromium once a slot is free.
func startBrowser(t *testing.T) *webdriver.Browser {
	t.Helper()
	browserSlots <- struct{}{}
	t.Cleanup(func() { <-browserSlots }) // runs after the browser's own cleanup
	return webdriver.Start(t)
}

// noSevere fails the test for JavaScript errors and CSP violations the
// browser logged since the last look.
func noSevere(t *testing.T, b *webdriver.Browser, page string) {
	t.Helper()
	for _, e := range b.Logs() {
		if e.Level == "SEVERE" {
			t.Errorf("%s: browser logged %s: %s", page, e.Level, e.Message)
		}
	}
}

// screenshot saves the viewport as NAME.png into $SEKISHO_SCREENSHOTS, for
// the README; without it, nothing.
func screenshot(t *testing.T, b *webdriver.Browser, name string) {
	t.Helper()
	dir := os.Getenv("SEKISHO_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b.Screenshot(filepath.Join(dir, name+".png"))
}

func screenshots() bool { return os.Getenv("SEKISHO_SCREENSHOTS") != "" }

// fetchStatus is the HTTP status the page's own fetch of path gets, with
// the browser's cookies.
func fetchStatus(t *testing.T, b *webdriver.Browser, path string) int {
	t.Helper()
	got := b.Exec(`return fetch(arguments[0], {credentials: "same-origin"}).then(r => r.status);`, path)
	n, ok := got.(float64)
	if !ok {
		t.Fatalf("fetch %s answered %v (%T), not a status", path, got, got)
	}
	return int(n)
}

// playerNumber is what a method of window.sekishoPlayer (getCurrentTime,
// getDuration) answers, promise or not; NaN while there is no player.
func playerNumber(b *webdriver.Browser, method string) float64 {
	got := b.Exec(`const p = window.sekishoPlayer;
if (!p) { return null; }
return Promise.resolve(p[arguments[0]]()).then(v => (typeof v === "number" && isFinite(v)) ? v : null);`, method)
	if n, ok := got.(float64); ok {
		return n
	}
	return math.NaN()
}

// playerText is the terminal the player shows now, as text.
func playerText(b *webdriver.Browser) string {
	got, _ := b.Exec(`const t = document.querySelector("#player pre.ap-term-text") || document.querySelector("#player .ap-term");
return t ? t.textContent : "";`).(string)
	return got
}

// playerCols is the number of columns of the player's terminal, or 0.
func playerCols(b *webdriver.Browser) int {
	got, _ := b.Exec(`const t = document.querySelector("#player .ap-term");
return t ? getComputedStyle(t).getPropertyValue("--term-cols") : "";`).(string)
	n, _ := strconv.Atoi(strings.TrimSpace(got))
	return n
}

// waitPlayerText waits until the player's terminal shows want.
func waitPlayerText(t *testing.T, b *webdriver.Browser, want string) {
	t.Helper()
	webdriver.Wait(t, fmt.Sprintf("the player's terminal to show %q", want), func() bool {
		return strings.Contains(playerText(b), want)
	})
}

// waitPlayerLoaded waits until the player knows the recording's length.
func waitPlayerLoaded(t *testing.T, b *webdriver.Browser) float64 {
	t.Helper()
	var d float64
	webdriver.Wait(t, "the player to load the recording (a duration > 0)", func() bool {
		d = playerNumber(b, "getDuration")
		return d > 0
	})
	return d
}

// javascriptLinks lists the href of every <a> in the document, the
// player's included, whose href would run script.
func javascriptLinks(b *webdriver.Browser) []any {
	got, _ := b.Exec(`return Array.from(document.querySelectorAll("a[href]"))
  .map(a => a.getAttribute("href"))
  .filter(h => /^\s*javascript:/i.test(h));`).([]any)
	return got
}

// shellSession starts ssh with a terminal in tmux (args as exec.Cmd.Args
// gives them), waits for the remote prompt and sets a short one.
func shellSession(t *testing.T, args []string) *tmux {
	t.Helper()
	tm := newTmux(t, 120, 30, strings.Join(append(args, "-tt"), " ")+"; echo ssh-exited-$?; sleep 3600")
	waitUntil(t, 30*time.Second, "the remote shell's prompt", func() bool {
		lines := strings.Split(strings.TrimRight(tm.screen(), "\n "), "\n")
		last := strings.TrimSpace(lines[len(lines)-1])
		return strings.HasSuffix(last, "#") || strings.HasSuffix(last, "$")
	})
	tm.send("PS1='prompt> '", "Enter")
	tm.waitScreen("prompt> ")
	return tm
}

// sessionsOn lists the sessions of the server with config, newest first.
func sessionsOn(t *testing.T, config string) []session {
	t.Helper()
	out, err := sekishoOn(config, "sessions", "--json", "--limit", "1000")
	if err != nil {
		t.Fatalf("sekisho sessions: %v\n%s", err, out)
	}
	var list []session
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sekisho sessions --json: %v\n%s", err, out)
	}
	return list
}

// sessionOn waits until the server with config has a session of tech to
// target whose recording shows marker, ended if ended, and returns it.
func sessionOn(t *testing.T, config, tech, target, marker string, ended bool) session {
	t.Helper()
	var found session
	waitUntil(t, 30*time.Second, fmt.Sprintf("a session of %s to %s recording %q (ended %v)", tech, target, marker, ended), func() bool {
		for _, s := range sessionsOn(t, config) {
			if s.Technician != tech || s.Target != target || (s.EndedAt != "") != ended {
				continue
			}
			if ev, err := sekishoOn(config, "replay", "--events", s.ID); err == nil && strings.Contains(ev, marker) {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// waitSeen is webdriver.Wait for a condition whose last observation is
// worth reading when it never holds.
func waitSeen(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(webdriver.Timeout())
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last seen: %s", webdriver.Timeout(), what, seen)
		}
		time.Sleep(50 * time.Millisecond) // polling the page for a condition, with a deadline
	}
}
