package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// apiClient is the console's JSON API as a script uses it (docs/API.md):
// a cookie from a sign-in link, the CSRF token in a header.
type apiClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

// signInAPI signs tech in to c over HTTP with a link from ssh.
func signInAPI(t *testing.T, c console, tech string) *apiClient {
	t.Helper()
	link := c.link(t, tech)
	jar, _ := cookiejar.New(nil)
	a := &apiClient{t: t, base: c.url, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if code, body := a.do("POST", "/login", url.Values{"token": {link[strings.LastIndex(link, "/")+1:]}}); code != http.StatusSeeOther {
		t.Fatalf("POST /login as %s: %d %s", tech, code, body)
	}
	var me struct {
		CSRF string `json:"csrf_token"`
	}
	if code, body := a.do("GET", "/api/me", nil); code != http.StatusOK || json.Unmarshal([]byte(body), &me) != nil || me.CSRF == "" {
		t.Fatalf("GET /api/me as %s: %d %s", tech, code, body)
	}
	a.csrf = me.CSRF
	return a
}

func (a *apiClient) do(method, path string, form url.Values) (int, string) {
	a.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if a.csrf != "" {
		req.Header.Set("X-CSRF-Token", a.csrf)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReviewResidencyIsOneScope: kenji, admin and approver of JP only,
// may decide li's request for db-jp-01 but neither sees nor decides his
// request for web-sg-01 (SG), over SSH nor in the console's API; in the
// console he locks JP targets, not SG ones, and not an affiliate, whom a
// lock stops everywhere. Every refusal says why and is audited.
func TestReviewResidencyIsOneScope(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	v := approvalVariant(t, "15m", withWeb(port, func(cfg string) string {
		const kenji = "  - name: kenji\n    affiliate: operator-jp\n"
		if !strings.Contains(cfg, kenji) {
			t.Fatalf("the demo config has no kenji of operator-jp:\n%s", cfg)
		}
		return strings.Replace(cfg, kenji, kenji+"    review_residency: [JP]\n", 1)
	}))
	jp := fileRequest(t, v, "li", "db-jp-01")
	sg := fileRequest(t, v, "li", "web-sg-01")

	// Over SSH.
	r := v.command(t, "kenji", "approve", sg, "--comment", "looks fine")
	want := "request " + sg + " is outside your review_residency (JP): you may not decide it"
	if r.code != 1 || !strings.Contains(r.stderr, "sekisho: "+want) {
		t.Errorf("ssh kenji@bastion approve %s: exit %d, stdout %q, stderr %q; want 1 and %q", sg, r.code, r.stdout, r.stderr, want)
	}
	for _, args := range [][]string{{"requests"}, {"requests", "--all"}} {
		r := v.command(t, "kenji", args...)
		if r.code != 0 || !regexp.MustCompile(`(?m)^`+jp+`\s+li \(ops-cn\)\s+db-jp-01\s`).MatchString(r.stdout) || strings.Contains(r.stdout, "web-sg-01") {
			t.Errorf("kenji %s: exit %d\n%s\nwant request %s (JP) only", strings.Join(args, " "), r.code, r.stdout, jp)
		}
	}
	if r := v.command(t, "aiko", "requests"); r.code != 0 || !regexp.MustCompile(`(?m)^`+sg+`\s+li \(ops-cn\)\s+web-sg-01\s`).MatchString(r.stdout) {
		t.Errorf("aiko (every residency) requests: exit %d\n%s\nwant request %s", r.code, r.stdout, sg)
	}

	// In the console's API.
	api := signInAPI(t, variantConsole(v, port), "kenji")
	if code, body := api.do("GET", "/api/requests", nil); code != http.StatusOK || !strings.Contains(body, `"target": "db-jp-01"`) || strings.Contains(body, "web-sg-01") {
		t.Errorf("GET /api/requests as kenji: %d\n%s\nwant the JP request only", code, body)
	}
	if code, body := api.do("POST", "/api/requests/"+sg+"/approve", url.Values{"comment": {"looks fine"}}); code != http.StatusForbidden || !strings.Contains(body, want) {
		t.Errorf("POST /api/requests/%s/approve as kenji: %d %s; want 403 and %q", sg, code, body, want)
	}
	for _, tc := range []struct {
		kind, name string
		code       int
		want       string
	}{
		{"affiliate", "ops-cn", http.StatusForbidden, "affiliate ops-cn is not tied to one residency: only someone without a review_residency (all residencies) may lock it; yours is JP"},
		{"target", "web-sg-01", http.StatusForbidden, "target web-sg-01 is outside your review_residency (JP): you may not lock it"},
		{"target", "db-jp-01", http.StatusOK, `"name": "db-jp-01"`},
	} {
		code, body := api.do("POST", "/api/locks", url.Values{"kind": {tc.kind}, "name": {tc.name}, "reason": {"INC-90 maintenance window"}})
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("kenji locks %s %s: %d %s; want %d and %q", tc.kind, tc.name, code, body, tc.code, tc.want)
		}
	}
	// The lock kenji could add is the only one in force; he lifts it.
	out, err := v.cli(t, "locks", "--json")
	if err != nil || strings.Count(out, `"kind"`) != 1 || !strings.Contains(out, "db-jp-01") {
		t.Errorf("locks in force after kenji's: %v\n%s\nwant the db-jp-01 lock alone", err, out)
	}
	if code, body := api.do("DELETE", "/api/locks/1?reason=INC-90+done", nil); code != http.StatusOK {
		t.Errorf("kenji lifts his lock: %d %s", code, body)
	}

	// Every refusal is in the audit log with why.
	var decided, lockRefused int
	for _, e := range v.audit(t) {
		if e["technician"] != "kenji" {
			continue
		}
		if e["kind"] == "request.refused" && strings.Contains(e["detail"], want) {
			decided++
		}
		if e["kind"] == "refused" && strings.Contains(e["detail"], `"action":"lock"`) && strings.Contains(e["detail"], `"why":`) {
			lockRefused++
		}
	}
	if decided != 2 || lockRefused != 2 {
		t.Errorf("audited: %d refused approvals (want 2: SSH and console), %d refused locks (want 2)", decided, lockRefused)
	}
	// Within the scope, kenji decides as before; the SG request waits
	// for an approver of SG.
	if r := v.command(t, "kenji", "approve", jp); r.code != 0 || !strings.Contains(r.stdout, "granted until") {
		t.Errorf("kenji approve %s (JP): exit %d, %q, %q", jp, r.code, r.stdout, r.stderr)
	}
	if r := v.command(t, "aiko", "approve", sg); r.code != 0 || !strings.Contains(r.stdout, "pending, 1 of 2 approvals") {
		t.Errorf("aiko approve %s (SG): exit %d, %q, %q", sg, r.code, r.stdout, r.stderr)
	}
}
