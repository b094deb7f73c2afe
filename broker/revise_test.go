package broker_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// baseRules are newScenario's rules, for a reload to change.
func baseRules() []broker.Rule {
	return []broker.Rule{
		{Name: oneRule, Effect: broker.Approval, Match: broker.Match{Targets: []string{dbJP}},
			Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, OtherAffiliate: true,
				PendingFor: time.Hour, MaxGrant: maxGrant}},
		{Name: twoRule, Effect: broker.Approval, Match: broker.Match{Targets: []string{dbJP2}},
			Approval: broker.ApprovalSpec{Approvals: 2, From: []string{"approvers"}, PendingFor: time.Hour, MaxGrant: maxGrant2}},
		{Name: "web-open", Effect: broker.Allow, Match: broker.Match{Targets: []string{webSG}}},
	}
}

// replace puts the scenario's technicians (each a copy, changed by
// editTech when given) and targets in force with rules, as a reload's
// Replace does, without holding what is filed to them.
func (s *scenario) replace(t *testing.T, rules []broker.Rule, editTech func(*broker.Technician)) {
	t.Helper()
	var techs []*broker.Technician
	for _, name := range []string{"li", "wei", "aiko", "kenji", "taro", "sato"} {
		tech, ok := s.b.Technician(name)
		if !ok {
			t.Fatalf("no technician %s", name)
		}
		c := *tech
		c.Groups = slices.Clone(tech.Groups)
		if editTech != nil {
			editTech(&c)
		}
		techs = append(techs, &c)
	}
	var targets []*broker.Target
	for _, name := range []string{dbJP, dbJP2, webSG} {
		tg, _ := s.b.Target(name)
		targets = append(targets, tg)
	}
	policy, err := broker.NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	s.b.Replace(techs, targets, policy, nil)
}

// reload is a config reload: Replace, then ReviseRequests. It returns
// how many requests were revised.
func (s *scenario) reload(t *testing.T, rules []broker.Rule, editTech func(*broker.Technician)) int {
	t.Helper()
	s.replace(t, rules, editTech)
	n, err := s.b.ReviseRequests(t.Context())
	if err != nil {
		t.Fatalf("ReviseRequests: %v", err)
	}
	return n
}

// approve has approver approve request id and fails the test unless the
// request is then in state want with the approvers by.
func (s *scenario) approve(t *testing.T, approver string, id int64, want broker.RequestState, by ...string) broker.AccessRequest {
	t.Helper()
	r, err := s.b.Approve(t.Context(), approver, id, "")
	if err != nil {
		t.Fatalf("Approve(%s, %d): %v", approver, id, err)
	}
	var got []string
	for _, a := range r.Approvals {
		got = append(got, a.By)
	}
	if r.State != want || !slices.Equal(got, by) {
		t.Fatalf("after %s's approval, request %d is %s approved by %v (%s); want %s by %v", approver, id, r.State, got, r.Status(time.Now()), want, by)
	}
	return r
}

func withRule(name string, edit func(*broker.Rule)) []broker.Rule {
	rules := baseRules()
	for i := range rules {
		if rules[i].Name == name {
			edit(&rules[i])
		}
	}
	return rules
}

// A reload that raises a rule's count from 2 to 3 reaches the request
// already waiting under it: it needs 3, is told so, and the approval it
// had still counts.
func TestReloadRaisesTheCountOfAPendingRequest(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")

	if n := s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.Approvals = 3 }), nil); n != 1 {
		t.Errorf("reload revised %d requests, want 1", n)
	}
	got := s.stored(t, r.ID)
	if got.State != broker.RequestPending || got.Needed != 3 || len(got.Approvals) != 1 ||
		got.Revised != `rule "db-jp-02-needs-two-approvals" now needs 3 approval(s)` {
		t.Fatalf("after the reload: %s, %d of %d, revised %q; want pending, 1 of 3, told why", got.State, len(got.Approvals), got.Needed, got.Revised)
	}
	s.approve(t, "kenji", r.ID, broker.RequestPending, "aiko", "kenji")
	s.approve(t, "wei", r.ID, broker.RequestApproved, "aiko", "kenji", "wei")
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproval, broker.EventRequestRevised,
		broker.EventRequestApproval, broker.EventRequestApproved}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, want) {
		t.Errorf("notified %v, want %v", got, want)
	}
	hardening.Report(t, "11", "a reload raising a rule from 2 to 3 approvals: the request waiting under it with 1 approval needs 3, told why, audited as request.revised; the second approval leaves it pending, the third grants it")
}

