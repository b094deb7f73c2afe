package webdriver

import (
	"bytes"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const page = `<!doctype html>
<html><head><title>webdriver test</title></head>
<body>
<button id="change">change</button> <p id="out">before</p>
<input id="name"> <p id="echo"></p>
<button id="alert">alert</button>
<script>
document.getElementById("change").onclick = () => {
	setTimeout(() => { document.getElementById("out").textContent = "after click"; }, 100);
};
document.getElementById("name").oninput = (e) => {
	document.getElementById("echo").textContent = "hello " + e.target.value;
};
document.getElementById("alert").onclick = () => alert("from the button");
document.cookie = "theme=dark; path=/";
</script>
</body></html>`

func serve(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "s3cret", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	mux.HandleFunc("/xss", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>xss</title><p id="name">` + r.URL.Query().Get("name") + `</p>`))
	})
	mux.HandleFunc("/escaped", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>escaped</title><p id="name">` + html.EscapeString(r.URL.Query().Get("name")) + `</p>`))
	})
	mux.HandleFunc("/csp", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "script-src 'none'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>csp</title><script>document.body.dataset.ran = "yes";</script>`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestBrowser(t *testing.T) {
	base := serve(t)
	b := Start(t)
	b.Go(base + "/")
	if got := b.Title(); got != "webdriver test" {
		t.Errorf("Title = %q, want %q", got, "webdriver test")
	}
	if got := b.URL(); got != base+"/" {
		t.Errorf("URL = %q, want %q", got, base+"/")
	}

	t.Run("click changes text", func(t *testing.T) {
		b := b.In(t)
		if got := b.Find("#out").Text(); got != "before" {
			t.Fatalf("text before click = %q", got)
		}
		b.Find("#change").Click()
		b.WaitText("#out", "after click")
	})

	t.Run("type into an input", func(t *testing.T) {
		b := b.In(t)
		input := b.Find("#name")
		input.Type("technician")
		b.WaitText("#echo", "hello technician")
		if got := input.Property("value"); got != "technician" {
			t.Errorf("value property = %v, want technician", got)
		}
		input.Clear()
		if got := input.Property("value"); got != "" {
			t.Errorf("value after Clear = %v, want empty", got)
		}
		if got := input.Attr("id"); got != "name" {
			t.Errorf("id attribute = %q, want name", got)
		}
		if got := input.Attr("placeholder"); got != "" {
			t.Errorf("absent attribute = %q, want empty", got)
		}
	})

	t.Run("cookies", func(t *testing.T) {
		b := b.In(t)
		byName := map[string]Cookie{}
		for _, c := range b.Cookies() {
			byName[c.Name] = c
		}
		if c := byName["session"]; c.Value != "s3cret" || !c.HTTPOnly || c.SameSite != "Strict" {
			t.Errorf("session cookie = %+v, want s3cret, HttpOnly, SameSite Strict", c)
		}
		if c := byName["theme"]; c.Value != "dark" || c.HTTPOnly {
			t.Errorf("theme cookie = %+v, want dark and not HttpOnly", c)
		}
	})

	t.Run("exec with an element argument", func(t *testing.T) {
		b := b.In(t)
		got := b.Exec("return arguments[0].tagName + ' ' + arguments[1];", b.Find("#out"), 42)
		if got != "P 42" {
			t.Errorf("Exec = %v, want P 42", got)
		}
		if n := len(b.FindAll("button")); n != 2 {
			t.Errorf("FindAll(button) found %d, want 2", n)
		}
		if n := len(b.FindAll(".absent")); n != 0 {
			t.Errorf("FindAll(.absent) found %d, want 0", n)
		}
	})

	t.Run("screenshot is the viewport", func(t *testing.T) {
		b := b.In(t)
		path := filepath.Join(t.TempDir(), "page.png")
		b.Screenshot(path)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("screenshot is not a PNG: %v", err)
		}
		size := b.Exec("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio];").([]any)
		w, h := int(size[0].(float64)), int(size[1].(float64))
		if got := img.Bounds().Size(); got.X != w || got.Y != h || w != 1280 {
			t.Errorf("screenshot is %v, want %dx%d with width 1280", got, w, h)
		}
	})

	t.Run("no alert, then an alert", func(t *testing.T) {
		b := b.In(t)
		if text, open := b.AlertText(); open {
			t.Fatalf("alert %q open before any was raised", text)
		}
		b.Find("#alert").Click()
		var text string
		Wait(t, "the alert", func() bool {
			var open bool
			text, open = b.AlertText()
			return open
		})
		if text != "from the button" {
			t.Errorf("alert text = %q, want %q", text, "from the button")
		}
		b.DismissAlert()
		if text, open := b.AlertText(); open {
			t.Errorf("alert %q still open after DismissAlert", text)
		}
	})

	t.Run("a payload's alert is seen", func(t *testing.T) {
		b := b.In(t)
		b.Go(base + "/xss?name=" + url.QueryEscape(`<img src=x onerror=alert(1)>`))
		var text string
		Wait(t, "the payload's alert", func() bool {
			var open bool
			text, open = b.AlertText()
			return open
		})
		if text != "1" {
			t.Errorf("alert text = %q, want 1", text)
		}
		b.DismissAlert()
	})

	t.Run("an escaped payload opens no alert", func(t *testing.T) {
		b := b.In(t)
		payload := `<img src=x onerror=alert(1)>`
		b.Go(base + "/escaped?name=" + url.QueryEscape(payload))
		if got := b.Find("#name").Text(); got != payload {
			t.Errorf("text = %q, want the payload as text", got)
		}
		if text, open := b.AlertText(); open {
			t.Errorf("alert %q opened", text)
		}
	})

	t.Run("CSP violation is logged", func(t *testing.T) {
		b := b.In(t)
		b.Logs() // drop what earlier pages logged
		b.Go(base + "/csp")
		Wait(t, "a CSP violation in the console log", func() bool {
			for _, entry := range b.Logs() {
				if entry.Level == "SEVERE" && strings.Contains(entry.Message, "Content Security Policy") {
					return true
				}
			}
			return false
		})
		if got := b.Exec("return document.body.dataset.ran || 'no'"); got != "no" {
			t.Errorf("inline script ran despite the CSP: %v", got)
		}
	})
}

// TestStopLeavesNoChromium checks that the cleanup Start registers ends
// every Chromium process of the session.
func TestStopLeavesNoChromium(t *testing.T) {
	var profile string
	t.Run("browser", func(t *testing.T) {
		b := Start(t)
		profile = b.profile
		if n := len(processesWith(t, profile)); n == 0 {
			t.Fatalf("no process runs with the profile %s", profile)
		}
	})
	if left := processesWith(t, profile); len(left) > 0 {
		t.Errorf("processes still running after cleanup: %v", left)
	}
}

// processesWith lists the live processes whose command line mentions s.
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, path := range cmdlines {
		cmdline, err := os.ReadFile(path)
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			args := bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})
			found = append(found, filepath.Base(filepath.Dir(path))+": "+string(args[:min(len(args), 100)]))
		}
	}
	return found
}
