package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// What is already filed follows the rules in force: a reload that
// tightens an approval rule reaches requests waiting under it and grants
// issued under it, and an approval counts only while its approver may
// still decide. Grants are only ever shortened or revoked here, never
// lengthened; a pending request is held to its rule's count, approvers
// and max_grant as they are now.

// errUnchanged aborts a store update that found nothing to revise.
var errUnchanged = errors.New("nothing to revise")

// ReviseRequests holds every pending request and every grant in force to
// the technicians, targets, rules and locks in force now, as after a
// config reload, and returns how many it changed. A request whose rule
// no longer decides it (removed, no longer matching, or another rule
// deciding first) ends: a pending one denied, a grant revoked, by
// sekisho. Of a pending request, approvals by people who may no longer
// decide it are dropped, the count becomes the rule's, and a duration
// longer than the rule's max_grant is cut to it; a request the count is
// then met for is granted. A grant that lasts longer than max_grant now
// allows ends that long after it started (at once if that is past).
// Every change is audited and told to whoever waits on the request; live
// sessions follow through the grants-changed hook and StillAllowed. It
// runs after Replace, and as a server starts (the config may have
// changed while it was stopped).
func (b *Broker) ReviseRequests(ctx context.Context) (int, error) {
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	list, err := b.store.Requests(ctx, RequestFilter{States: []RequestState{RequestPending, RequestApproved}})
	if err != nil {
		return 0, fmt.Errorf("read requests: %w", err)
	}
	n, grants := 0, false
	for _, p := range list {
		was := p.State
		if kind, _ := b.revise(&p, b.now()); kind == "" {
			continue // a copy: nothing to change, as the store holds it
		}
		var kind EventKind
		r, err := b.store.UpdateRequest(ctx, p.ID, func(r *AccessRequest) error {
			if kind, _ = b.revise(r, b.now()); kind == "" {
				return errUnchanged
			}
			return nil
		})
		if errors.Is(err, errUnchanged) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("revise request %d: %w", p.ID, err)
		}
		n++
		note := r.Revised
		if r.State == RequestDenied || r.State == RequestRevoked {
			note = r.Note
		}
		b.transition(ctx, kind, r, "sekisho", note)
		grants = grants || was == RequestApproved || r.State == RequestApproved
	}
	if grants {
		b.grantsChanged()
	}
	if n > 0 {
		b.log.Info("pending requests and grants held to the rules in force", "revised", n)
	}
	return n, nil
}

// revise holds r to the rules in force at now (see ReviseRequests) and
// returns the event kind of what it changed, or "" when it changed
// nothing or r is neither pending nor a grant in force. For a pending
// request left pending, changes lists what changed.
func (b *Broker) revise(r *AccessRequest, now time.Time) (kind EventKind, changes []string) {
	pending := r.State == RequestPending && now.Before(r.Expires)
	if !pending && !r.ActiveGrant(now) {
		return "", nil
	}
	spec, why := b.ruleNow(r)
	if why != "" {
		return endUnder(r, now, why), nil
	}
	if !pending {
		limit := r.GrantStart.Add(spec.MaxGrant)
		if !r.GrantEnd.After(limit) {
			return "", nil
		}
		end := limit
		if end.Before(now) {
			end = now
		}
		r.Revised = fmt.Sprintf("rule %q now grants at most %s from the grant's start (%s)",
			r.Rule, spec.MaxGrant, r.GrantStart.UTC().Format(time.RFC3339))
		r.GrantEnd = end
		return EventRequestRevised, nil
	}
	if changes = b.holdPending(r, spec); len(changes) == 0 {
		return "", nil
	}
	r.Revised = strings.Join(changes, "; ")
	if len(r.Approvals) >= r.Needed {
		grantFrom(r, now)
		return EventRequestApproved, changes
	}
	return EventRequestRevised, changes
}

