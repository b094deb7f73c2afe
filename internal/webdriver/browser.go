package webdriver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	chromedriverPath = "/usr/bin/chromedriver"
	chromiumPath     = "/usr/bin/chromium"
	pollInterval     = 50 * time.Millisecond
)

// Browser is one WebDriver session in its own headless Chromium. Its methods
// fail the test that started it, so call them from that test's goroutine, or
// from a subtest through In.
type Browser struct {
	t       testing.TB
	base    string // http://127.0.0.1:port/session/id
	client  *http.Client
	profile string // Chromium's --user-data-dir
	pid     int    // chromedriver, leader of the process group
}

// Timeout is how long waits last: 10 s, multiplied by the number in
// SEKISHO_TEST_TIMEOUT_SCALE when it is set, for slow machines.
func Timeout() time.Duration {
	scale, err := strconv.ParseFloat(os.Getenv("SEKISHO_TEST_TIMEOUT_SCALE"), 64)
	if err != nil || scale <= 0 {
		scale = 1
	}
	return time.Duration(scale * float64(10*time.Second))
}

// Wait polls cond until it holds and fails the test, naming what it waited
// for, when it does not within Timeout.
func Wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout(), what)
		}
		time.Sleep(pollInterval)
	}
}

// Start runs chromedriver on a free loopback port, opens a session in a fresh
// headless Chromium and registers a cleanup that ends both.
func Start(t testing.TB) *Browser {
	t.Helper()
	if _, err := os.Stat(chromedriverPath); err != nil {
		if os.Getenv("SEKISHO_NO_BROWSER") == "1" {
			t.Skipf("browser test skipped (SEKISHO_NO_BROWSER=1): %v", err)
		}
		t.Fatalf("browser tests need chromedriver: %v (apt-get install chromium chromium-driver, or set SEKISHO_NO_BROWSER=1 to skip them)", err)
	}
	profile := t.TempDir() // removed after the cleanup below has killed Chromium

	// --port=0 lets chromedriver bind a free port itself and print it, so no
	// other test can take the port between choosing it and listening on it.
	// It picks the port on one address family and binds it on the other
	// too, which another process may hold: then it exits, and is started
	// again.
	var (
		b    *Browser
		port int
		out  *portWriter
	)
	for attempt := 1; ; attempt++ {
		out = &portWriter{found: make(chan int, 1)}
		cmd := exec.Command(chromedriverPath, "--port=0")
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = time.Second // Chromium may hold the output pipe open
		if err := cmd.Start(); err != nil {
			t.Fatalf("start chromedriver: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case port = <-out.found:
			b = &Browser{t: t, client: &http.Client{}, profile: profile, pid: cmd.Process.Pid}
			t.Cleanup(func() { b.stop(exited) })
		case err := <-exited:
			if attempt < 5 && strings.Contains(out.String(), "Address already in use") {
				continue
			}
			t.Fatalf("chromedriver exited before listening: %v\n%s", err, out.String())
		case <-time.After(Timeout()):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("chromedriver did not report its port within %s:\n%s", Timeout(), out.String())
		}
		break
	}
	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	Wait(t, "chromedriver /status ready", func() bool {
		var status struct{ Ready bool }
		return b.call(http.MethodGet, server+"/status", nil, &status) == nil && status.Ready
	})

	// What headless Chromium needs as root on a machine with no display and a
	// closed network: without the background-networking flags it spends its
	// time on refused connections to Google services.
	args := []string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--window-size=1280,900", "--user-data-dir=" + profile,
	}
	caps := map[string]any{
		"browserName":             "chrome",
		"unhandledPromptBehavior": "ignore",
		"timeouts":                map[string]int64{"pageLoad": Timeout().Milliseconds(), "script": Timeout().Milliseconds()},
		"goog:loggingPrefs":       map[string]string{"browser": "ALL"},
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args":   args,
		},
	}
	var session struct{ SessionID string }
	if err := b.call(http.MethodPost, server+"/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": caps}}, &session); err != nil {
		t.Fatalf("new browser session: %v\nchromedriver output:\n%s", err, out.String())
	}
	b.base = server + "/session/" + session.SessionID
	return b
}

// In returns the same browser failing t instead, for use in a subtest: a
// subtest must not fail its parent with t.Fatalf.
func (b *Browser) In(t testing.TB) *Browser {
	in := *b
	in.t = t
	return &in
}

// stop ends the session, which closes Chromium, then kills the process group
// in case anything was left, and waits for chromedriver to exit.
func (b *Browser) stop(exited chan error) {
	if b.base != "" {
		if err := b.call(http.MethodDelete, b.base, nil, nil); err != nil {
			b.t.Logf("end browser session: %v", err)
		}
	}
	_ = syscall.Kill(-b.pid, syscall.SIGKILL)
	<-exited
}

// Error is an error the WebDriver server returned; Code is the W3C error
// code, such as "no such element" or "unexpected alert open".
type Error struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func isCode(err error, code string) bool {
	var wdErr *Error
	return errors.As(err, &wdErr) && wdErr.Code == code
}