// Without the reload's revision (another node's Replace not followed by
// ReviseRequests yet), the decision itself is made on the rule as it is
// now.
func TestApprovalDecidesOnTheCountInForce(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	s.replace(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.Approvals = 3 }), nil)
	got := s.approve(t, "kenji", r.ID, broker.RequestPending, "aiko", "kenji")
	if got.Needed != 3 || !strings.Contains(got.Revised, "now needs 3 approval(s)") {
		t.Errorf("after the second approval: %d needed, revised %q; want 3, told why", got.Needed, got.Revised)
	}
}

// A reload that adds other_affiliate drops the approval a colleague of
// the requester gave: it no longer counts toward the grant.
func TestReloadAddsOtherAffiliate(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)
	s.approve(t, "wei", r.ID, broker.RequestPending, "wei") // ops-cn, as li is

	s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.OtherAffiliate = true }), nil)
	got := s.stored(t, r.ID)
	const why = `the approval of wei no longer counts: wei is of li's affiliate ops-cn, and rule "db-jp-02-needs-two-approvals" needs an approver from another affiliate`
	if got.State != broker.RequestPending || len(got.Approvals) != 0 || got.Revised != why {
		t.Fatalf("after the reload: %s, approvals %v, revised %q; want pending without approvals, revised %q", got.State, got.Approvals, got.Revised, why)
	}
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	s.approve(t, "kenji", r.ID, broker.RequestApproved, "aiko", "kenji")
	hardening.Report(t, "11", "a reload adding other_affiliate: the approval a colleague of the requester gave before is dropped, told why; two approvers of other affiliates are then needed")
}

// A reload that cuts max_grant cuts the duration a pending request asks
// for, and the grant it then gives.
func TestReloadCutsTheDurationOfAPendingRequest(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r, _, err := s.b.RequestAccess(t.Context(), "li", dbJP2, source, reason, 4*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.MaxGrant = 10 * time.Minute }), nil)
	got := s.stored(t, r.ID)
	if got.Duration != 10*time.Minute || got.Revised != `rule "db-jp-02-needs-two-approvals" now grants at most 10m0s: the duration asked for, 4h0m0s, is cut to it` {
		t.Fatalf("after the reload: duration %s, revised %q; want 10m, told why", got.Duration, got.Revised)
	}
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	g := s.approve(t, "kenji", r.ID, broker.RequestApproved, "aiko", "kenji")
	if d := g.GrantEnd.Sub(g.GrantStart); d != 10*time.Minute {
		t.Errorf("granted for %s, want 10m", d)
	}
	hardening.Report(t, "11", "a reload cutting max_grant from 4h to 10m: a pending request asking 4h asks 10m, told why, and is granted for 10m")
}

