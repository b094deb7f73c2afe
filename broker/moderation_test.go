package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// Who may moderate li's (ops-cn) session on a JP target: never li, nobody
// of ops-cn, only members of the groups named, of the affiliates named,
// of the data's country when asked.
func TestMayModerate(t *testing.T) {
	s := newScenario(t, time.Hour)
	tg, _ := s.b.Target(dbJP)
	approvers := broker.ModerationSpec{From: []string{"approvers"}}
	for _, tc := range []struct {
		name, moderator string
		spec            broker.ModerationSpec
		why             string // "" if allowed
	}{
		{"an approver of another affiliate", "aiko", approvers, ""},
		{"the technician", "li", approvers, "cannot moderate their own session"},
		{"the technician's own affiliate", "wei", approvers, "the technician's own affiliate"},
		{"outside the groups", "taro", approvers, "none of the groups that moderate this session (approvers)"},
		{"unknown", "nobody", approvers, "not a sekisho technician"},
		{"of the affiliates named", "kenji", broker.ModerationSpec{From: []string{"approvers"}, Affiliates: []string{operatorJP.Name}}, ""},
		{"not of the affiliates named", "aiko", broker.ModerationSpec{From: []string{"approvers"}, Affiliates: []string{operatorJP.Name}}, "this session's moderators are of " + operatorJP.Name},
		{"of the data's country", "aiko", broker.ModerationSpec{From: []string{"approvers"}, DataCountry: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := s.b.MayModerate(tc.moderator, "li", tg, tc.spec)
			if tc.why == "" && !ok {
				t.Errorf("%s refused: %s", tc.moderator, why)
			}
			if tc.why != "" && (ok || !strings.Contains(why, tc.why)) {
				t.Errorf("%s: allowed %v, %q; want refused saying %q", tc.moderator, ok, why, tc.why)
			}
		})
	}
	// Out of the data's country: sato is of ops-cn, as li, so take a
	// session of aiko's (ops-jp) on web-sg-01, resident in SG.
	sg, _ := s.b.Target(webSG)
	if ok, why := s.b.MayModerate("kenji", "aiko", sg, broker.ModerationSpec{From: []string{"approvers"}, DataCountry: true}); ok || !strings.Contains(why, "moderators are in SG") {
		t.Errorf("kenji (JP) on an SG session with data_country: %v %q", ok, why)
	}
	if got := strings.Join(s.b.Moderators("li", tg, approvers), " "); got != "aiko kenji" {
		t.Errorf("Moderators of li's session = %q, want aiko kenji", got)
	}
}

// A rule's moderation reaches the decision, with its defaults, for allow
// and approval rules alike; a rule without one asks for none.
func TestDecisionCarriesModeration(t *testing.T) {
	m := broker.ModerationSpec{From: []string{"approvers"}}
	policy, err := broker.NewPolicy([]broker.Rule{
		{Name: "watched", Effect: broker.Allow, Match: broker.Match{Targets: []string{"a"}}, Moderation: m},
		{Name: "approved-and-watched", Effect: broker.Approval, Match: broker.Match{Targets: []string{"b"}},
			Approval: broker.ApprovalSpec{From: []string{"approvers"}}, Moderation: m},
		{Name: "open", Effect: broker.Allow, Match: broker.Match{Targets: []string{"c"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tech := &broker.Technician{Name: "li", Affiliate: opsCN}
	for target, want := range map[string]bool{"a": true, "b": true, "c": false} {
		d := policy.Decide(broker.Request{Technician: tech, Target: &broker.Target{Name: target, Residency: "JP"}, SourceCountry: "CN"})
		if (d.Moderation != nil) != want {
			t.Errorf("target %s: moderation %+v, want it %v", target, d.Moderation, want)
			continue
		}
		if want && (d.Moderation.Moderators != 1 || d.Moderation.Grace != broker.DefaultModerationGrace) {
			t.Errorf("target %s: moderation %+v, want the defaults (1 moderator, %s grace)", target, *d.Moderation, broker.DefaultModerationGrace)
		}
	}
}
