package web_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// mika, an admin and approver of SG only, neither sees nor decides li's
// request for the JP target, locks or unlocks nothing outside SG
// (affiliates and technicians, whom a lock stops everywhere, included),
// and does not find the JP session; kenji, of every residency, does all
// of it. Every refusal is audited with why.
func TestScopeGovernsDecisionsAndLocks(t *testing.T) {
	f := newFixture(t, "")
	ctx := t.Context()
	req, _, err := f.brk.RequestAccess(ctx, "li", "db-jp-01", "203.0.113.9:40000", "INC-21 rotate the replication password", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mika := f.signIn(t, "mika")
	api := func(b *browser, method, path string, form url.Values) (int, string) {
		t.Helper()
		resp, body := b.do(method, path, form, map[string]string{"X-CSRF-Token": b.csrf})
		return resp.StatusCode, body
	}

	if _, body := api(mika, "GET", "/api/requests", nil); strings.Contains(body, "db-jp-01") {
		t.Errorf("mika (SG) sees the JP request: %s", body)
	}
	for verb, want := range map[string]string{"approve": "you may not decide it", "deny": "you may not deny it"} {
		code, body := api(mika, "POST", "/api/requests/1/"+verb, url.Values{"comment": {"INC-21 no"}})
		if code != http.StatusForbidden || !strings.Contains(body, "request 1 is outside your review_residency (SG): "+want) {
			t.Errorf("mika %s request 1: %d %s; want 403 naming her scope", verb, code, body)
		}
	}
	if !audited(t, f.store, broker.EventRequestRefused, "request 1 is outside your review_residency (SG)") {
		t.Error("mika's refused decisions are not audited with why")
	}
	if r, _ := f.brk.Request(ctx, req.ID); r.State != broker.RequestPending {
		t.Errorf("request 1 after mika's refusals: %s, want pending", r.State)
	}

	lock := func(b *browser, kind, name string) (int, string) {
		return api(b, "POST", "/api/locks", url.Values{"kind": {kind}, "name": {name}, "reason": {"INC-22 review of " + name}})
	}
	for _, tc := range []struct{ kind, name, want string }{
		{"affiliate", "ops-cn", "affiliate ops-cn is not tied to one residency: only someone without a review_residency (all residencies) may lock it; yours is SG"},
		{"technician", "li", "technician li is not tied to one residency"},
		{"target", "db-jp-01", "target db-jp-01 is outside your review_residency (SG): you may not lock it"},
	} {
		if code, body := lock(mika, tc.kind, tc.name); code != http.StatusForbidden || !strings.Contains(body, tc.want) {
			t.Errorf("mika locks %s %s: %d %s; want 403 saying %q", tc.kind, tc.name, code, body, tc.want)
		}
	}
	if !audited(t, f.store, broker.EventRefused, `"action":"lock","on":"affiliate ops-cn"`) {
		t.Error("mika's refused lock is not audited")
	}
	if locks, _ := f.store.Locks(ctx, time.Now()); len(locks) != 0 {
		t.Fatalf("refused locks were stored: %+v", locks)
	}
	if code, body := lock(mika, "target", "web-sg-01"); code != http.StatusOK {
		t.Errorf("mika locks web-sg-01 (SG): %d %s", code, body)
	}
	kenji := f.signIn(t, "kenji")
	for _, l := range [][2]string{{"affiliate", "ops-cn"}, {"target", "db-jp-01"}} {
		if code, body := lock(kenji, l[0], l[1]); code != http.StatusOK {
			t.Errorf("kenji (all residencies) locks %s %s: %d %s", l[0], l[1], code, body)
		}
	}
	// Locks 1 web-sg-01, 2 ops-cn, 3 db-jp-01. mika sees the first two;
	// she may lift hers only, and is offered only SG targets to lock.
	_, body := api(mika, "GET", "/api/locks", nil)
	var a struct {
		Locks []struct {
			ID        int64 `json:"id"`
			MayRemove bool  `json:"may_remove"`
		} `json:"locks"`
		Affiliates, Technicians, Targets []string
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Locks) != 2 || a.Locks[0].ID != 1 || !a.Locks[0].MayRemove || a.Locks[1].ID != 2 || a.Locks[1].MayRemove ||
		len(a.Affiliates) != 0 || len(a.Technicians) != 0 || strings.Join(a.Targets, ",") != "web-sg-01" {
		t.Errorf("mika's locks: %s", body)
	}
	for _, id := range []string{"2", "3"} {
		if code, body := api(mika, "DELETE", "/api/locks/"+id+"?reason=INC-22+over", nil); code != http.StatusForbidden || !strings.Contains(body, "unlock it") {
			t.Errorf("mika removes lock %s: %d %s; want 403", id, code, body)
		}
	}
	if code, body := api(mika, "DELETE", "/api/locks/1?reason=INC-22+over", nil); code != http.StatusOK {
		t.Errorf("mika removes her SG lock: %d %s", code, body)
	}
	if code, _ := api(kenji, "DELETE", "/api/locks/2?reason=INC-22+over", nil); code != http.StatusOK {
		t.Errorf("kenji removes the affiliate lock: %d", code)
	}
	if _, page := mika.do("GET", "/locks", nil, nil); strings.Contains(page, `value="affiliate"`) || !strings.Contains(page, `id="lock-scope"`) {
		t.Errorf("mika's locks page offers to lock an affiliate, or does not say why not")
	}

	// Sessions: the JP one is not found for her, to view or to end.
	for _, c := range []struct{ method, path string }{{"GET", "/api/sessions/" + jpSession}, {"POST", "/api/sessions/" + jpSession + "/kill"}} {
		if code, body := api(mika, c.method, c.path, url.Values{"reason": {"INC-23"}}); code != http.StatusNotFound || strings.Contains(body, "db-jp-01") {
			t.Errorf("mika %s %s: %d %s; want 404 revealing nothing", c.method, c.path, code, body)
		}
	}
	if !audited(t, f.store, broker.EventRefused, `"action":"kill","on":"session `+jpSession) {
		t.Error("mika's refused kill is not audited")
	}
	if code, body := api(kenji, "POST", "/api/requests/1/approve", url.Values{"comment": {"INC-21 ok"}}); code != http.StatusOK || !strings.Contains(body, `"source_country": "`) {
		t.Errorf("kenji approves request 1: %d %s", code, body)
	}
}