// A reload that cuts max_grant cuts grants already issued to it, from
// their start; live sessions under them are told through the hook and
// end at the new end (StillAllowed refuses from then on).
func TestReloadCutsIssuedGrants(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	ctx := t.Context()
	hook := make(chan struct{}, 8)
	s.b.OnGrantsChanged(func() { hook <- struct{}{} })
	r, _, err := s.b.RequestAccess(ctx, "li", dbJP2, source, reason, 4*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	g := s.approve(t, "kenji", r.ID, broker.RequestApproved, "aiko", "kenji")
	prev, _, err := s.b.Authorize(ctx, "li", dbJP2, source)
	if err != nil || prev.Grant == nil {
		t.Fatalf("Authorize under the grant: %+v, %v", prev.Grant, err)
	}

	s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.MaxGrant = 10 * time.Minute }), nil)
	got := s.stored(t, r.ID)
	if !got.GrantEnd.Equal(g.GrantStart.Add(10*time.Minute)) || got.State != broker.RequestApproved ||
		!strings.HasPrefix(got.Revised, `rule "db-jp-02-needs-two-approvals" now grants at most 10m0s from the grant's start`) {
		t.Fatalf("after the reload: %s until %v, revised %q; want approved until %v, told why", got.State, got.GrantEnd, got.Revised, g.GrantStart.Add(10*time.Minute))
	}
	waitFor(t, hook, 5*time.Second, "OnGrantsChanged call after a grant was cut")
	if ok, why := s.b.StillAllowed("li", dbJP2, source, s.keys["li"], prev); !ok {
		t.Errorf("StillAllowed under the cut grant before its new end = false (%s)", why)
	}
	if d, _, _ := s.b.Authorize(ctx, "li", dbJP2, source); d.Grant == nil || !d.Grant.Until.Equal(got.GrantEnd) {
		t.Errorf("a new session under the cut grant is given %+v, want until %v", d.Grant, got.GrantEnd)
	}
	if n := s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.MaxGrant = 4 * time.Hour }), nil); n != 0 {
		t.Errorf("a reload raising max_grant again revised %d requests; a grant is never lengthened", n)
	}

	// A limit the grant has already outlived ends it at once.
	s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.MaxGrant = time.Nanosecond }), nil)
	got = s.stored(t, r.ID)
	if got.ActiveGrant(time.Now()) {
		t.Fatalf("a grant older than the new max_grant is still in force until %v", got.GrantEnd)
	}
	ok, why := s.b.StillAllowed("li", dbJP2, source, s.keys["li"], prev)
	if ok || !strings.Contains(why, "was cut to end at") || !strings.Contains(why, "now grants at most 1ns") {
		t.Errorf("StillAllowed after the grant was cut to now = %v, %q; want false, told why", ok, why)
	}
	want := []broker.EventKind{broker.EventRequestCreated, broker.EventRequestApproval, broker.EventRequestApproved,
		broker.EventRequestRevised, broker.EventRequestRevised}
	if got := s.notes.kinds(r.ID); !slices.Equal(got, want) {
		t.Errorf("notified %v, want %v", got, want)
	}
	hardening.Report(t, "11", "a reload cutting max_grant from 4h to 10m: a 4h grant ends 10m after its start, audited, the grants-changed hook runs and new sessions get the new end; one it has outlived ends at once and the session check says why; raising it again lengthens nothing")
}

// A rule removed, or no longer matching, revokes its grants and denies
// the requests waiting under it, by sekisho, saying why.
func TestReloadEndsWhatTheRulesNoLongerAllow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rules []broker.Rule
		why   string
	}{
		{"removed", slices.DeleteFunc(baseRules(), func(r broker.Rule) bool { return r.Name == oneRule }),
			`rule "db-jp-01-needs-approval" no longer decides li's access to db-jp-01: access to db-jp-01 denied: no rule allows`},
		{"no longer matching", withRule(oneRule, func(r *broker.Rule) { r.Match.Technicians = []string{"wei"} }),
			`rule "db-jp-01-needs-approval" no longer decides li's access to db-jp-01`},
		{"now allowing", withRule(oneRule, func(r *broker.Rule) { r.Effect = broker.Allow }),
			`rule "db-jp-01-needs-approval" no longer decides li's access to db-jp-01: allowed by rule`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newScenario(t, time.Hour)
			ctx := t.Context()
			hook := make(chan struct{}, 8)
			s.b.OnGrantsChanged(func() { hook <- struct{}{} })
			g := s.grant(t)
			prev, _, err := s.b.Authorize(ctx, "li", dbJP, source)
			if err != nil || prev.Grant == nil {
				t.Fatalf("Authorize under the grant: %+v, %v", prev.Grant, err)
			}
			p, _, err := s.b.RequestAccess(ctx, "wei", dbJP, source, reason, 0)
			if err != nil {
				t.Fatal(err)
			}

			s.reload(t, tc.rules, nil)
			got := s.stored(t, g.ID)
			if got.State != broker.RequestRevoked || got.DecidedBy != "sekisho" || !strings.HasPrefix(got.Note, tc.why) {
				t.Fatalf("the grant after the reload: %s", got.Status(time.Now()))
			}
			waitFor(t, hook, 5*time.Second, "OnGrantsChanged call after a grant was revoked")
			if d, _, _ := s.b.Authorize(ctx, "li", dbJP, source); d.Grant != nil {
				t.Errorf("Authorize after the reload still finds the grant: %+v", d.Grant)
			}
			// A session under the grant ends, unless the rules now allow
			// it outright.
			if ok, why := s.b.StillAllowed("li", dbJP, source, s.keys["li"], prev); ok != (tc.name == "now allowing") {
				t.Errorf("StillAllowed under the revoked grant = %v, %q", ok, why)
			}
			if tc.name != "no longer matching" {
				if got := s.stored(t, p.ID); got.State != broker.RequestDenied || got.DecidedBy != "sekisho" {
					t.Errorf("wei's pending request after the reload: %s", got.Status(time.Now()))
				}
			}
			if !slices.Contains(s.notes.kinds(g.ID), broker.EventRequestRevoked) {
				t.Errorf("the revocation was not told: %v", s.notes.kinds(g.ID))
			}
		})
	}
	hardening.Report(t, "11", "a reload removing the approval rule, narrowing it to another technician, or making it allow: its grant is revoked by sekisho with why, live sessions are re-checked at once and refused, the requests waiting under it denied")
}