// call sends one WebDriver command and decodes the "value" of its answer
// into result, when result is not nil.
func (b *Browser) call(method, url string, body, result any) error {
	var reqBody io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*Timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, reqBody)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var envelope struct{ Value json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&envelope); err != nil {
		return fmt.Errorf("%s %s: status %s: decode answer: %w", method, url, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		wdErr := &Error{}
		if err := json.Unmarshal(envelope.Value, wdErr); err != nil || wdErr.Code == "" {
			return fmt.Errorf("%s %s: status %s: %s", method, url, resp.Status, envelope.Value)
		}
		return wdErr
	}
	if result == nil {
		return nil
	}
	return json.Unmarshal(envelope.Value, result)
}

// must runs a command on the session and fails the test if it fails.
func (b *Browser) must(what, method, path string, body, result any) {
	b.t.Helper()
	if err := b.call(method, b.base+path, body, result); err != nil {
		b.t.Fatalf("browser %s: %v", what, err)
	}
}

// Go navigates to url and returns once the page has loaded.
func (b *Browser) Go(url string) {
	b.t.Helper()
	b.must("go to "+url, http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// Resize sets the browser window's outer size in CSS pixels: a phone's
// screen, say. Headless Chromium's viewport is then that size.
func (b *Browser) Resize(width, height int) {
	b.t.Helper()
	b.must(fmt.Sprintf("resize to %dx%d", width, height), http.MethodPost, "/window/rect", map[string]int{"width": width, "height": height}, nil)
}

// URL is the current page's URL.
func (b *Browser) URL() string {
	b.t.Helper()
	var url string
	b.must("URL", http.MethodGet, "/url", nil, &url)
	return url
}

// Title is the current page's title.
func (b *Browser) Title() string {
	b.t.Helper()
	var title string
	b.must("title", http.MethodGet, "/title", nil, &title)
	return title
}

// WaitURL waits until the current URL contains substring.
func (b *Browser) WaitURL(substring string) {
	b.t.Helper()
	Wait(b.t, "URL containing "+strconv.Quote(substring), func() bool {
		var url string
		return b.call(http.MethodGet, b.base+"/url", nil, &url) == nil && strings.Contains(url, substring)
	})
}

// Exec runs script as the body of a function with args as its arguments
// (an *Element becomes the DOM element) and returns what it returns.
func (b *Browser) Exec(script string, args ...any) any {
	b.t.Helper()
	if args == nil {
		args = []any{}
	}
	var result any
	b.must("execute script", http.MethodPost, "/execute/sync", map[string]any{"script": script, "args": args}, &result)
	return result
}

// Screenshot writes a PNG of the browser's viewport to path.
func (b *Browser) Screenshot(path string) {
	b.t.Helper()
	var encoded string
	b.must("screenshot", http.MethodGet, "/screenshot", nil, &encoded)
	png, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		b.t.Fatalf("browser screenshot: decode: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatalf("browser screenshot: %v", err)
	}
}

// Cookie is a cookie as the browser holds it for the current page.
type Cookie struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Path     string `json:"path"`
	Domain   string `json:"domain"`
	Secure   bool   `json:"secure"`
	HTTPOnly bool   `json:"httpOnly"`
	SameSite string `json:"sameSite"`
	Expiry   int64  `json:"expiry"` // Unix seconds; 0 for a session cookie
}

// Cookies are the cookies visible to the current page, HttpOnly ones
// included.
func (b *Browser) Cookies() []Cookie {
	b.t.Helper()
	var cookies []Cookie
	b.must("cookies", http.MethodGet, "/cookie", nil, &cookies)
	return cookies
}

// LogEntry is one message of the browser console.
type LogEntry struct {
	Level     string `json:"level"` // SEVERE for errors and CSP violations
	Message   string `json:"message"`
	Source    string `json:"source"`
	Timestamp int64  `json:"timestamp"` // Unix milliseconds
}

// Logs returns the console messages logged since the last call, which is
// where Chromium reports JavaScript errors and CSP violations.
func (b *Browser) Logs() []LogEntry {
	b.t.Helper()
	var entries []LogEntry
	b.must("console log", http.MethodPost, "/se/log", map[string]string{"type": "browser"}, &entries)
	return entries
}

// AlertText returns the text of the open alert, confirm or prompt dialog,
// and false if none is open.
func (b *Browser) AlertText() (string, bool) {
	b.t.Helper()
	var text string
	err := b.call(http.MethodGet, b.base+"/alert/text", nil, &text)
	if isCode(err, "no such alert") {
		return "", false
	}
	if err != nil {
		b.t.Fatalf("browser alert text: %v", err)
	}
	return text, true
}

// DismissAlert closes the open dialog as its Cancel button would.
func (b *Browser) DismissAlert() {
	b.t.Helper()
	b.must("dismiss alert", http.MethodPost, "/alert/dismiss", struct{}{}, nil)
}

// portWriter collects chromedriver's output, bounded, and reports the port
// it announces it listens on.
type portWriter struct {
	mu    sync.Mutex
	buf   []byte
	found chan int
	sent  bool
}

var startedOnPort = regexp.MustCompile(`started successfully on port (\d+)`)

func (w *portWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) < 64<<10 {
		w.buf = append(w.buf, p...)
	}
	if m := startedOnPort.FindSubmatch(w.buf); m != nil && !w.sent {
		port, _ := strconv.Atoi(string(m[1]))
		w.found <- port
		w.sent = true
	}
	return len(p), nil
}

func (w *portWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
