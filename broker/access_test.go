package broker_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/internal/hardening"
)

// The scenario: li and wei of ops-cn (CN) ask for db-jp-01, whose data
// resides in JP; aiko (ops-jp) and kenji (operator-jp, an admin) may
// approve from another affiliate. taro is in no approving group; sato is
// an admin of ops-cn who may not approve.
const (
	source     = "127.0.0.1:5000" // no Geo: unknown country, so cross-border
	dbJP       = "db-jp-01"       // one approval from another affiliate
	dbJP2      = "db-jp-02"       // two approvals, any affiliate
	webSG      = "web-sg-01"      // allowed outright
	oneRule    = "db-jp-01-needs-approval"
	twoRule    = "db-jp-02-needs-two-approvals"
	maxGrant   = time.Hour
	maxGrant2  = 4 * time.Hour
	shortPend  = 2 * time.Second
	reason     = "INC-42 rotate the replication password"
	webhook    = "ops-webhook"
	adminGroup = "admins"
)

var (
	opsCN      = broker.Affiliate{Name: "ops-cn", Country: "CN"}
	opsJP      = broker.Affiliate{Name: "ops-jp", Country: "JP"}
	operatorJP = broker.Affiliate{Name: "operator-jp", Country: "JP"}
)

// recorder is a Notifier that keeps the events it is told of.
type recorder struct {
	mu     sync.Mutex
	events []broker.Event
}

func (r *recorder) Notify(e broker.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) Names() []string { return []string{webhook} }