// An approval counts only while its approver may still decide: one by
// someone since locked, out of the approver groups, in the requester's
// affiliate under other_affiliate, or out of the request's review scope
// is dropped when the decision is made, and the request stays pending.
func TestApprovalsThatNoLongerCount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *scenario)
		why    string
	}{
		{"locked", func(t *testing.T, s *scenario) {
			if _, err := s.store.AddLock(t.Context(), broker.Lock{Kind: broker.LockTechnician, Name: "aiko", Reason: "INC-9 key leaked", By: "security", Created: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.b.RefreshLocks(t.Context()); err != nil {
				t.Fatal(err)
			}
		}, "the approval of aiko no longer counts: technician aiko is locked (lock 1)"},
		{"left the approver groups", func(t *testing.T, s *scenario) {
			s.replace(t, baseRules(), func(tech *broker.Technician) {
				if tech.Name == "aiko" {
					tech.Groups = nil
				}
			})
		}, `the approval of aiko no longer counts: aiko is no longer in a group that may decide requests under rule "db-jp-02-needs-two-approvals" (approvers)`},
		{"moved into the requester's affiliate", func(t *testing.T, s *scenario) {
			s.replace(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.OtherAffiliate = true }), func(tech *broker.Technician) {
				if tech.Name == "aiko" {
					tech.Affiliate = opsCN
				}
			})
		}, "the approval of aiko no longer counts: aiko is of li's affiliate ops-cn"},
		{"left the review scope", func(t *testing.T, s *scenario) {
			s.replace(t, baseRules(), func(tech *broker.Technician) {
				if tech.Name == "aiko" {
					tech.ReviewResidency = []string{"SG"}
				}
			})
		}, "the approval of aiko no longer counts: request 1 is outside aiko's review_residency (SG)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newScenario(t, time.Hour)
			r := s.request(t, dbJP2)
			s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
			tc.change(t, s) // no ReviseRequests: the decision itself checks
			got := s.approve(t, "kenji", r.ID, broker.RequestPending, "kenji")
			if !strings.HasPrefix(got.Revised, tc.why) {
				t.Errorf("revised %q, want %q", got.Revised, tc.why)
			}
			if !slices.Contains(s.notes.kinds(r.ID), broker.EventRequestRevised) {
				t.Errorf("the dropped approval was not told: %v", s.notes.kinds(r.ID))
			}
			if tc.name != "moved into the requester's affiliate" { // wei is li's colleague
				s.approve(t, "wei", r.ID, broker.RequestApproved, "kenji", "wei")
			}
		})
	}
	hardening.Report(t, "11", "an approval by someone since locked, out of the approver groups, moved into the requester's affiliate under other_affiliate, or out of the review scope no longer counts when the decision is made: a 2-approval request stays pending after the next approval, told why")
}

// A reload drops the approvals of people who may no longer decide from
// the requests waiting, and the waiting technician is told.
func TestReloadDropsApprovalsOfPendingRequests(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	s.reload(t, baseRules(), func(tech *broker.Technician) {
		if tech.Name == "aiko" {
			tech.Groups = nil
		}
	})
	if got := s.stored(t, r.ID); len(got.Approvals) != 0 || !strings.HasPrefix(got.Revised, "the approval of aiko no longer counts") {
		t.Errorf("after the reload: approvals %v, revised %q", got.Approvals, got.Revised)
	}
}

// A reload lowering the count grants a request whose approvals, all by
// people who may still decide, now meet it.
func TestReloadLoweringTheCountGrants(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP2)
	s.approve(t, "aiko", r.ID, broker.RequestPending, "aiko")
	s.reload(t, withRule(twoRule, func(r *broker.Rule) { r.Approval.Approvals = 1 }), nil)
	got := s.stored(t, r.ID)
	if got.State != broker.RequestApproved || !got.ActiveGrant(time.Now()) || got.GrantEnd.Sub(got.GrantStart) != 30*time.Minute {
		t.Errorf("after the reload: %s", got.Status(time.Now()))
	}
}
