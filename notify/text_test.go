package notify

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	grantEnd := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		kind, by, note string
		edit           func(*broker.AccessRequest)
		want           string
	}{
		{broker.EventRequestCreated, "li", "", nil,
			"sekisho: li (affiliate-cn, CN) requests db-jp-01 for 1h0m0s: INC-4711 disk full — request 42, 0 of 1 approvals; approvers: kenji. approve with: approve 42"},
		{broker.EventRequestApproval, "kenji", "looks fine", func(r *broker.AccessRequest) {
			r.Needed = 2
			r.Approvals = slices.Grow(r.Approvals, 1)[:1] // one approval; only the count shows
		}, "sekisho: request 42 (li → db-jp-01) approved by kenji: looks fine — 1 of 2 approvals; approvers: kenji. approve with: approve 42"},
		{broker.EventRequestApproved, "kenji", "ok", func(r *broker.AccessRequest) { r.GrantEnd = grantEnd },
			"sekisho: request 42 (li → db-jp-01) approved by kenji: ok; granted until 2026-11-26T06:00:00Z"},
		{broker.EventRequestDenied, "kenji", "not during the freeze", nil,
			"sekisho: request 42 (li → db-jp-01) denied by kenji: not during the freeze"},
		{broker.EventRequestExpired, "sekisho", "", nil,
			"sekisho: request 42 (li → db-jp-01) expired unapproved with 0 of 1 approvals"},
		{broker.EventRequestCancelled, "li", "", nil,
			"sekisho: request 42 (li → db-jp-01) cancelled by li"},
		{broker.EventRequestRevoked, "admin", "incident closed", nil,
			"sekisho: request 42 (li → db-jp-01) revoked by admin: incident closed"},
		{broker.EventRequestUsed, "li", "", func(r *broker.AccessRequest) { r.GrantEnd = grantEnd },
			"sekisho: li started a session on db-jp-01 under request 42, granted until 2026-11-26T06:00:00Z"},
		{broker.EventRequestRefused, "", "", nil,
			"sekisho: request 42 (li → db-jp-01) refused"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			e := event(c.kind, 42)
			e.By, e.Note = c.by, c.note
			if c.edit != nil {
				c.edit(e.Request)
			}
			if got := summary(e); got != c.want {
				t.Errorf("summary =\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		first   time.Duration
		attempt int
		base    time.Duration
	}{
		{time.Second, 1, time.Second},
		{time.Second, 2, 2 * time.Second},
		{time.Second, 4, 8 * time.Second},
		{time.Second, 7, time.Minute}, // 64s, capped
		{time.Second, 1000, time.Minute},
		{10 * time.Millisecond, 3, 40 * time.Millisecond},
	} {
		lo := time.Duration(float64(c.base) * 0.8)
		hi := min(time.Duration(float64(c.base)*1.2), maxDelay)
		for range 100 {
			if d := backoff(c.first, c.attempt); d < lo || d > hi {
				t.Fatalf("backoff(%v, %d) = %v, want within [%v, %v]", c.first, c.attempt, d, lo, hi)
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		" 7 ":                           7 * time.Second,
		"0":                             0,
		"-5":                            0,
		"3600":                          time.Minute,
		"Wed, 21 Oct 2026 07:28:00 GMT": 0, // dates fall back to the backoff
	} {
		if got := retryAfter(v); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

// A cross-border session is told as it starts and as it ends, in one
// line each; the JSON body carries the session and no request.
func TestSessionSummary(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	n := &broker.SessionNotice{ID: "7f3c", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN",
		Source: "203.0.113.5:50000", SourceCountry: "CN", Target: "db-jp-01", Residency: "JP", Login: "dbadmin",
		Rule: "pii-cross-border-dba-needs-approval", Request: 42, StartedAt: start}
	e := broker.Event{Kind: broker.EventSessionCrossBorder, At: start, Session: n}
	want := "sekisho: li (ops-cn, CN) started a cross-border session on db-jp-01 (JP) as dbadmin from 203.0.113.5:50000 (CN) under rule pii-cross-border-dba-needs-approval, request 42 — session 7f3c"
	if got := summary(e); got != want {
		t.Errorf("start:\n%s\nwant\n%s", got, want)
	}
	ended := *n
	ended.EndedAt, ended.EndReason, ended.BytesIn, ended.BytesOut = start.Add(12*time.Minute+3*time.Second), "client closed", 1200, 3<<20
	e = broker.Event{Kind: broker.EventSessionCrossBorderEnded, At: ended.EndedAt, Session: &ended}
	want = "sekisho: cross-border session of li (ops-cn, CN) on db-jp-01 (JP) ended after 12m3s: client closed; 1.2 KiB in, 3.0 MiB out — session 7f3c"
	if got := summary(e); got != want {
		t.Errorf("end:\n%s\nwant\n%s", got, want)
	}
	body, err := encode(FormatJSON, e)
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(body, &decoded); err != nil {
		t.Fatal(err)
	}
	if _, ok := decoded["request"]; ok || decoded["session"] == nil || decoded["event"] != "session.cross_border_ended" {
		t.Errorf("JSON body %s", body)
	}
	// A Slack body escapes what a name could carry.
	n.Technician = "<!channel>"
	body, _ = encode(FormatSlack, broker.Event{Kind: broker.EventSessionCrossBorder, Session: n})
	if strings.Contains(string(body), "<!channel>") {
		t.Errorf("Slack body %s", body)
	}
}
