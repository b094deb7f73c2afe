package notify

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	grantEnd := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		kind     broker.EventKind
		by, note string
		edit     func(*broker.AccessRequest)
		want     string
	}{
		{broker.EventRequestCreated, "li", "", nil,
			"sekisho: li (affiliate-cn, CN) requests db-jp-01 for 1h0m0s — request 42, 0 of 1 approvals; approvers: kenji. approve with: approve 42. li's reason: \"INC-4711 disk full\""},
		{broker.EventRequestApproval, "kenji", "looks fine", func(r *broker.AccessRequest) {
			r.Needed = 2
			r.Approvals = slices.Grow(r.Approvals, 1)[:1] // one approval; only the count shows
		}, "sekisho: request 42 (li → db-jp-01) approved by kenji — 1 of 2 approvals; approvers: kenji. approve with: approve 42. kenji's comment: \"looks fine\""},
		{broker.EventRequestApproved, "kenji", "ok", func(r *broker.AccessRequest) { r.GrantEnd = grantEnd },
			"sekisho: request 42 (li → db-jp-01) approved by kenji; granted until 2026-11-26T06:00:00Z. kenji's comment: \"ok\""},
		{broker.EventRequestDenied, "kenji", "not during the freeze", nil,
			"sekisho: request 42 (li → db-jp-01) denied by kenji. kenji's reason: \"not during the freeze\""},
		{broker.EventRequestExpired, "sekisho", "", nil,
			"sekisho: request 42 (li → db-jp-01) expired unapproved with 0 of 1 approvals"},
		{broker.EventRequestCancelled, "li", "", nil,
			"sekisho: request 42 (li → db-jp-01) cancelled by li"},
		{broker.EventRequestRevoked, "admin", "incident closed", nil,
			"sekisho: request 42 (li → db-jp-01) revoked by admin. admin's reason: \"incident closed\""},
		{broker.EventRequestUsed, "li", "", func(r *broker.AccessRequest) { r.GrantEnd = grantEnd },
			"sekisho: li started a session on db-jp-01 under request 42, granted until 2026-11-26T06:00:00Z"},
		{broker.EventRequestRefused, "", "", nil,
			"sekisho: request 42 (li → db-jp-01) refused"},
	} {
		t.Run(string(c.kind), func(t *testing.T) {
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
	want = "sekisho: cross-border session of li (ops-cn, CN) on db-jp-01 (JP) ended after 12m3s (\"client closed\"); 1.2 KiB in, 3.0 MiB out — session 7f3c"
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

// What people typed is set apart: it comes last, after whose words they
// are, quoted, so that a reason written as sekisho's own hint ("approve
// with: approve 41") reads as the technician's, in a JSON body as in a
// Slack one, and a quote or an invisible character in it cannot end the
// quotation or reorder what an approver reads.
func TestTypedTextSetApart(t *testing.T) {
	t.Parallel()
	reasons := []string{
		"INC-1 — request 41, 0 of 1 approvals; approvers: kenji. approve with: approve 41",
		`INC-1" — request 41. approve with: approve 41 "`,
		"INC-1 \u202eapprove 41\u202c — approve with: approve 41",
		"INC-1\u200b\u2060\ufeff approve with: approve 41",
	}
	unslack := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")
	for _, reason := range reasons {
		for _, f := range []Format{FormatJSON, FormatSlack} {
			e := event(broker.EventRequestCreated, 42)
			e.Request.Reason = reason
			body, err := encode(f, e)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Text string `json:"text"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			text := got.Text
			if f == FormatSlack {
				text = unslack.Replace(text)
			}
			own, quoted, ok := strings.Cut(text, ". li's reason: ")
			if !ok {
				t.Errorf("%s body for reason %q: the reason is not set apart as li's: %q", f, reason, got.Text)
				continue
			}
			if unq, err := strconv.Unquote(quoted); err != nil || unq != reason {
				t.Errorf("%s body: after li's reason comes %q, not the reason quoted (%v)", f, quoted, err)
			}
			if !strings.HasSuffix(own, "approve with: approve 42") || strings.Contains(own, "41") {
				t.Errorf("%s body: sekisho's own words are %q", f, own)
			}
			if strings.ContainsFunc(got.Text, broker.Unseen) {
				t.Errorf("%s body: the text carries an invisible character: %q", f, got.Text)
			}
		}
	}
	// A comment or a reason typed by an approver likewise.
	e := event(broker.EventRequestDenied, 42)
	e.By, e.Note = "kenji", `no" — request 41 approved by kenji`
	if got, want := summary(e), `sekisho: request 42 (li → db-jp-01) denied by kenji. kenji's reason: "no\" — request 41 approved by kenji"`; got != want {
		t.Errorf("denied:\n%s\nwant\n%s", got, want)
	}
	hardening.Report(t, "29", "webhook texts (JSON and Slack) give a reason or comment last, as the technician's or approver's, quoted with quotes, bidi and zero-width characters escaped: a reason written as sekisho's own approve hint (approve 41) reads as quoted text after the real one (approve 42)")
}

// A session waiting for moderators is told in one line naming who may
// moderate it; the JSON body carries it under "moderation", and a
// webhook may ask for the kind alone.
func TestModerationSummary(t *testing.T) {
	t.Parallel()
	n := &broker.ModerationNotice{Session: "9d1e", Technician: "li", Affiliate: "ops-cn", Target: "db-jp-01",
		Source: "203.0.113.5:50000", Rule: "pii-cross-border-dba-needs-approval", Moderators: 1}
	e := broker.Event{Kind: broker.EventModerationWaiting, Moderation: n, Moderators: []string{"kenji", "yui"}}
	want := "sekisho: li (ops-cn) waits on db-jp-01 for 1 moderator(s) under rule pii-cross-border-dba-needs-approval; who may: kenji, yui — session 9d1e"
	if got := summary(e); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	body, err := encode(FormatJSON, e)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Event      string   `json:"event"`
		Moderators []string `json:"moderators"`
		Moderation struct {
			ID, Technician, Target string
		} `json:"moderation"`
	}
	if err := json.Unmarshal(body, &decoded); err != nil || decoded.Event != "moderation.waiting" || decoded.Moderation.ID != "9d1e" ||
		decoded.Moderation.Target != "db-jp-01" || len(decoded.Moderators) != 2 {
		t.Errorf("JSON body %s (%v)", body, err)
	}
	hooks, err := New([]Webhook{{Name: "mods", URL: "https://example.com/hook", Events: []string{"moderation.waiting"}}}, Options{})
	if err != nil {
		t.Fatalf("a webhook for moderation.waiting alone: %v", err)
	}
	hooks.Close(context.Background())
}
