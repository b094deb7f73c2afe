package web_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/web"
)

// secondNode starts another console on f's state store, through a handle
// of its own, with the same people and the same address: a second node
// behind the load balancer.
func (f *fixture) secondNode(t *testing.T) *httptest.Server {
	t.Helper()
	store, err := sqlitestore.Open(t.Context(), f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	brk := broker.New(broker.Config{Technicians: f.techs, Targets: f.targets, Policy: f.policy, Store: store,
		AdminGroups: []string{"admins"}, ReviewerGroups: []string{"reviewers"}, Logger: slog.New(slog.DiscardHandler)})
	srv, err := web.New(web.Config{Broker: brk, Store: store, RecordingDir: t.TempDir(), URL: f.ts.URL,
		Logger: slog.New(slog.DiscardHandler), Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

// A link printed by node 1 signs in through node 2; the browser stays
// signed in whichever node the balancer sends it to, with one CSRF token;
// signing out through node 2 ends it on node 1.
func TestSignInWorksAcrossNodes(t *testing.T) {
	f := newFixture(t, "")
	node1, node2 := f.ts.URL, f.secondNode(t).URL
	link, err := f.link("kenji") // what `ssh … login` printed on node 1
	if err != nil {
		t.Fatal(err)
	}
	tok := link[strings.LastIndex(link, "/")+1:]

	// Cookies are not kept per port: one jar is one browser, whichever
	// node answers.
	b := f.browser(t)
	b.base = node2
	if resp, body := b.do("GET", "/login/"+tok, nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `<span id="link-technician">kenji`) {
		t.Fatalf("node 2 shows node 1's link: %d\n%s", resp.StatusCode, body)
	}
	if resp, body := b.do("POST", "/login", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in through node 2 with node 1's link: %d\n%s", resp.StatusCode, body)
	}
	csrf := map[string]string{}
	for name, base := range map[string]string{"node 1": node1, "node 2": node2} {
		b.base = base
		resp, body := b.do("GET", "/api/me", nil, nil)
		if resp.StatusCode != 200 || !strings.Contains(body, `"technician": "kenji"`) {
			t.Fatalf("signed in through node 2, %s answers %d: %s", name, resp.StatusCode, body)
		}
		_, rest, _ := strings.Cut(body, `"csrf_token": "`)
		csrf[name], _, _ = strings.Cut(rest, `"`)
	}
	if csrf["node 1"] == "" || csrf["node 1"] != csrf["node 2"] {
		t.Errorf("the CSRF token differs between nodes: %q", csrf)
	}

	// Used through node 2, the link is used on node 1 too.
	other := f.browser(t)
	if resp, _ := other.do("POST", "/login", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("node 1 took the link node 2 used: %d, want 401", resp.StatusCode)
	}

	// Signed out through node 2, with the CSRF token of node 1's page.
	cookies := b.c.Jar.Cookies(mustURL(t, node1))
	b.base = node2
	if resp, _ := b.do("POST", "/logout", url.Values{"csrf": {csrf["node 1"]}}, nil); resp.StatusCode != 200 {
		t.Fatalf("sign out through node 2: %d", resp.StatusCode)
	}
	// The cookie, sent again to node 1 (a copy of it), is signed out there.
	stale := f.browser(t)
	stale.c.Jar.SetCookies(mustURL(t, node1), cookies)
	if resp, _ := stale.do("GET", "/api/me", nil, nil); len(cookies) != 1 || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after signing out through node 2, node 1 answers the cookie (%d of them) with %d, want 401", len(cookies), resp.StatusCode)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