// ruleNow returns the approval settings of the rule r was filed under,
// as the rules in force give them, or why that rule no longer decides r:
// its technician or target is gone, or the rules, evaluated for them
// from where r was filed at the time it was filed (or granted), decide
// otherwise.
func (b *Broker) ruleNow(r *AccessRequest) (ApprovalSpec, string) {
	rs := b.rules.Load()
	tech, ok := rs.technicians[r.Technician]
	if !ok {
		return ApprovalSpec{}, fmt.Sprintf("technician %s is no longer registered", r.Technician)
	}
	tg, ok := rs.targets[r.Target]
	if !ok {
		return ApprovalSpec{}, fmt.Sprintf("target %s is no longer configured", r.Target)
	}
	at := r.Created
	if r.State == RequestApproved {
		at = r.GrantStart
	}
	d := b.Decide(tech, tg, r.Source, at)
	if d.Effect != Approval || d.Rule != r.Rule {
		return ApprovalSpec{}, fmt.Sprintf("rule %q no longer decides %s's access to %s: %s", r.Rule, r.Technician, r.Target, d.Reason)
	}
	return *d.Approval, ""
}

// holdPending holds pending request r to spec, the settings of its rule
// in force: it drops the approvals that no longer count, takes the
// rule's count, and cuts a duration longer than its max_grant. It
// returns what it changed, in words for the technician and the audit
// log.
func (b *Broker) holdPending(r *AccessRequest, spec ApprovalSpec) []string {
	var changes []string
	kept := make([]RequestApproval, 0, len(r.Approvals))
	for _, a := range r.Approvals {
		if why := b.approvalLapsed(a, r); why != "" {
			changes = append(changes, fmt.Sprintf("the approval of %s no longer counts: %s", a.By, why))
			continue
		}
		kept = append(kept, a)
	}
	if len(kept) == 0 {
		kept = nil
	}
	r.Approvals = kept
	if r.Needed != spec.Approvals {
		changes = append(changes, fmt.Sprintf("rule %q now needs %d approval(s)", r.Rule, spec.Approvals))
		r.Needed = spec.Approvals
	}
	if r.Duration > spec.MaxGrant {
		changes = append(changes, fmt.Sprintf("rule %q now grants at most %s: the duration asked for, %s, is cut to it",
			r.Rule, spec.MaxGrant, r.Duration))
		r.Duration = spec.MaxGrant
	}
	return changes
}

// approvalLapsed returns why a, an approval of r, no longer counts, or
// "": its approver may no longer decide r (mayDecide, which is the
// authority; the cases are told apart here for the requester, who is
// not the one refused).
func (b *Broker) approvalLapsed(a RequestApproval, r *AccessRequest) string {
	who, ok := b.Technician(a.By)
	if !ok {
		return fmt.Sprintf("%s is no longer registered", a.By)
	}
	if b.mayDecide(who, r) == "" {
		return ""
	}
	spec, _ := b.approvalSpec(r.Rule)
	sc := who.Scope()
	switch l := b.personLock(who); {
	case l != nil:
		return fmt.Sprintf("%s %s is locked (lock %d)", l.Kind, l.Name, l.ID)
	case !inAnyGroup(who, spec.From):
		return fmt.Sprintf("%s is no longer in a group that may decide requests under rule %q (%s)", who.Name, r.Rule, strings.Join(spec.From, ", "))
	case spec.OtherAffiliate && who.Affiliate.Name == r.Affiliate:
		return fmt.Sprintf("%s is of %s's affiliate %s, and rule %q needs an approver from another affiliate", who.Name, r.Technician, r.Affiliate, r.Rule)
	case !sc.Covers(b.RequestConcern(r).Residency):
		return fmt.Sprintf("request %d is outside %s's review_residency (%s)", r.ID, who.Name, sc)
	}
	return fmt.Sprintf("%s may no longer decide it", who.Name)
}

// endUnder ends r, which its rule no longer decides, for why: a pending
// request denied, a grant revoked, by sekisho. It returns the event kind.
func endUnder(r *AccessRequest, now time.Time, why string) EventKind {
	r.DecidedBy, r.DecidedAt, r.Note = "sekisho", now, why
	if r.State == RequestPending {
		r.State = RequestDenied
		return EventRequestDenied
	}
	r.State = RequestRevoked
	return EventRequestRevoked
}

// grantFrom makes pending request r a grant, from now for the duration
// asked for.
func grantFrom(r *AccessRequest, now time.Time) {
	r.State = RequestApproved
	r.DecidedAt = now
	r.GrantStart, r.GrantEnd = now, now.Add(r.Duration)
}