func (r *recorder) Events() []broker.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// kinds lists the kinds of the events about request id, in order.
func (r *recorder) kinds(id int64) []broker.EventKind {
	var out []broker.EventKind
	for _, e := range r.Events() {
		if e.Request != nil && e.Request.ID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

type scenario struct {
	b     *broker.Broker
	store *sqlitestore.Store
	notes *recorder
	keys  map[string]ssh.PublicKey
}

// newScenario builds a broker on a fresh SQLite store. pending is how
// long requests under both approval rules wait for approvals: tests of
// expiry use shortPend, the others a window they cannot overrun on a
// loaded machine.
func newScenario(t *testing.T, pending time.Duration) *scenario {
	t.Helper()
	s := &scenario{notes: &recorder{}, keys: map[string]ssh.PublicKey{}}
	tech := func(name string, a broker.Affiliate, groups ...string) *broker.Technician {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		s.keys[name] = key
		return &broker.Technician{Name: name, Affiliate: a, Groups: groups, Keys: []ssh.PublicKey{key}}
	}
	techs := []*broker.Technician{
		tech("li", opsCN, "dba", "approvers"),
		tech("wei", opsCN, "approvers"),
		tech("aiko", opsJP, "approvers"),
		tech("kenji", operatorJP, "approvers", adminGroup),
		tech("taro", opsJP, "dba"),
		tech("sato", opsCN, adminGroup),
	}
	targets := []*broker.Target{
		{Name: dbJP, Address: "10.0.0.1:22", Login: "dbadmin", Residency: "JP", Data: []string{"pii"}},
		{Name: dbJP2, Address: "10.0.0.2:22", Login: "dbadmin", Residency: "JP", Data: []string{"pii"}},
		{Name: webSG, Address: "10.0.1.1:22", Login: "www", Residency: "SG"},
	}
	policy, err := broker.NewPolicy([]broker.Rule{
		{Name: oneRule, Effect: broker.Approval, Match: broker.Match{Targets: []string{dbJP}},
			Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, OtherAffiliate: true,
				PendingFor: pending, MaxGrant: maxGrant}},
		{Name: twoRule, Effect: broker.Approval, Match: broker.Match{Targets: []string{dbJP2}},
			Approval: broker.ApprovalSpec{Approvals: 2, From: []string{"approvers"}, PendingFor: pending, MaxGrant: maxGrant2}},
		{Name: "web-open", Effect: broker.Allow, Match: broker.Match{Targets: []string{webSG}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.store, err = sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	s.b = broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Store: s.store,
		AdminGroups: []string{adminGroup}, Notifier: s.notes, Logger: slog.New(slog.DiscardHandler)})
	return s
}

// request files li's request for target and fails the test if it is
// not a new pending one.
func (s *scenario) request(t *testing.T, target string) broker.AccessRequest {
	t.Helper()
	r, existing, err := s.b.RequestAccess(t.Context(), "li", target, source, reason, 30*time.Minute)
	if err != nil || existing || r.State != broker.RequestPending {
		t.Fatalf("RequestAccess(li, %s) = {id %d %s}, existing %v, %v; want a new pending request", target, r.ID, r.State, existing, err)
	}
	return r
}

// grant files li's request for db-jp-01 and has kenji approve it.
func (s *scenario) grant(t *testing.T) broker.AccessRequest {
	t.Helper()
	r := s.request(t, dbJP)
	r, err := s.b.Approve(t.Context(), "kenji", r.ID, "")
	if err != nil || r.State != broker.RequestApproved {
		t.Fatalf("Approve(kenji, %d) = %s, %v; want approved", r.ID, r.State, err)
	}
	return r
}

func (s *scenario) stored(t *testing.T, id int64) broker.AccessRequest {
	t.Helper()
	r, err := s.b.Request(t.Context(), id)
	if err != nil {
		t.Fatalf("Request(%d): %v", id, err)
	}
	return r
}

// wantRefusal asserts that err is a *broker.Refusal whose message holds
// every one of want, and that the refusal is the newest audit event,
// attributed to actor, with action and request id in its detail.
func (s *scenario) wantRefusal(t *testing.T, err error, actor, action string, id int64, want ...string) {
	t.Helper()
	var rf *broker.Refusal
	if !errors.As(err, &rf) {
		t.Fatalf("error = %v (%T), want a *broker.Refusal containing %q", err, err, want)
	}
	for _, w := range want {
		if !strings.Contains(rf.Msg, w) {
			t.Errorf("refusal %q does not contain %q", rf.Msg, w)
		}
	}
	events, err := s.store.AuditEvents(t.Context(), 1000)
	if err != nil {
		t.Fatalf("AuditEvents: %v", err)
	}
	if len(events) == 0 {
		t.Fatalf("refusal %q was not audited: the audit log is empty", rf.Msg)
	}
	last := events[len(events)-1]
	if last.Kind != broker.EventRequestRefused || last.Technician != actor {
		t.Fatalf("newest audit event = {%s %q %s}, want {%s %q} for refusal %q",
			last.Kind, last.Technician, last.Detail, broker.EventRequestRefused, actor, rf.Msg)
	}
	var detail struct {
		Action  string `json:"action"`
		Request int64  `json:"request"`
		Why     string `json:"why"`
	}
	if err := json.Unmarshal([]byte(last.Detail), &detail); err != nil {
		t.Fatalf("refusal audit detail %q: %v", last.Detail, err)
	}
	if detail.Action != action || detail.Request != id || detail.Why != rf.Msg {
		t.Errorf("refusal audit detail = %+v, want action %q, request %d, why %q", detail, action, id, rf.Msg)
	}
}

// within fails the test unless got lies in [from, to].
func within(t *testing.T, what string, got, from, to time.Time) {
	t.Helper()
	if got.Before(from) || got.After(to) {
		t.Errorf("%s = %s, want between %s and %s", what, got, from, to)
	}
}

// waitFor waits for a value on ch, failing the test after d.
func waitFor(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("no %s within %s", what, d)
	}
}

func TestRequestAccess(t *testing.T) {
	t.Parallel()
	s := newScenario(t, shortPend)
	ctx := t.Context()

	d, _, err := s.b.Authorize(ctx, "li", dbJP, source)
	if err != nil {
		t.Fatal(err)
	}
	if d.Effect != broker.Approval || d.Allowed() || d.Rule != oneRule || d.Grant != nil {
		t.Fatalf("before any request, Authorize = {%s %q allowed %v grant %+v}, want {%s %q} not allowed, no grant",
			d.Effect, d.Rule, d.Allowed(), d.Grant, broker.Approval, oneRule)
	}

	refusals := []struct {
		name     string
		target   string
		reason   string
		duration time.Duration
		want     string
	}{
		{"empty reason", dbJP, "", 30 * time.Minute, "a reason is required: at least 3 characters"},
		{"too short a reason", dbJP, "ok", 30 * time.Minute, "a reason is required"},
		{"short once trimmed", dbJP, "   ab \t ", 30 * time.Minute, "a reason is required"},
		{"too long a reason", dbJP, strings.Repeat("x", 501), 30 * time.Minute, "a reason is too long: at most 500 bytes"},
		{"NUL in reason", dbJP, "INC-42\x00rm", 30 * time.Minute, "a reason may not contain control characters"},
		{"newline in reason", dbJP, "INC-42\nfake audit line", 30 * time.Minute, "may not contain control characters"},
		{"escape in reason", dbJP, "INC-42 \x1b[2J", 30 * time.Minute, "may not contain control characters"},
		{"invalid UTF-8 in reason", dbJP, "INC-42 \xff", 30 * time.Minute, "may not contain control characters"},
		{"longer than MaxGrant", dbJP, reason, maxGrant + time.Second, `duration 1h0m1s is longer than rule "` + oneRule + `" allows: ask for at most 1h0m0s`},
		{"shorter than 1m", dbJP, reason, 59 * time.Second, "duration 59s is too short: ask for at least 1m"},
		{"negative duration", dbJP, reason, -time.Hour, "is too short"},
		{"allowed outright", webSG, reason, 30 * time.Minute, `no approval is needed: rule "web-open" already allows you to reach web-sg-01`},
		{"unknown target", "db-xx-99", reason, 30 * time.Minute, `no target called "db-xx-99" is available to you`},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r, existing, err := s.b.RequestAccess(ctx, "li", tc.target, source, tc.reason, tc.duration)
			s.wantRefusal(t, err, "li", "request", 0, tc.want)
			if existing || r.ID != 0 {
				t.Errorf("refused request returned {id %d}, existing %v", r.ID, existing)
			}
		})
	}
	if list, err := s.b.Requests(ctx, broker.RequestFilter{}); err != nil || len(list) != 0 {
		t.Fatalf("after refusals, Requests = %d requests, %v; want none stored", len(list), err)
	}
	if got := s.notes.Events(); len(got) != 0 {
		t.Errorf("refusals notified %d events, want none", len(got))
	}

	before := time.Now()
	r, existing, err := s.b.RequestAccess(ctx, "li", dbJP, source, "  "+reason+"  ", 30*time.Minute)
	after := time.Now()
	if err != nil || existing {
		t.Fatalf("RequestAccess = existing %v, %v; want a new request", existing, err)
	}
	if r.ID != 1 || r.State != broker.RequestPending || r.Needed != 1 || len(r.Approvals) != 0 ||
		r.Technician != "li" || r.Affiliate != "ops-cn" || r.AffiliateCountry != "CN" || r.Target != dbJP ||
		r.Rule != oneRule || r.Source != source || r.Reason != reason || r.Duration != 30*time.Minute {
		t.Errorf("new request = %+v, want id 1, pending, 1 approval needed, li of ops-cn (CN) for %s under %q from %s, trimmed reason %q, 30m",
			r, dbJP, oneRule, source, reason)
	}
	within(t, "Created", r.Created, before, after)
	if want := r.Created.Add(shortPend); !r.Expires.Equal(want) {
		t.Errorf("Expires = %s, want Created+%s = %s", r.Expires, shortPend, want)
	}
	if got := s.stored(t, r.ID); got.State != broker.RequestPending || got.Reason != reason || !got.Expires.Equal(r.Expires) {
		t.Errorf("stored request = %+v, want what RequestAccess returned", got)
	}

	again, existing, err := s.b.RequestAccess(ctx, "li", dbJP, source, "INC-43 another reason", 10*time.Minute)
	if err != nil || !existing || again.ID != r.ID || again.State != broker.RequestPending || again.Reason != reason {
		t.Errorf("second RequestAccess = {id %d %s %q}, existing %v, %v; want request %d again, existing",
			again.ID, again.State, again.Reason, existing, err, r.ID)
	}
	if list, _ := s.b.Requests(ctx, broker.RequestFilter{}); len(list) != 1 {
		t.Errorf("after a repeated request, %d requests are stored, want 1", len(list))
	}

	// No duration asks for the most the rule allows.
	r2, _, err := s.b.RequestAccess(ctx, "li", dbJP2, source, reason, 0)
	if err != nil || r2.ID != 2 || r2.Duration != maxGrant2 || r2.Needed != 2 {
		t.Errorf("RequestAccess(%s, duration 0) = {id %d duration %s needed %d}, %v; want id 2, %s, 2 needed",
			dbJP2, r2.ID, r2.Duration, r2.Needed, err, maxGrant2)
	}

	approvers, webhooks := s.b.Notified(&r)
	if !slices.Equal(approvers, []string{"aiko", "kenji"}) || !slices.Equal(webhooks, []string{webhook}) {
		t.Errorf("Notified = %v, %v; want [aiko kenji], [%s]", approvers, webhooks, webhook)
	}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, []broker.EventKind{broker.EventRequestCreated}) {
		t.Errorf("notified %v for request %d, want [%s]", got, r.ID, broker.EventRequestCreated)
	}
	hardening.Report(t, "29", "%d bad access requests (NUL, newline, ESC and invalid UTF-8 in the reason, a 501-byte reason, durations out of range, an unknown target): all refused, none stored, none notified; a good reason is stored trimmed", len(refusals))
}

