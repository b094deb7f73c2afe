package broker

import (
	"strings"
	"testing"
)

var (
	opsJP = Affiliate{Name: "ops-jp", Country: "JP"}
	opsCN = Affiliate{Name: "ops-cn", Country: "CN"}
)

func testTechs() (aiko, li *Technician) {
	return &Technician{Name: "aiko", Affiliate: opsJP}, &Technician{Name: "li", Affiliate: opsCN}
}

func testTargets() (db, web *Target) {
	db = &Target{Name: "db-jp-01", Address: "10.0.0.1:22", Login: "dbadmin", Residency: "JP",
		Data: []string{"pii", "messages"}, Labels: map[string]string{"env": "prod", "tier": "db"}}
	web = &Target{Name: "web-sg-01", Address: "10.0.1.1:22", Login: "www", Residency: "SG",
		Labels: map[string]string{"env": "staging"}}
	return db, web
}

func boolp(b bool) *bool { return &b }

// demoRules are the rules of the demo configuration.
func demoRules() []Rule {
	return []Rule{
		{Name: "pii-stays-in-residency", Effect: Deny, Match: Match{Data: []string{"pii"}, CrossBorder: boolp(true)},
			Message: "personal data may only be reached by technicians of an affiliate in its residency country"},
		{Name: "pii-in-residency", Effect: Allow, Match: Match{Data: []string{"pii"}, CrossBorder: boolp(false)}},
		{Name: "any-affiliate-to-web", Effect: Allow, Match: Match{Targets: []string{"web-sg-01"}}},
	}
}

