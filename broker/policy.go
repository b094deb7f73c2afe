package broker

import (
	"fmt"
	"path"
	"strings"
)

// Effect is what a rule does when it matches.
type Effect string

const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
	// Approval means an admin must approve the access first. Until the
	// approval workflow exists, an approval rule refuses with a message
	// saying that approval is required.
	Approval Effect = "approval"
)

// Rule is one entry of the ordered rule list. All conditions of Match must
// hold for the rule to match; an empty condition holds for everyone.
type Rule struct {
	Name   string
	Effect Effect
	Match  Match
	// Login overrides the target's login (the certificate principal).
	Login string
	// Message is shown to the technician when the rule refuses access.
	Message string
}

// Match holds the conditions of a rule.
type Match struct {
	Technicians []string          // technician names
	Affiliates  []string          // affiliate names
	Targets     []string          // target names; shell patterns as in path.Match
	Residency   []string          // target residency countries
	Data        []string          // the target holds at least one of these data classes
	Labels      map[string]string // the target carries all these labels
	// CrossBorder, when set, requires that the technician's affiliate
	// country differs from (true) or equals (false) the target's residency.
	CrossBorder *bool
}

// Request is what a decision is made about.
type Request struct {
	Technician *Technician
	Target     *Target
	Source     string // client address, host:port
}

// CrossBorder reports whether the technician's affiliate sits in another
// country than the one where the target's data resides.
func (r Request) CrossBorder() bool {
	return !strings.EqualFold(r.Technician.Affiliate.Country, r.Target.Residency)
}

// Decision is the outcome of evaluating the rules for a request.
type Decision struct {
	Effect Effect
	// Rule names the rule that decided; empty when nothing matched and the
	// default deny applied.
	Rule string
	// Login is the account on the target (the certificate principal).
	Login string
	// Reason is the short explanation shown to the technician.
	Reason string
	// Trace lists every rule evaluated, in order, and why it did or did not
	// match. It goes to the audit log and the session record.
	Trace []TraceStep
}

// Allowed reports whether the decision lets the connection proceed.
func (d Decision) Allowed() bool { return d.Effect == Allow }

// TraceStep records the evaluation of one rule.
type TraceStep struct {
	Rule    string `json:"rule"`
	Effect  Effect `json:"effect"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"`
}

// Policy is an ordered list of rules. Precedence: a matching deny rule
// beats everything; otherwise the first matching allow or approval rule
// decides; when nothing matches, access is denied.
type Policy struct {
	Rules []Rule
}

// Decide evaluates every rule against req and returns the decision with
// its trace.
func (p *Policy) Decide(req Request) Decision {
	var (
		trace       []TraceStep
		firstDeny   *Rule
		firstAccept *Rule
	)
	for i := range p.Rules {
		r := &p.Rules[i]
		ok, why := r.Match.evaluate(req)
		trace = append(trace, TraceStep{Rule: r.Name, Effect: r.Effect, Matched: ok, Why: why})
		if !ok {
			continue
		}
		switch r.Effect {
		case Deny:
			if firstDeny == nil {
				firstDeny = r
			}
		default:
			if firstAccept == nil {
				firstAccept = r
			}
		}
	}
	facts := fmt.Sprintf("%s is resident in %s; affiliate %s is in %s",
		req.Target.Name, req.Target.Residency, req.Technician.Affiliate.Name, req.Technician.Affiliate.Country)
	d := Decision{Effect: Deny, Trace: trace}
	switch {
	case firstDeny != nil:
		d.Rule = firstDeny.Name
		d.Reason = fmt.Sprintf("access to %s denied by rule %q (%s)", req.Target.Name, firstDeny.Name, facts)
		if firstDeny.Message != "" {
			d.Reason += ": " + firstDeny.Message
		}
	case firstAccept != nil && firstAccept.Effect == Approval:
		d.Effect = Approval
		d.Rule = firstAccept.Name
		d.Reason = fmt.Sprintf("access to %s requires approval under rule %q (%s); access requests are not enabled on this bastion", req.Target.Name, firstAccept.Name, facts)
		if firstAccept.Message != "" {
			d.Reason += ": " + firstAccept.Message
		}
	case firstAccept != nil:
		d.Effect = Allow
		d.Rule = firstAccept.Name
		d.Login = req.Target.Login
		if firstAccept.Login != "" {
			d.Login = firstAccept.Login
		}
		d.Reason = fmt.Sprintf("allowed by rule %q", firstAccept.Name)
	default:
		d.Reason = fmt.Sprintf("access to %s denied: no rule allows technician %s of affiliate %s to reach it (%s)",
			req.Target.Name, req.Technician.Name, req.Technician.Affiliate.Name, facts)
	}
	return d
}

func (m *Match) evaluate(req Request) (bool, string) {
	t, tg := req.Technician, req.Target
	if len(m.Technicians) > 0 && !contains(m.Technicians, t.Name) {
		return false, fmt.Sprintf("technician %s not in %v", t.Name, m.Technicians)
	}
	if len(m.Affiliates) > 0 && !contains(m.Affiliates, t.Affiliate.Name) {
		return false, fmt.Sprintf("affiliate %s not in %v", t.Affiliate.Name, m.Affiliates)
	}
	if len(m.Targets) > 0 && !matchAny(m.Targets, tg.Name) {
		return false, fmt.Sprintf("target %s not in %v", tg.Name, m.Targets)
	}
	if len(m.Residency) > 0 && !containsFold(m.Residency, tg.Residency) {
		return false, fmt.Sprintf("residency %s not in %v", tg.Residency, m.Residency)
	}
	if len(m.Data) > 0 {
		held := false
		for _, c := range m.Data {
			held = held || tg.Holds(c)
		}
		if !held {
			return false, fmt.Sprintf("target holds none of %v", m.Data)
		}
	}
	for k, v := range m.Labels {
		got, ok := tg.Labels[k]
		if !ok {
			// An empty wanted value still requires the label to be there.
			return false, fmt.Sprintf("label %s absent, want %q", k, v)
		}
		if got != v {
			return false, fmt.Sprintf("label %s=%q, want %q", k, got, v)
		}
	}
	if m.CrossBorder != nil && req.CrossBorder() != *m.CrossBorder {
		return false, fmt.Sprintf("cross_border is %v (affiliate country %s, residency %s)",
			req.CrossBorder(), t.Affiliate.Country, tg.Residency)
	}
	return true, fmt.Sprintf("matched (affiliate country %s, residency %s, cross_border %v)",
		t.Affiliate.Country, tg.Residency, req.CrossBorder())
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
