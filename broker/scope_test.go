package broker_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

func TestScopeCovers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		scope     broker.Scope
		residency string
		want      bool
	}{
		{broker.Scope{}, "JP", true},
		{broker.Scope{}, "", true}, // an affiliate's lock: every residency
		{broker.Scope{Residencies: []string{"JP"}}, "JP", true},
		{broker.Scope{Residencies: []string{"JP"}}, "SG", false},
		{broker.Scope{Residencies: []string{"JP"}}, "", false},
		{broker.Scope{Residencies: []string{"JP", "SG"}}, "SG", true},
		{broker.Scope{Residencies: []string{}}, "JP", false}, // closed: an empty list is no residency
		{broker.Scope{Residencies: []string{}}, "", false},
	} {
		if got := tc.scope.Covers(tc.residency); got != tc.want {
			t.Errorf("Scope{%v}.Covers(%q) = %v, want %v", tc.scope.Residencies, tc.residency, got, tc.want)
		}
	}
	if got := (&broker.Technician{}).Scope(); !got.Unlimited() {
		t.Errorf("no review_residency: scope %v, want unlimited", got)
	}
	if got := (&broker.Technician{ReviewResidency: []string{}}).Scope(); got.Unlimited() || got.Covers("JP") {
		t.Errorf("review_residency []: scope %v covers JP or is unlimited", got)
	}
}

// scopeScenario: li (ops-cn) asks for db-jp-01 (JP) and web-sg-01 (SG),
// both behind one approval. kenji is an admin and approver limited to
// JP, mei an admin and approver limited to SG, rin an approver of every
// residency.
func scopeScenario(t *testing.T) (*broker.Broker, *sqlitestore.Store) {
	t.Helper()
	techs := []*broker.Technician{
		{Name: "li", Affiliate: opsCN},
		{Name: "kenji", Affiliate: operatorJP, Groups: []string{"approvers", adminGroup}, ReviewResidency: []string{"JP"}},
		{Name: "mei", Affiliate: operatorJP, Groups: []string{"approvers", adminGroup}, ReviewResidency: []string{"SG"}},
		{Name: "rin", Affiliate: operatorJP, Groups: []string{"approvers"}},
	}
	targets := []*broker.Target{
		{Name: dbJP, Address: "10.0.0.1:22", Login: "dbadmin", Residency: "JP"},
		{Name: webSG, Address: "10.0.1.1:22", Login: "www", Residency: "SG"},
	}
	policy, err := broker.NewPolicy([]broker.Rule{
		{Name: "needs-approval", Effect: broker.Approval, Match: broker.Match{Technicians: []string{"li"}},
			Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, PendingFor: time.Hour, MaxGrant: maxGrant}},
	})
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Store: store,
		AdminGroups: []string{adminGroup}, Logger: slog.New(slog.DiscardHandler)}), store
}

// newestAudit is the newest audit event.
func newestAudit(t *testing.T, store *sqlitestore.Store) broker.AuditEvent {
	t.Helper()
	events, err := store.AuditEvents(t.Context(), 1000)
	if err != nil || len(events) == 0 {
		t.Fatalf("AuditEvents: %d events, %v", len(events), err)
	}
	return events[len(events)-1]
}