func TestApproveRefusals(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP)

	tests := []struct {
		name     string
		approver string
		id       int64
		comment  string
		want     string
	}{
		{"own request", "li", r.ID, "", "request 1 is your own; another approver must decide it"},
		{"same affiliate", "wei", r.ID, "", `rule "` + oneRule + `" needs an approver from another affiliate than ops-cn`},
		{"not in an approving group", "taro", r.ID, "", `you are not in a group that may decide requests under rule "` + oneRule + `" (groups approvers)`},
		{"admin but not an approver", "sato", r.ID, "", "you are not in a group that may decide requests"},
		{"unknown request", "kenji", 9, "", "there is no request 9"},
		{"unknown approver", "mallory", r.ID, "", `unknown approver "mallory"`},
		{"control characters in comment", "kenji", r.ID, "ok\x1b[1A", "a comment may not contain control characters"},
		{"bidi control in comment", "kenji", r.ID, "ok \u202e", "a comment may not contain control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.b.Approve(t.Context(), tc.approver, tc.id, tc.comment)
			s.wantRefusal(t, err, tc.approver, "approve", tc.id, tc.want)
		})
	}

	got := s.stored(t, r.ID)
	if got.State != broker.RequestPending || len(got.Approvals) != 0 {
		t.Errorf("after refused approvals, request = {%s approvals %+v}, want pending with none", got.State, got.Approvals)
	}
	if kinds := s.notes.kinds(r.ID); !slices.Equal(kinds, []broker.EventKind{broker.EventRequestCreated}) {
		t.Errorf("notified %v, want only %s", kinds, broker.EventRequestCreated)
	}
	hardening.Report(t, "29", "%d refused approvals (ESC and a bidi override in the comment, own request, same affiliate, not an approver, unknown request or approver): all refused, the request still pending with no approval and nothing notified", len(tests))
}

