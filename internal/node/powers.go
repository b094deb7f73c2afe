package node

import "github.com/sekisho/sekisho/broker"

// PowerGroups says which groups give powers, and which of them the
// operator lets use them without a verification code.
func (c *Config) PowerGroups() broker.PowerGroups {
	return broker.PowerGroups{Admin: c.AdminGroups, Reviewer: c.ReviewerGroups, WithoutMFA: c.PowersWithoutMFA}
}

// validatePowers refuses a powers_without_mfa entry that names no group
// giving a power: a misspelt group would leave the one meant asked for a
// code, and the operator wondering why.
func (c *Config) validatePowers() error {
	pg := c.PowerGroups()
	for _, g := range c.PowersWithoutMFA {
		if !broker.GroupGivesPowers(g, pg, c.policy) {
			return c.errf(0, "powers_without_mfa: group %q gives no power: it is in neither admin_groups, reviewer_groups nor any approval rule's approval.from", g)
		}
	}
	return nil
}
