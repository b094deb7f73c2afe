package broker

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// Powers are what some people may do to other people's access: approve
// and deny requests (the groups of an approval rule's approval.from), end
// sessions, revoke grants and lock (admin groups), watch live sessions
// (reviewer groups); each of them also gets a console sign-in link. A
// stolen key of such a person is worth more than a technician's: with it
// an accomplice's request is approved. So whoever holds a power gives a
// verification code when logging in to sekisho's own commands, whether or
// not their own sessions need one, unless the operator has named every
// group that gives them a power in powers_without_mfa.
const (
	PowerApprove = "approver"
	PowerAdmin   = "admin"
	PowerReview  = "reviewer"
)

// PowerGroups says which groups give which powers beyond the approval
// rules, and which groups' powers are used without a verification code.
type PowerGroups struct {
	Admin      []string // admin_groups
	Reviewer   []string // reviewer_groups
	WithoutMFA []string // powers_without_mfa
}

// SetPowersWithoutMFA sets the groups whose powers are used with the SSH
// key alone, as the operator chose (powers_without_mfa).
func (b *Broker) SetPowersWithoutMFA(groups []string) {
	g := slices.Clone(groups)
	b.powersWithoutMFA.Store(&g)
}

// powerGroups is the broker's PowerGroups as the config says now.
func (b *Broker) powerGroups() PowerGroups {
	load := func(p *atomic.Pointer[[]string]) []string {
		if g := p.Load(); g != nil {
			return *g
		}
		return nil
	}
	return PowerGroups{Admin: load(&b.adminGroups), Reviewer: load(&b.reviewerGroups), WithoutMFA: load(&b.powersWithoutMFA)}
}

// PowersNeedingMFA lists the powers technician holds, as the config says
// now, through a group not in powers_without_mfa: when it is not empty,
// their logins to sekisho's commands ask for a verification code.
func (b *Broker) PowersNeedingMFA(technician string) []string {
	t, ok := b.Technician(technician)
	if !ok {
		return nil
	}
	pg := b.powerGroups()
	return heldPowers(t.Groups, pg, b.Policy(), func(g string) bool { return !slices.Contains(pg.WithoutMFA, g) })
}

// heldPowers lists, in a fixed order, the powers that groups give for
// which counts(group) holds.
func heldPowers(groups []string, pg PowerGroups, p *Policy, counts func(string) bool) []string {
	var out []string
	for _, g := range groups {
		if !counts(g) {
			continue
		}
		for _, power := range groupPowers(g, pg, p) {
			if !slices.Contains(out, power) {
				out = append(out, power)
			}
		}
	}
	order := []string{PowerApprove, PowerAdmin, PowerReview}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(order, a) - slices.Index(order, b) })
	return out
}

// groupPowers lists the powers group g gives.
func groupPowers(g string, pg PowerGroups, p *Policy) []string {
	var out []string
	if p != nil && slices.ContainsFunc(p.Rules, func(r Rule) bool { return r.Effect == Approval && slices.Contains(r.Approval.From, g) }) {
		out = append(out, PowerApprove)
	}
	if slices.Contains(pg.Admin, g) {
		out = append(out, PowerAdmin)
	}
	if slices.Contains(pg.Reviewer, g) {
		out = append(out, PowerReview)
	}
	return out
}

// GroupGivesPowers reports whether group g gives any power under pg and p.
func GroupGivesPowers(g string, pg PowerGroups, p *Policy) bool {
	return len(groupPowers(g, pg, p)) > 0
}

// LintPowers warns of each group in pg.WithoutMFA whose members use
// their powers with the SSH key alone, naming them: `sekisho policy
// check` prints these with the rules' findings.
func LintPowers(techs []*Technician, pg PowerGroups, p *Policy) []Finding {
	var out []Finding
	for _, g := range pg.WithoutMFA {
		powers := groupPowers(g, pg, p)
		if len(powers) == 0 {
			continue
		}
		// Members who hold a power through another group are asked anyway.
		var unasked []string
		for _, t := range techs {
			if slices.Contains(t.Groups, g) && len(heldPowers(t.Groups, pg, p, func(h string) bool { return !slices.Contains(pg.WithoutMFA, h) })) == 0 {
				unasked = append(unasked, t.Name)
			}
		}
		if len(unasked) == 0 {
			continue
		}
		slices.Sort(unasked)
		out = append(out, Finding{Message: fmt.Sprintf(
			"powers_without_mfa: group %s uses its powers (%s) with the SSH key alone: a stolen key of %s is enough to use them; remove the group from powers_without_mfa so that its members give a verification code",
			g, strings.Join(powers, ", "), strings.Join(unasked, " or "))})
	}
	return out
}