func TestApproveGrantsAccess(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP)

	before := time.Now()
	r, err := s.b.Approve(ctx, "kenji", r.ID, "  ok for INC-42  ")
	after := time.Now()
	if err != nil {
		t.Fatalf("Approve(kenji): %v", err)
	}
	if r.State != broker.RequestApproved || len(r.Approvals) != 1 || r.Approvals[0].By != "kenji" ||
		r.Approvals[0].Affiliate != "operator-jp" || r.Approvals[0].Comment != "ok for INC-42" {
		t.Fatalf("approved request = {%s approvals %+v}, want approved by kenji of operator-jp with the trimmed comment", r.State, r.Approvals)
	}
	within(t, "GrantStart", r.GrantStart, before, after)
	if want := r.GrantStart.Add(r.Duration); !r.GrantEnd.Equal(want) {
		t.Errorf("GrantEnd = %s, want GrantStart+%s = %s", r.GrantEnd, r.Duration, want)
	}
	if !r.DecidedAt.Equal(r.GrantStart) {
		t.Errorf("DecidedAt = %s, want GrantStart %s", r.DecidedAt, r.GrantStart)
	}
	if got := s.stored(t, r.ID); got.State != broker.RequestApproved || !got.GrantEnd.Equal(r.GrantEnd) {
		t.Errorf("stored request = {%s until %s}, want approved until %s", got.State, got.GrantEnd, r.GrantEnd)
	}

	d, _, err := s.b.Authorize(ctx, "li", dbJP, source)
	if err != nil {
		t.Fatal(err)
	}
	if d.Effect != broker.Allow || !d.Allowed() || d.Rule != oneRule || d.Login != "dbadmin" || d.Grant == nil {
		t.Fatalf("Authorize after approval = {%s %q login %q grant %+v}: %s; want allow under %q as dbadmin with a grant",
			d.Effect, d.Rule, d.Login, d.Grant, d.Reason, oneRule)
	}
	if d.Grant.RequestID != r.ID || !d.Grant.Until.Equal(r.GrantEnd) || !slices.Equal(d.Grant.ApprovedBy, []string{"kenji"}) {
		t.Errorf("grant = %+v, want request %d until %s approved by [kenji]", d.Grant, r.ID, r.GrantEnd)
	}
	if !strings.Contains(d.Reason, "allowed by request 1") || !strings.Contains(d.Reason, "approved by kenji") {
		t.Errorf("reason %q does not name the request and its approver", d.Reason)
	}
	// The grant is li's, on db-jp-01 only.
	if d, _, _ := s.b.Authorize(ctx, "wei", dbJP, source); d.Allowed() || d.Grant != nil {
		t.Errorf("wei under li's grant: Authorize = {%s grant %+v}, want not allowed", d.Effect, d.Grant)
	}
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP2, source); d.Allowed() || d.Grant != nil {
		t.Errorf("li on %s under a grant for %s: Authorize = {%s grant %+v}, want not allowed", dbJP2, dbJP, d.Effect, d.Grant)
	}

	// Asking again while the grant is in force returns the grant.
	again, existing, err := s.b.RequestAccess(ctx, "li", dbJP, source, reason, 10*time.Minute)
	if err != nil || !existing || again.ID != r.ID || again.State != broker.RequestApproved {
		t.Errorf("RequestAccess under a grant = {id %d %s}, existing %v, %v; want grant %d, existing", again.ID, again.State, existing, err, r.ID)
	}

	s.b.GrantUsed(ctx, d.Grant, "sess-1")

	events := s.notes.Events()
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproved, broker.EventRequestUsed}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, want) {
		t.Fatalf("notified %v, want %v", got, want)
	}
	for _, e := range events {
		if !slices.Equal(e.Approvers, []string{"aiko", "kenji"}) {
			t.Errorf("%s event lists approvers %v, want [aiko kenji] (not li: own; not wei: same affiliate)", e.Kind, e.Approvers)
		}
	}
	if e := events[0]; e.By != "li" || e.Note != reason || e.Request.State != broker.RequestPending {
		t.Errorf("created event = {by %q note %q state %s}, want by li, the reason, pending", e.By, e.Note, e.Request.State)
	}
	if e := events[1]; e.By != "kenji" || e.Note != "ok for INC-42" || e.Request.State != broker.RequestApproved {
		t.Errorf("approved event = {by %q note %q state %s}, want by kenji, the comment, approved", e.By, e.Note, e.Request.State)
	}
	if e := events[2]; e.By != "li" || e.Note != "session sess-1" {
		t.Errorf("used event = {by %q note %q}, want by li, %q", e.By, e.Note, "session sess-1")
	}

	audited := map[string]bool{}
	list, err := s.store.AuditEvents(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		audited[string(e.Kind)] = true
	}
	for _, k := range want {
		if !audited[string(k)] {
			t.Errorf("no %s audit event", k)
		}
	}
}

func TestApproveNeedsTwoApprovers(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP2)
	if r.Needed != 2 {
		t.Fatalf("Needed = %d, want 2", r.Needed)
	}

	r, err := s.b.Approve(ctx, "aiko", r.ID, "")
	if err != nil || r.State != broker.RequestPending || len(r.Approvals) != 1 || !r.GrantEnd.IsZero() {
		t.Fatalf("first approval = {%s approvals %d grant end %s}, %v; want still pending with 1 approval, no grant",
			r.State, len(r.Approvals), r.GrantEnd, err)
	}
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP2, source); d.Effect != broker.Approval || d.Grant != nil {
		t.Errorf("Authorize after one of two approvals = {%s grant %+v}, want %s without grant", d.Effect, d.Grant, broker.Approval)
	}

	_, err = s.b.Approve(ctx, "aiko", r.ID, "")
	s.wantRefusal(t, err, "aiko", "approve", r.ID, "you already approved request 1", "(1 of 2)")
	if got := s.stored(t, r.ID); got.State != broker.RequestPending || len(got.Approvals) != 1 {
		t.Errorf("after a repeated approval, request = {%s approvals %d}, want pending with 1", got.State, len(got.Approvals))
	}

	// No OtherAffiliate on this rule: wei, of li's affiliate, may approve.
	r, err = s.b.Approve(ctx, "wei", r.ID, "")
	if err != nil || r.State != broker.RequestApproved {
		t.Fatalf("second approval = %s, %v; want approved", r.State, err)
	}
	if by := []string{r.Approvals[0].By, r.Approvals[1].By}; !slices.Equal(by, []string{"aiko", "wei"}) {
		t.Errorf("approvals by %v, want [aiko wei]", by)
	}
	if want := r.GrantStart.Add(r.Duration); !r.GrantEnd.Equal(want) {
		t.Errorf("GrantEnd = %s, want GrantStart+%s = %s", r.GrantEnd, r.Duration, want)
	}
	d, _, err := s.b.Authorize(ctx, "li", dbJP2, source)
	if err != nil || !d.Allowed() || d.Grant == nil || d.Grant.RequestID != r.ID || !slices.Equal(d.Grant.ApprovedBy, []string{"aiko", "wei"}) {
		t.Errorf("Authorize after two approvals = {%s grant %+v}, %v; want allow under request %d approved by [aiko wei]", d.Effect, d.Grant, err, r.ID)
	}
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproval, broker.EventRequestApproved}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, want) {
		t.Errorf("notified %v, want %v", got, want)
	}

	_, err = s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "request 1 is no longer pending: granted until")
}