func TestDecideDemoRules(t *testing.T) {
	aiko, li := testTechs()
	db, web := testTargets()
	p := &Policy{Rules: demoRules()}

	tests := []struct {
		name      string
		tech      *Technician
		target    *Target
		effect    Effect
		rule      string
		login     string
		matched   []bool // per rule, in order
		reasonHas []string
	}{
		{
			name: "aiko to db-jp-01 is resident access", tech: aiko, target: db,
			effect: Allow, rule: "pii-in-residency", login: "dbadmin",
			matched:   []bool{false, true, false},
			reasonHas: []string{`allowed by rule "pii-in-residency"`},
		},
		{
			name: "li to db-jp-01 crosses the border", tech: li, target: db,
			effect: Deny, rule: "pii-stays-in-residency", login: "",
			matched: []bool{true, false, false},
			reasonHas: []string{
				`denied by rule "pii-stays-in-residency"`,
				"db-jp-01 is resident in JP",
				"affiliate ops-cn is in CN",
				"personal data may only be reached",
			},
		},
		{
			name: "li to web-sg-01", tech: li, target: web,
			effect: Allow, rule: "any-affiliate-to-web", login: "www",
			matched:   []bool{false, false, true},
			reasonHas: []string{`allowed by rule "any-affiliate-to-web"`},
		},
		{
			name: "aiko to web-sg-01", tech: aiko, target: web,
			effect: Allow, rule: "any-affiliate-to-web", login: "www",
			matched:   []bool{false, false, true},
			reasonHas: []string{`allowed by rule "any-affiliate-to-web"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(Request{Technician: tc.tech, Target: tc.target, SourceCountry: tc.tech.Affiliate.Country, Source: "192.0.2.1:5555"})
			if d.Effect != tc.effect || d.Rule != tc.rule || d.Login != tc.login {
				t.Fatalf("decision = {%s %q login %q}, want {%s %q login %q}; reason %q",
					d.Effect, d.Rule, d.Login, tc.effect, tc.rule, tc.login, d.Reason)
			}
			if got, want := d.Allowed(), tc.effect == Allow; got != want {
				t.Errorf("Allowed() = %v, want %v", got, want)
			}
			for _, s := range tc.reasonHas {
				if !strings.Contains(d.Reason, s) {
					t.Errorf("reason %q does not contain %q", d.Reason, s)
				}
			}
			checkTrace(t, d.Trace, p.Rules, tc.matched)
		})
	}
}

// checkTrace asserts one step per rule, in rule order, with the given
// Matched flags.
func checkTrace(t *testing.T, trace []TraceStep, rules []Rule, matched []bool) {
	t.Helper()
	if len(trace) != len(rules) || len(matched) != len(rules) {
		t.Fatalf("trace has %d steps for %d rules (want flags %v): %+v", len(trace), len(rules), matched, trace)
	}
	for i, st := range trace {
		if st.Rule != rules[i].Name || st.Effect != rules[i].Effect || st.Matched != matched[i] {
			t.Errorf("trace[%d] = {%q %s matched=%v}, want {%q %s matched=%v}",
				i, st.Rule, st.Effect, st.Matched, rules[i].Name, rules[i].Effect, matched[i])
		}
		if st.Why == "" {
			t.Errorf("trace[%d] has no explanation", i)
		}
		if st.Matched && !strings.HasPrefix(st.Why, "matched") {
			t.Errorf("trace[%d] matched, but Why = %q", i, st.Why)
		}
	}
}

func TestDecideTraceExplainsMisses(t *testing.T) {
	_, li := testTechs()
	db, _ := testTargets()
	p := &Policy{Rules: demoRules()}
	d := p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	want := []string{
		"matched (affiliate country CN, source country \"CN\", residency JP, cross_border true)",
		"cross_border is true (affiliate country CN, source country \"CN\", residency JP)",
		"target db-jp-01 not in [web-sg-01]",
	}
	for i, w := range want {
		if d.Trace[i].Why != w {
			t.Errorf("trace[%d].Why = %q, want %q", i, d.Trace[i].Why, w)
		}
	}
}

func TestDecideDenyAfterAllowWins(t *testing.T) {
	_, li := testTechs()
	db, _ := testTargets()
	rules := []Rule{
		{Name: "everyone-everywhere", Effect: Allow},
		{Name: "no-cn", Effect: Deny, Match: Match{Affiliates: []string{"ops-cn"}}},
		{Name: "later-allow", Effect: Allow, Match: Match{Technicians: []string{"li"}}},
	}
	p := &Policy{Rules: rules}
	d := p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	if d.Effect != Deny || d.Rule != "no-cn" || d.Login != "" || d.Allowed() {
		t.Fatalf("decision = %+v, want deny by no-cn", d)
	}
	if !strings.Contains(d.Reason, `denied by rule "no-cn"`) {
		t.Errorf("reason %q does not name the deny rule", d.Reason)
	}
	checkTrace(t, d.Trace, rules, []bool{true, true, true})

	// The first of several matching denies is named.
	p.Rules = append(p.Rules, Rule{Name: "second-deny", Effect: Deny})
	d = p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	if d.Effect != Deny || d.Rule != "no-cn" {
		t.Fatalf("decision = %+v, want deny by no-cn", d)
	}
}

func TestDecideFirstAllowDecides(t *testing.T) {
	aiko, _ := testTechs()
	db, _ := testTargets()
	rules := []Rule{
		{Name: "miss", Effect: Allow, Match: Match{Technicians: []string{"li"}}},
		{Name: "first", Effect: Allow, Login: "root", Match: Match{Targets: []string{"db-*"}}},
		{Name: "second", Effect: Allow, Login: "other"},
		{Name: "approval-later", Effect: Approval},
	}
	p := &Policy{Rules: rules}
	d := p.Decide(Request{Technician: aiko, Target: db, SourceCountry: aiko.Affiliate.Country})
	if d.Effect != Allow || d.Rule != "first" || d.Login != "root" {
		t.Fatalf("decision = {%s %q login %q}, want allow by first as root", d.Effect, d.Rule, d.Login)
	}
	checkTrace(t, d.Trace, rules, []bool{false, true, true, true})
}

func TestDecideDefaultDeny(t *testing.T) {
	_, li := testTechs()
	db, _ := testTargets()
	rules := []Rule{
		{Name: "aiko-only", Effect: Allow, Match: Match{Technicians: []string{"aiko"}}},
		{Name: "web-only", Effect: Allow, Match: Match{Targets: []string{"web-*"}}},
	}
	for _, p := range []*Policy{{Rules: rules}, {}} {
		d := p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
		if d.Effect != Deny || d.Rule != "" || d.Login != "" || d.Allowed() {
			t.Fatalf("decision = %+v, want default deny", d)
		}
		want := "access to db-jp-01 denied: no rule allows technician li of affiliate ops-cn to reach it (db-jp-01 is resident in JP; affiliate ops-cn is in CN)"
		if d.Reason != want {
			t.Errorf("reason = %q, want %q", d.Reason, want)
		}
		if len(p.Rules) == 0 && len(d.Trace) != 0 {
			t.Errorf("trace of empty policy = %+v, want none", d.Trace)
		}
		if len(p.Rules) > 0 {
			checkTrace(t, d.Trace, rules, []bool{false, false})
		}
	}
}

func TestDecideApproval(t *testing.T) {
	_, li := testTechs()
	db, _ := testTargets()
	rules := []Rule{
		{Name: "cn-needs-approval", Effect: Approval, Login: "root", Match: Match{Affiliates: []string{"ops-cn"}},
			Message: "ask the data protection officer"},
		{Name: "allow-all", Effect: Allow},
	}
	p := &Policy{Rules: rules}
	d := p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	if d.Effect != Approval || d.Rule != "cn-needs-approval" {
		t.Fatalf("decision = {%s %q}, want approval by cn-needs-approval", d.Effect, d.Rule)
	}
	if d.Allowed() {
		t.Error("an approval decision must not allow the connection")
	}
	// What the session gets once approved: the target's login, the
	// default approval settings.
	if d.Login == "" || d.Approval == nil || d.Approval.Approvals != 1 || d.Approval.PendingFor != DefaultPendingFor || d.Approval.MaxGrant != DefaultMaxGrant {
		t.Errorf("approval decision: login %q, approval %+v", d.Login, d.Approval)
	}
	for _, s := range []string{"requires approval", `rule "cn-needs-approval"`, "ask the data protection officer"} {
		if !strings.Contains(d.Reason, s) {
			t.Errorf("reason %q does not contain %q", d.Reason, s)
		}
	}
	checkTrace(t, d.Trace, rules, []bool{true, true})

	// An allow placed before the approval rule decides instead.
	rules = []Rule{rules[1], rules[0]}
	p.Rules = rules
	d = p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	if d.Effect != Allow || d.Rule != "allow-all" || d.Login != "dbadmin" {
		t.Fatalf("decision = {%s %q login %q}, want allow by allow-all as dbadmin", d.Effect, d.Rule, d.Login)
	}

	// A deny beats an approval.
	rules = append(rules, Rule{Name: "deny-cn", Effect: Deny, Match: Match{Affiliates: []string{"ops-cn"}}})
	p.Rules = []Rule{rules[1], rules[2]}
	d = p.Decide(Request{Technician: li, Target: db, SourceCountry: li.Affiliate.Country})
	if d.Effect != Deny || d.Rule != "deny-cn" {
		t.Fatalf("decision = {%s %q}, want deny by deny-cn", d.Effect, d.Rule)
	}
}

func TestMatchConditions(t *testing.T) {
	aiko, li := testTechs()
	db, web := testTargets()
	tests := []struct {
		name   string
		match  Match
		tech   *Technician
		target *Target
		want   bool
		why    string // expected Why when not matched; "" skips the check
	}{
		{"empty match holds for everyone", Match{}, li, db, true, ""},
		{"glob db-* matches db-jp-01", Match{Targets: []string{"db-*"}}, aiko, db, true, ""},
		{"glob db-* misses web-sg-01", Match{Targets: []string{"db-*"}}, aiko, web, false, "target web-sg-01 not in [db-*]"},
		{"glob *-sg-?? matches web-sg-01", Match{Targets: []string{"x", "*-sg-??"}}, aiko, web, true, ""},
		{"glob does not cross a prefix", Match{Targets: []string{"db"}}, aiko, db, false, ""},
		{"bad glob never matches", Match{Targets: []string{"db-[jp"}}, aiko, db, false, ""},
		{"technician listed", Match{Technicians: []string{"bob", "aiko"}}, aiko, db, true, ""},
		{"technician not listed", Match{Technicians: []string{"aiko"}}, li, db, false, "technician li not in [aiko]"},
		{"technician names are exact", Match{Technicians: []string{"Aiko"}}, aiko, db, false, ""},
		{"affiliate listed", Match{Affiliates: []string{"ops-jp"}}, aiko, db, true, ""},
		{"affiliate not listed", Match{Affiliates: []string{"ops-jp"}}, li, db, false, "affiliate ops-cn not in [ops-jp]"},
		{"residency JP", Match{Residency: []string{"JP"}}, li, db, true, ""},
		{"residency case-insensitive", Match{Residency: []string{"jp"}}, li, db, true, ""},
		{"residency other", Match{Residency: []string{"SG", "CN"}}, li, db, false, "residency JP not in [SG CN]"},
		{"data held", Match{Data: []string{"card", "messages"}}, li, db, true, ""},
		{"data not held", Match{Data: []string{"pii"}}, li, web, false, "target holds none of [pii]"},
		{"one label", Match{Labels: map[string]string{"env": "prod"}}, li, db, true, ""},
		{"all labels", Match{Labels: map[string]string{"env": "prod", "tier": "db"}}, li, db, true, ""},
		{"label value differs", Match{Labels: map[string]string{"env": "prod"}}, li, web, false, `label env="staging", want "prod"`},
		{"one label of two missing", Match{Labels: map[string]string{"env": "prod", "tier": "web"}}, li, db, false, `label tier="db", want "web"`},
		{"label absent", Match{Labels: map[string]string{"tier": "db"}}, li, web, false, `label tier absent, want "db"`},
		{"empty label value needs the label", Match{Labels: map[string]string{"owner": ""}}, li, web, false, `label owner absent, want ""`},
		{"empty label value matches an empty label", Match{Labels: map[string]string{"owner": ""}}, li, &Target{Name: "x", Residency: "JP", Labels: map[string]string{"owner": ""}}, true, ""},
		{"cross border true", Match{CrossBorder: boolp(true)}, li, db, true, ""},
		{"cross border false", Match{CrossBorder: boolp(false)}, aiko, db, true, ""},
		{"cross border false misses", Match{CrossBorder: boolp(false)}, aiko, web, false, "cross_border is true (affiliate country JP, source country \"JP\", residency SG)"},
		{"all conditions", Match{Technicians: []string{"aiko"}, Affiliates: []string{"ops-jp"}, Targets: []string{"db-*"},
			Residency: []string{"JP"}, Data: []string{"pii"}, Labels: map[string]string{"env": "prod"}, CrossBorder: boolp(false)}, aiko, db, true, ""},
		{"all but one condition", Match{Technicians: []string{"aiko"}, Affiliates: []string{"ops-jp"}, Targets: []string{"db-*"},
			Residency: []string{"JP"}, Data: []string{"pii"}, Labels: map[string]string{"env": "prod"}, CrossBorder: boolp(true)}, aiko, db, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Evaluate through Decide, as an allow rule, so that the whole
			// path is exercised.
			p := &Policy{Rules: []Rule{{Name: "r", Effect: Allow, Match: tc.match}}}
			d := p.Decide(Request{Technician: tc.tech, Target: tc.target, SourceCountry: tc.tech.Affiliate.Country})
			if got := d.Effect == Allow; got != tc.want {
				t.Fatalf("matched = %v, want %v (why %q)", got, tc.want, d.Trace[0].Why)
			}
			if d.Trace[0].Matched != tc.want {
				t.Errorf("trace Matched = %v, want %v", d.Trace[0].Matched, tc.want)
			}
			if tc.why != "" && d.Trace[0].Why != tc.why {
				t.Errorf("why = %q, want %q", d.Trace[0].Why, tc.why)
			}
		})
	}
}

func TestCrossBorderCaseInsensitive(t *testing.T) {
	tech := &Technician{Name: "aiko", Affiliate: Affiliate{Name: "ops-jp", Country: "JP"}}
	target := &Target{Name: "db", Login: "x", Residency: "jp", Data: []string{"pii"}}
	p := &Policy{Rules: demoRules()}
	d := p.Decide(Request{Technician: tech, Target: target, SourceCountry: tech.Affiliate.Country})
	if d.Effect != Allow || d.Rule != "pii-in-residency" {
		t.Fatalf("decision = {%s %q}, want allow by pii-in-residency (residency jp = JP)", d.Effect, d.Rule)
	}
}