func TestRequestActionsFollowTheScope(t *testing.T) {
	t.Parallel()
	b, store := scopeScenario(t)
	ctx := t.Context()
	jp, _, err := b.RequestAccess(ctx, "li", dbJP, source, reason, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sg, _, err := b.RequestAccess(ctx, "li", webSG, source, reason, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Who is told, and who may decide: within their scope only.
	if got := b.Approvers(&jp); !slices.Equal(got, []string{"kenji", "rin"}) {
		t.Errorf("approvers of the JP request = %v, want [kenji rin]", got)
	}
	if got := b.Approvers(&sg); !slices.Equal(got, []string{"mei", "rin"}) {
		t.Errorf("approvers of the SG request = %v, want [mei rin]", got)
	}

	for _, tc := range []struct {
		name, who, action string
		do                func() (broker.AccessRequest, error)
		want              string
	}{
		{"approve", "kenji", "approve", func() (broker.AccessRequest, error) { return b.Approve(ctx, "kenji", sg.ID, "ok") },
			"request 2 is outside your review_residency (JP): you may not decide it"},
		{"deny, though an admin", "kenji", "deny", func() (broker.AccessRequest, error) { return b.Deny(ctx, "kenji", sg.ID, "not now") },
			"request 2 is outside your review_residency (JP): you may not deny it"},
		{"approve, the other way", "mei", "approve", func() (broker.AccessRequest, error) { return b.Approve(ctx, "mei", jp.ID, "") },
			"request 1 is outside your review_residency (SG): you may not decide it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.do()
			var rf *broker.Refusal
			if !errors.As(err, &rf) || rf.Msg != tc.want {
				t.Fatalf("%s by %s: %v, want the refusal %q", tc.action, tc.who, err, tc.want)
			}
			e := newestAudit(t, store)
			var detail struct{ Action, Why string }
			json.Unmarshal([]byte(e.Detail), &detail)
			if e.Kind != broker.EventRequestRefused || e.Technician != tc.who || detail.Action != tc.action || detail.Why != tc.want {
				t.Errorf("audited %+v, want %s by %s of %s saying why", e, broker.EventRequestRefused, tc.who, tc.action)
			}
		})
	}
	for _, r := range []broker.AccessRequest{jp, sg} {
		if got, _ := b.Request(ctx, r.ID); got.State != broker.RequestPending || len(got.Approvals) != 0 {
			t.Errorf("request %d after refused decisions: %s with %d approvals, want pending with none", r.ID, got.State, len(got.Approvals))
		}
	}

	// Within the scope, the same people decide.
	if r, err := b.Approve(ctx, "mei", sg.ID, "INC-42 ok"); err != nil || r.State != broker.RequestApproved {
		t.Fatalf("mei approves the SG request: %s, %v", r.State, err)
	}
	if _, err := b.Revoke(ctx, "kenji", sg.ID, "INC-42 done"); err == nil || !strings.Contains(err.Error(), "outside your review_residency (JP): you may not revoke it") {
		t.Errorf("kenji revokes the SG grant: %v, want a refusal naming his scope", err)
	}
	if r, err := b.Deny(ctx, "kenji", jp.ID, "INC-42 not today"); err != nil || r.State != broker.RequestDenied {
		t.Errorf("kenji denies the JP request: %s, %v", r.State, err)
	}

	// Listings with a viewer hold what is in their scope.
	for viewer, want := range map[string][]int64{"kenji": {jp.ID}, "mei": {sg.ID}, "rin": {sg.ID, jp.ID}, "li": {sg.ID, jp.ID}, "nobody": nil} {
		list, err := b.Requests(ctx, broker.RequestFilter{Viewer: viewer})
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, r := range list {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, want) {
			t.Errorf("Requests(viewer %s) = %v, want %v", viewer, ids, want)
		}
	}
	if list, _ := b.Requests(ctx, broker.RequestFilter{Viewer: "kenji", Targets: []string{webSG}}); len(list) != 0 {
		t.Errorf("kenji's requests for %s: %d, want none", webSG, len(list))
	}
}

func TestCheckScope(t *testing.T) {
	t.Parallel()
	b, store := scopeScenario(t)
	ctx := t.Context()
	for _, tc := range []struct {
		actor, action string
		on            broker.Concern
		want          string // "" for allowed
	}{
		{"kenji", "watch", broker.SessionConcern("s-jp", dbJP, "JP"), ""},
		{"kenji", "kill", broker.SessionConcern("s-sg", webSG, "SG"), "session s-sg is outside your review_residency (JP): you may not kill it"},
		{"kenji", "lock", b.LockConcern(broker.LockTarget, dbJP), ""},
		{"kenji", "lock", b.LockConcern(broker.LockTarget, webSG), "target web-sg-01 is outside your review_residency (JP)"},
		{"kenji", "lock", b.LockConcern(broker.LockTarget, "gone-01"), "target gone-01 is not tied to one residency"},
		{"kenji", "lock", b.LockConcern(broker.LockAffiliate, "ops-cn"), "affiliate ops-cn is not tied to one residency: only someone without a review_residency (all residencies) may lock it; yours is JP"},
		{"mei", "unlock", b.LockConcern(broker.LockTechnician, "li"), "technician li is not tied to one residency"},
		{"rin", "lock", b.LockConcern(broker.LockAffiliate, "ops-cn"), ""},
		{"rin", "kill", broker.SessionConcern("s-sg", webSG, "SG"), ""},
		{"nobody", "watch", broker.SessionConcern("s-jp", dbJP, "JP"), "outside your review_residency (no residency)"},
	} {
		before, _ := store.AuditEvents(ctx, 10000)
		err := b.CheckScope(ctx, tc.actor, tc.action, "192.0.2.9:4000", tc.on)
		after, _ := store.AuditEvents(ctx, 10000)
		if tc.want == "" {
			if err != nil || len(after) != len(before) {
				t.Errorf("%s %s %s: %v (%d audit events); want allowed, nothing audited", tc.actor, tc.action, tc.on.What, err, len(after)-len(before))
			}
			continue
		}
		var rf *broker.Refusal
		if !errors.As(err, &rf) || !strings.Contains(rf.Msg, tc.want) {
			t.Errorf("%s %s %s: %v, want a refusal containing %q", tc.actor, tc.action, tc.on.What, err, tc.want)
			continue
		}
		e := after[len(after)-1]
		var detail struct{ Action, On, Scope, Why string }
		json.Unmarshal([]byte(e.Detail), &detail)
		if len(after) != len(before)+1 || e.Kind != broker.EventRefused || e.Technician != tc.actor || e.Source != "192.0.2.9:4000" ||
			e.Session != tc.on.Session || detail.Action != tc.action || detail.On != tc.on.What || detail.Why == "" {
			t.Errorf("%s %s %s audited %+v, want one %s event with the action and why", tc.actor, tc.action, tc.on.What, e, broker.EventRefused)
		}
	}
}