func TestDeny(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP)

	_, err := s.b.Deny(ctx, "aiko", r.ID, "")
	s.wantRefusal(t, err, "aiko", "deny", r.ID, "a reason is required")
	_, err = s.b.Deny(ctx, "aiko", r.ID, "no\x07")
	s.wantRefusal(t, err, "aiko", "deny", r.ID, "a reason may not contain control characters")
	_, err = s.b.Deny(ctx, "li", r.ID, "never mind")
	s.wantRefusal(t, err, "li", "deny", r.ID, "request 1 is your own: cancel it with `cancel 1`")
	_, err = s.b.Deny(ctx, "wei", r.ID, "not this week")
	s.wantRefusal(t, err, "wei", "deny", r.ID, "needs an approver from another affiliate than ops-cn")
	if got := s.stored(t, r.ID); got.State != broker.RequestPending {
		t.Fatalf("after refused denials, state = %s, want pending", got.State)
	}

	r, err = s.b.Deny(ctx, "aiko", r.ID, "  use the replica for INC-42  ")
	if err != nil || r.State != broker.RequestDenied || r.DecidedBy != "aiko" || r.Note != "use the replica for INC-42" || r.DecidedAt.IsZero() {
		t.Fatalf("Deny = {%s by %q note %q at %s}, %v; want denied by aiko with the trimmed reason", r.State, r.DecidedBy, r.Note, r.DecidedAt, err)
	}
	if got := s.stored(t, r.ID); got.State != broker.RequestDenied {
		t.Errorf("stored state = %s, want denied", got.State)
	}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, []broker.EventKind{broker.EventRequestCreated, broker.EventRequestDenied}) {
		t.Errorf("notified %v, want [%s %s]", got, broker.EventRequestCreated, broker.EventRequestDenied)
	}

	_, err = s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "request 1 is no longer pending: denied by aiko: use the replica for INC-42")
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP, source); d.Allowed() || d.Grant != nil {
		t.Errorf("Authorize after denial = {%s grant %+v}, want not allowed", d.Effect, d.Grant)
	}

	// A denied request does not stand in the way of a new one.
	r2, existing, err := s.b.RequestAccess(ctx, "li", dbJP, source, "INC-44 another go", 10*time.Minute)
	if err != nil || existing || r2.ID != 2 {
		t.Errorf("RequestAccess after a denial = {id %d}, existing %v, %v; want new request 2", r2.ID, existing, err)
	}
}

func TestDenyByAdmin(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP)
	// sato may not approve, but an admin may deny.
	r, err := s.b.Deny(t.Context(), "sato", r.ID, "change freeze")
	if err != nil || r.State != broker.RequestDenied || r.DecidedBy != "sato" {
		t.Fatalf("Deny(sato, admin) = {%s by %q}, %v; want denied by sato", r.State, r.DecidedBy, err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP)

	_, err := s.b.Cancel(ctx, "wei", r.ID, "")
	s.wantRefusal(t, err, "wei", "cancel", r.ID, "request 1 is not yours; only li can cancel it")
	_, err = s.b.Cancel(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "cancel", r.ID, "not yours")
	_, err = s.b.Cancel(ctx, "li", 9, "")
	s.wantRefusal(t, err, "li", "cancel", 9, "there is no request 9")
	if got := s.stored(t, r.ID); got.State != broker.RequestPending {
		t.Fatalf("after refused cancels, state = %s, want pending", got.State)
	}

	r, err = s.b.Cancel(ctx, "li", r.ID, "done without it")
	if err != nil || r.State != broker.RequestCancelled || r.DecidedBy != "li" || r.Note != "done without it" {
		t.Fatalf("Cancel(li) = {%s by %q note %q}, %v; want cancelled by li", r.State, r.DecidedBy, r.Note, err)
	}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, []broker.EventKind{broker.EventRequestCreated, broker.EventRequestCancelled}) {
		t.Errorf("notified %v, want [%s %s]", got, broker.EventRequestCreated, broker.EventRequestCancelled)
	}
	_, err = s.b.Cancel(ctx, "li", r.ID, "")
	s.wantRefusal(t, err, "li", "cancel", r.ID, "request 1 is no longer pending: cancelled by li")
	_, err = s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "no longer pending: cancelled by li")
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	hook := make(chan struct{}, 8)
	s.b.OnGrantsChanged(func() { hook <- struct{}{} })

	pending := s.request(t, dbJP2)
	_, err := s.b.Revoke(ctx, "kenji", pending.ID, "no longer needed")
	s.wantRefusal(t, err, "kenji", "revoke", pending.ID, "request 1 is not an active grant: pending, 0 of 2 approvals")

	r := s.grant(t)
	prev, _, err := s.b.Authorize(ctx, "li", dbJP, source)
	if err != nil || prev.Grant == nil || prev.Grant.RequestID != r.ID {
		t.Fatalf("Authorize under the grant = {%s grant %+v}, %v; want allowed under request %d", prev.Effect, prev.Grant, err, r.ID)
	}
	if ok, why := s.b.StillAllowed("li", dbJP, source, s.keys["li"], prev); !ok {
		t.Fatalf("StillAllowed under a live grant = false (%s), want true", why)
	}

	_, err = s.b.Revoke(ctx, "wei", r.ID, "not my call")
	s.wantRefusal(t, err, "wei", "revoke", r.ID, "needs an approver from another affiliate than ops-cn")
	_, err = s.b.Revoke(ctx, "taro", r.ID, "not my call")
	s.wantRefusal(t, err, "taro", "revoke", r.ID, "you are not in a group that may decide requests")
	_, err = s.b.Revoke(ctx, "kenji", r.ID, " ")
	s.wantRefusal(t, err, "kenji", "revoke", r.ID, "a reason is required")
	_, err = s.b.Revoke(ctx, "kenji", 9, "no such request")
	s.wantRefusal(t, err, "kenji", "revoke", 9, "there is no request 9")
	if got := s.stored(t, r.ID); got.State != broker.RequestApproved {
		t.Fatalf("after refused revocations, state = %s, want approved", got.State)
	}
	select {
	case <-hook:
		t.Fatal("OnGrantsChanged hook ran although no grant changed")
	default:
	}

	const why = "INC-42 finished early"
	r, err = s.b.Revoke(ctx, "kenji", r.ID, why)
	if err != nil || r.State != broker.RequestRevoked || r.DecidedBy != "kenji" || r.Note != why {
		t.Fatalf("Revoke(kenji) = {%s by %q note %q}, %v; want revoked by kenji", r.State, r.DecidedBy, r.Note, err)
	}
	waitFor(t, hook, 5*time.Second, "OnGrantsChanged call after a revocation")

	ok, msg := s.b.StillAllowed("li", dbJP, source, s.keys["li"], prev)
	if ok || msg != "request 2 was revoked by kenji: "+why {
		t.Errorf("StillAllowed after revocation = %v, %q; want false, %q", ok, msg, "request 2 was revoked by kenji: "+why)
	}
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP, source); d.Effect != broker.Approval || d.Grant != nil {
		t.Errorf("Authorize after revocation = {%s grant %+v}, want %s without grant", d.Effect, d.Grant, broker.Approval)
	}
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproved, broker.EventRequestRevoked}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, want) {
		t.Errorf("notified %v, want %v", got, want)
	}
	_, err = s.b.Revoke(ctx, "kenji", r.ID, "again")
	s.wantRefusal(t, err, "kenji", "revoke", r.ID, "request 2 is not an active grant: revoked by kenji: "+why)
	hardening.Report(t, "11", "a revoked grant: the session check refuses at once with the revoker and reason, Authorize falls back to approval, the grants-changed hook runs; 5 revocations of a pending, another's or an unknown request, or without reason, refused and change nothing")
}

func TestWhoMayRevoke(t *testing.T) {
	t.Parallel()
	tests := []struct {
		by   string
		want string // a refusal, or "" when allowed
	}{
		{by: "li"},    // the requester
		{by: "aiko"},  // an approver who may decide it
		{by: "kenji"}, // an approver and admin
		{by: "sato"},  // an admin only, of the requester's affiliate
		{by: "wei", want: "needs an approver from another affiliate"},
		{by: "taro", want: "you are not in a group that may decide"},
		{by: "mallory", want: `unknown technician "mallory"`},
	}
	for _, tc := range tests {
		t.Run(tc.by, func(t *testing.T) {
			t.Parallel()
			s := newScenario(t, time.Hour)
			r := s.grant(t)
			got, err := s.b.Revoke(t.Context(), tc.by, r.ID, "INC-42 revoke test")
			if tc.want != "" {
				s.wantRefusal(t, err, tc.by, "revoke", r.ID, tc.want)
				return
			}
			if err != nil || got.State != broker.RequestRevoked || got.DecidedBy != tc.by {
				t.Errorf("Revoke(%s) = {%s by %q}, %v; want revoked by %s", tc.by, got.State, got.DecidedBy, err, tc.by)
			}
		})
	}
}

func TestExpireRequests(t *testing.T) {
	t.Parallel()
	s := newScenario(t, shortPend)
	ctx := t.Context()
	r := s.request(t, dbJP)

	n, err := s.b.ExpireRequests(ctx)
	if err != nil || (n != 0 && time.Now().Before(r.Expires)) {
		t.Fatalf("ExpireRequests before the deadline = %d, %v; want 0", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("request %d (expires %s) not expired by %s", r.ID, r.Expires, deadline)
		}
		<-tick.C
		if n, err = s.b.ExpireRequests(ctx); err != nil {
			t.Fatalf("ExpireRequests: %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("ExpireRequests = %d, want 1", n)
	}
	if time.Now().Before(r.Expires) {
		t.Errorf("request expired before its deadline %s", r.Expires)
	}

	got := s.stored(t, r.ID)
	if got.State != broker.RequestExpired || got.DecidedBy != "sekisho" || got.Note != "no decision within 2s" || got.DecidedAt.Before(r.Expires) {
		t.Errorf("expired request = {%s by %q note %q at %s}, want expired by sekisho, %q, at or after %s",
			got.State, got.DecidedBy, got.Note, got.DecidedAt, "no decision within 2s", r.Expires)
	}
	if n, err := s.b.ExpireRequests(ctx); n != 0 || err != nil {
		t.Errorf("ExpireRequests again = %d, %v; want 0", n, err)
	}
	events := s.notes.Events()
	if kinds := s.notes.kinds(r.ID); !slices.Equal(kinds, []broker.EventKind{broker.EventRequestCreated, broker.EventRequestExpired}) {
		t.Fatalf("notified %v, want [%s %s]", kinds, broker.EventRequestCreated, broker.EventRequestExpired)
	}
	if e := events[len(events)-1]; e.By != "sekisho" {
		t.Errorf("expired event by %q, want sekisho", e.By)
	}

	_, err = s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "request 1 is no longer pending: expired by sekisho")

	// An expired request does not stand in the way of a new one.
	r2, existing, err := s.b.RequestAccess(ctx, "li", dbJP, source, reason, 10*time.Minute)
	if err != nil || existing || r2.ID != 2 {
		t.Errorf("RequestAccess after expiry = {id %d}, existing %v, %v; want new request 2", r2.ID, existing, err)
	}
}

// TestApproveExpiredRequest decides a request past its deadline that
// ExpireRequests has not marked yet: the decision expires it instead.
func TestApproveExpiredRequest(t *testing.T) {
	t.Parallel()
	s := newScenario(t, shortPend)
	ctx := t.Context()
	r := s.request(t, dbJP)

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(r.Expires) {
		<-tick.C
	}
	_, err := s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "request 1 expired at", "without enough approvals")
	got := s.stored(t, r.ID)
	if got.State != broker.RequestExpired || got.DecidedBy != "sekisho" || len(got.Approvals) != 0 {
		t.Errorf("request = {%s by %q approvals %d}, want expired by sekisho without approvals", got.State, got.DecidedBy, len(got.Approvals))
	}
	if kinds := s.notes.kinds(r.ID); !slices.Equal(kinds, []broker.EventKind{broker.EventRequestCreated, broker.EventRequestExpired}) {
		t.Errorf("notified %v, want [%s %s]", kinds, broker.EventRequestCreated, broker.EventRequestExpired)
	}
	if n, err := s.b.ExpireRequests(ctx); n != 0 || err != nil {
		t.Errorf("ExpireRequests after the lazy expiry = %d, %v; want 0", n, err)
	}
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP, source); d.Allowed() {
		t.Errorf("Authorize after expiry = %s, want not allowed", d.Effect)
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP)
	other := s.request(t, dbJP2)

	ch, stop := s.b.Subscribe(r.ID)
	otherCh, stopOther := s.b.Subscribe(other.ID)
	defer stopOther()
	select {
	case <-ch:
		t.Fatal("wake-up before any change")
	default:
	}

	if _, err := s.b.Approve(ctx, "kenji", r.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, 5*time.Second, "wake-up after approval")
	select {
	case <-otherCh:
		t.Error("subscriber of request 2 woken by a change of request 1")
	default:
	}

	// Several changes leave one wake-up pending: the subscriber re-reads.
	ch2, stop2 := s.b.Subscribe(other.ID)
	defer stop2()
	if _, err := s.b.Approve(ctx, "aiko", other.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.Approve(ctx, "kenji", other.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, otherCh, 5*time.Second, "wake-up of the first subscriber of request 2")
	waitFor(t, ch2, 5*time.Second, "wake-up of the second subscriber of request 2")

	stop()
	if _, err := s.b.Revoke(ctx, "kenji", r.ID, "INC-42 done"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Error("wake-up after stop")
	default:
	}
}

func TestIsAdminIsApprover(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	tests := []struct {
		name            string
		admin, approver bool
	}{
		{"li", false, true},
		{"wei", false, true},
		{"aiko", false, true},
		{"kenji", true, true},
		{"taro", false, false},
		{"sato", true, false},
		{"mallory", false, false},
	}
	for _, tc := range tests {
		if got := s.b.IsAdmin(tc.name); got != tc.admin {
			t.Errorf("IsAdmin(%s) = %v, want %v", tc.name, got, tc.admin)
		}
		if got := s.b.IsApprover(tc.name); got != tc.approver {
			t.Errorf("IsApprover(%s) = %v, want %v", tc.name, got, tc.approver)
		}
	}
	s.b.SetAdminGroups(nil)
	if s.b.IsAdmin("kenji") {
		t.Error("IsAdmin(kenji) with no admin groups = true, want false")
	}
}

// TestConcurrentApprovals has three approvers decide a request that needs
// two at once: the store's atomic update lets exactly two approve.
func TestConcurrentApprovals(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)

	approvers := []string{"aiko", "kenji", "wei"}
	errs := make([]error, len(approvers))
	var wg sync.WaitGroup
	for i, a := range approvers {
		wg.Go(func() { _, errs[i] = s.b.Approve(t.Context(), a, r.ID, "") })
	}
	wg.Wait()

	var refused int
	for i, err := range errs {
		var rf *broker.Refusal
		switch {
		case err == nil:
		case errors.As(err, &rf) && strings.Contains(rf.Msg, "no longer pending"):
			refused++
		default:
			t.Errorf("Approve(%s) = %v, want success or a no-longer-pending refusal", approvers[i], err)
		}
	}
	got := s.stored(t, r.ID)
	if refused != 1 || got.State != broker.RequestApproved || len(got.Approvals) != 2 {
		t.Errorf("after 3 concurrent approvals of a request needing 2: %d refused, request = {%s approvals %+v}; want 1 refused, approved with 2",
			refused, got.State, got.Approvals)
	}
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproval, broker.EventRequestApproved}
	if kinds := s.notes.kinds(r.ID); !slices.Equal(kinds, want) {
		t.Errorf("notified %v, want %v", kinds, want)
	}
}

// TestCancelNoteIsChecked: the note of a cancellation is typed by a
// person (`cancel N --reason TEXT`) and shown to approvers in the request's
// status and to webhooks, so it is checked like every other reason: a
// control character could rewrite an approver's terminal.
func TestCancelNoteIsChecked(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP)

	_, err := s.b.Cancel(t.Context(), "li", r.ID, "oops\x1b]0;approved by kenji\x07")
	s.wantRefusal(t, err, "li", "cancel", r.ID, "may not contain control characters")
	if got := s.stored(t, r.ID); got.State != broker.RequestPending {
		t.Errorf("request = {%s note %q}, want still pending", got.State, got.Note)
	}
}

// TestRefusalAuditNamesTarget: a refused decision is audited with the
// target of the request it was about, as a refused request is.
func TestRefusalAuditNamesTarget(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP)

	_, err := s.b.Approve(t.Context(), "wei", r.ID, "")
	s.wantRefusal(t, err, "wei", "approve", r.ID, "another affiliate")
	events, err := s.store.AuditEvents(t.Context(), 1)
	if err != nil || len(events) != 1 {
		t.Fatalf("AuditEvents = %d events, %v", len(events), err)
	}
	if e := events[0]; e.Target != dbJP {
		t.Errorf("refused approval audited with target %q, want %q", e.Target, dbJP)
	}
}

// A locked approver, or one of a locked affiliate, decides nothing and
// may not run commands; the lock lifted, they may again.
func TestLockedApproverDecidesNothing(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	r := s.request(t, dbJP)
	if ok, why := s.b.CommandAllowed("kenji", s.keys["kenji"]); !ok {
		t.Fatalf("CommandAllowed before the lock = false (%s)", why)
	}
	l, err := s.store.AddLock(ctx, broker.Lock{Kind: broker.LockTechnician, Name: "kenji", Reason: "INC-9 key leaked", By: "security", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.RefreshLocks(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = s.b.Approve(ctx, "kenji", r.ID, "")
	s.wantRefusal(t, err, "kenji", "approve", r.ID, "you may not decide requests: technician kenji is locked")
	_, err = s.b.Deny(ctx, "kenji", r.ID, "INC-9 as admin")
	s.wantRefusal(t, err, "kenji", "deny", r.ID, "you may not decide requests: technician kenji is locked")
	if ok, why := s.b.CommandAllowed("kenji", s.keys["kenji"]); ok || !strings.Contains(why, "INC-9 key leaked") {
		t.Errorf("CommandAllowed while locked = %v, %q", ok, why)
	}
	if ok, _ := s.b.CommandAllowed("kenji", s.keys["aiko"]); ok {
		t.Error("CommandAllowed with another technician's key = true")
	}
	if err := s.store.RemoveLock(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.RefreshLocks(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.b.Approve(ctx, "kenji", r.ID, ""); err != nil || got.State != broker.RequestApproved {
		t.Fatalf("Approve after unlock = %s, %v", got.State, err)
	}
}

// A session runs under its own grant: a second grant for the same target
// does not end it, and its own revocation does.
func TestSessionKeepsItsOwnGrant(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	first := s.grant(t)
	prev, _, err := s.b.Authorize(ctx, "li", dbJP, source)
	if err != nil || prev.Grant == nil || prev.Grant.RequestID != first.ID {
		t.Fatalf("Authorize = %+v, %v", prev.Grant, err)
	}
	// A second grant, ending later, for the same target and rule.
	if _, err := s.b.Revoke(ctx, "kenji", first.ID, "replaced by a longer one"); err != nil {
		t.Fatal(err)
	}
	second := s.grant(t)
	if ok, why := s.b.StillAllowed("li", dbJP, source, s.keys["li"], prev); ok || !strings.Contains(why, fmt.Sprintf("request %d was revoked by kenji", first.ID)) {
		t.Errorf("StillAllowed under the revoked first grant = %v, %q", ok, why)
	}
	now, _, _ := s.b.Authorize(ctx, "li", dbJP, source)
	if now.Grant == nil || now.Grant.RequestID != second.ID {
		t.Fatalf("Authorize after the second grant = %+v", now.Grant)
	}
	if ok, why := s.b.StillAllowed("li", dbJP, source, s.keys["li"], now); !ok {
		t.Errorf("StillAllowed under the second grant = false (%s)", why)
	}
}

// Security hears of every cross-border session as it starts and as it
// ends, and of no other.
func TestCrossBorderSessionsNotified(t *testing.T) {
	s := newScenario(t, time.Hour)
	start := time.Now().UTC()
	for _, r := range []*broker.SessionRecord{
		{ID: "cb", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: source, Target: webSG,
			Residency: "SG", Login: "www", CrossBorder: true, Rule: "web-open", StartedAt: start},
		{ID: "home", Technician: "aiko", Affiliate: "ops-jp", AffiliateCountry: "JP", Source: source, Target: dbJP,
			Residency: "JP", Login: "dbadmin", Rule: "local", StartedAt: start},
	} {
		if err := s.b.SessionStarted(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"home", "cb"} {
		if err := s.b.SessionEnded(t.Context(), id, broker.SessionEnd{At: start.Add(time.Minute), Reason: "client closed", BytesIn: 10, BytesOut: 20}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, e := range s.notes.Events() {
		if e.Session != nil {
			got = append(got, string(e.Kind)+" "+e.Session.ID+" "+e.Session.EndReason)
		}
	}
	want := []string{"session.cross_border cb ", "session.cross_border_ended cb client closed"}
	if !slices.Equal(got, want) {
		t.Errorf("session notifications %q, want %q", got, want)
	}
}

func TestChangedElsewhereWakesWaiters(t *testing.T) {
	b := &broker.Broker{}
	one, stop1 := b.Subscribe(1)
	defer stop1()
	two, stop2 := b.Subscribe(2)
	defer stop2()
	hooked := make(chan struct{}, 4)
	b.OnGrantsChanged(func() { hooked <- struct{}{} })
	woken := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	b.ChangedElsewhere(2)
	if woken(one) || !woken(two) {
		t.Fatal("a change of request 2 elsewhere must wake its waiters only")
	}
	b.ChangedElsewhere(0)
	if !woken(one) || !woken(two) {
		t.Fatal("missed changes must wake every waiter")
	}
	for range 2 {
		select {
		case <-hooked:
		case <-time.After(10 * time.Second):
			t.Fatal("live sessions were not told to re-check their grants")
		}
	}
}
