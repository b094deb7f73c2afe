package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/crypto/ssh"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Refusal is an access-request operation the broker refused, with the
// message for whoever asked. It is audited as request.refused.
type Refusal struct{ Msg string }

func (e *Refusal) Error() string { return e.Msg }

func refusef(format string, args ...any) error { return &Refusal{Msg: fmt.Sprintf(format, args...)} }

// Reason limits.
const (
	minReason = 3
	maxReason = 500
)

// requestHub wakes whoever waits on a request when it changes, on this
// node. Other nodes' changes arrive through ChangedElsewhere (the store's
// notifications), or are found by polling the store.
type requestHub struct {
	mu   sync.Mutex
	subs map[int64]map[chan struct{}]struct{}
}

// Subscribe returns a channel that receives a value whenever request id
// changes on this node, and a function to stop.
func (b *Broker) Subscribe(id int64) (<-chan struct{}, func()) {
	h := &b.hub
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[int64]map[chan struct{}]struct{}{}
	}
	if h.subs[id] == nil {
		h.subs[id] = map[chan struct{}]struct{}{}
	}
	h.subs[id][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[id], ch)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}
}

func (b *Broker) changed(id int64) {
	h := &b.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[id] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// ChangedElsewhere tells the broker that another node changed access
// request id, or, with id 0, that changes may have been missed (the
// store's notifications were interrupted): whoever waits on it here
// re-reads it at once, and live sessions re-check their grants.
func (b *Broker) ChangedElsewhere(id int64) {
	if id != 0 {
		b.changed(id)
	} else {
		h := &b.hub
		h.mu.Lock()
		for _, subs := range h.subs {
			for ch := range subs {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
		h.mu.Unlock()
	}
	b.grantsChanged()
}

// OnGrantsChanged registers f, called (in its own goroutine) whenever a
// grant is revoked, so that live sessions under it are re-checked at once.
func (b *Broker) OnGrantsChanged(f func()) {
	b.grantHook.Store(&f)
}

func (b *Broker) grantsChanged() {
	if f := b.grantHook.Load(); f != nil {
		go (*f)()
	}
}

// SetAdminGroups sets the groups whose members may list and end any live
// session and revoke any grant.
func (b *Broker) SetAdminGroups(groups []string) {
	g := slices.Clone(groups)
	b.adminGroups.Store(&g)
}

// SetReviewerGroups sets the groups whose members may see sessions and
// replay recordings in the web console.
func (b *Broker) SetReviewerGroups(groups []string) {
	g := slices.Clone(groups)
	b.reviewerGroups.Store(&g)
}

// IsReviewer reports whether technician is in a reviewer group.
func (b *Broker) IsReviewer(technician string) bool {
	t, ok := b.Technician(technician)
	if !ok {
		return false
	}
	groups := b.reviewerGroups.Load()
	return groups != nil && inAnyGroup(t, *groups)
}

// IsAdmin reports whether technician is in an admin group.
func (b *Broker) IsAdmin(technician string) bool {
	t, ok := b.Technician(technician)
	if !ok {
		return false
	}
	groups := b.adminGroups.Load()
	return groups != nil && inAnyGroup(t, *groups)
}

// IsApprover reports whether technician may approve requests under at
// least one rule.
func (b *Broker) IsApprover(technician string) bool {
	t, ok := b.Technician(technician)
	if !ok {
		return false
	}
	for _, r := range b.Policy().Rules {
		if r.Effect == Approval && inAnyGroup(t, r.Approval.From) {
			return true
		}
	}
	return false
}

func inAnyGroup(t *Technician, groups []string) bool {
	for _, g := range t.Groups {
		if slices.Contains(groups, g) {
			return true
		}
	}
	return false
}

// approvalSpec returns the approval settings of the rule called name.
func (b *Broker) approvalSpec(rule string) (ApprovalSpec, bool) {
	for _, r := range b.Policy().Rules {
		if r.Name == rule && r.Effect == Approval {
			return r.Approval.withDefaults(), true
		}
	}
	return ApprovalSpec{}, false
}

// personLock returns the lock in force on t or their affiliate, or nil.
func (b *Broker) personLock(t *Technician) *Lock {
	now := b.now()
	for _, l := range *b.locks.Load() {
		if l.Active(now) && (l.Kind == LockAffiliate && l.Name == t.Affiliate.Name || l.Kind == LockTechnician && l.Name == t.Name) {
			return &l
		}
	}
	return nil
}

// HasKeyFingerprint reports whether technician is registered now with
// the key whose SHA256 fingerprint (ssh.FingerprintSHA256) is fp: the web
// console's browser sessions last only as long as the key that made them.
func (b *Broker) HasKeyFingerprint(technician, fp string) bool {
	t, ok := b.Technician(technician)
	if !ok {
		return false
	}
	for _, k := range t.Keys {
		if ssh.FingerprintSHA256(k) == fp {
			return true
		}
	}
	return false
}

// Locked reports why technician is locked, in person or by affiliate, if
// they are: a locked person uses neither the SSH commands nor the console.
func (b *Broker) Locked(technician string) (string, bool) {
	t, ok := b.Technician(technician)
	if !ok {
		return "", false
	}
	if l := b.personLock(t); l != nil {
		return fmt.Sprintf("%s %s is locked (lock %d): %s", l.Kind, l.Name, l.ID, l.Reason), true
	}
	return "", false
}

// CommandAllowed reports whether technician, authenticated with key, may
// run sekisho's commands: still registered with that key, and not locked.
func (b *Broker) CommandAllowed(technician string, key ssh.PublicKey) (bool, string) {
	t, ok := b.Technician(technician)
	switch {
	case !ok:
		return false, fmt.Sprintf("technician %s is no longer registered", technician)
	case !t.HasKey(key):
		return false, fmt.Sprintf("the key this connection used is no longer registered for %s", technician)
	}
	if l := b.personLock(t); l != nil {
		return false, fmt.Sprintf("%s %s is locked (lock %d): %s", l.Kind, l.Name, l.ID, l.Reason)
	}
	return true, ""
}

// mayAct returns why who may not do action on r whatever their role
// (an admin's included), or "": they are locked, or r lies outside their
// scope.
func (b *Broker) mayAct(who *Technician, r *AccessRequest, action string) string {
	if l := b.personLock(who); l != nil {
		return lockedOut(l)
	}
	if rf, _ := b.scopeRefusal(who.Name, action, b.RequestConcern(r)); rf != nil {
		return rf.Msg
	}
	return ""
}

func lockedOut(l *Lock) string {
	return fmt.Sprintf("you may not decide requests: %s %s is locked (lock %d): %s", l.Kind, l.Name, l.ID, l.Reason)
}

// mayDecide returns why approver may not approve or deny r, or "".
func (b *Broker) mayDecide(approver *Technician, r *AccessRequest) string {
	if l := b.personLock(approver); l != nil {
		return lockedOut(l)
	}
	spec, ok := b.approvalSpec(r.Rule)
	if !ok {
		return fmt.Sprintf("rule %q of request %d no longer exists or no longer asks for approval", r.Rule, r.ID)
	}
	if approver.Name == r.Technician {
		return fmt.Sprintf("request %d is your own; another approver must decide it", r.ID)
	}
	if why := b.mayAct(approver, r, "decide"); why != "" {
		return why
	}
	if !inAnyGroup(approver, spec.From) {
		return fmt.Sprintf("you are not in a group that may decide requests under rule %q (groups %s)", r.Rule, strings.Join(spec.From, ", "))
	}
	if spec.OtherAffiliate && approver.Affiliate.Name == r.Affiliate {
		return fmt.Sprintf("rule %q needs an approver from another affiliate than %s", r.Rule, r.Affiliate)
	}
	return ""
}

// Approvers lists the technicians who may decide r under the rules in
// force.
func (b *Broker) Approvers(r *AccessRequest) []string {
	var out []string
	rs := b.rules.Load()
	for name, t := range rs.technicians {
		if b.mayDecide(t, r) == "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// activeGrant returns the grant in force for technician on target under
// rule that a connection from src may use, or nil; elsewhere is a grant
// in force for another source, or nil.
func (b *Broker) activeGrant(ctx context.Context, technician, target, rule string, src SourceInput) (usable, elsewhere *AccessRequest, err error) {
	list, err := b.store.Requests(ctx, RequestFilter{Technician: technician, Target: target, States: []RequestState{RequestApproved}})
	if err != nil {
		return nil, nil, fmt.Errorf("read grants: %w", err)
	}
	now := b.now()
	for i := range list {
		r := &list[i]
		if r.Rule != rule || !r.ActiveGrant(now) {
			continue
		}
		best := &elsewhere
		if r.UsableFrom(src) {
			best = &usable
		}
		if *best == nil || r.GrantEnd.After((*best).GrantEnd) {
			*best = r
		}
	}
	return usable, elsewhere, nil
}

// applyGrant turns an approval decision into an allowing one when the
// technician holds a grant for the target under that rule, usable from
// where they connect. A grant approved for another source does not
// apply: the decision says so, and the technician files a new request.
func (b *Broker) applyGrant(ctx context.Context, tech *Technician, tg *Target, d *Decision) error {
	if d.Effect != Approval || b.store == nil {
		return nil
	}
	g, other, err := b.activeGrant(ctx, tech.Name, tg.Name, d.Rule, d.Inputs.Source)
	if err != nil {
		return err
	}
	if g == nil {
		if other != nil {
			d.Reason = other.elsewhere(d.Inputs.Source)
		}
		return nil
	}
	by := make([]string, 0, len(g.Approvals))
	for _, a := range g.Approvals {
		by = append(by, a.By)
	}
	d.Effect = Allow
	d.Grant = &Grant{RequestID: g.ID, Until: g.GrantEnd, ApprovedBy: by}
	d.Reason = fmt.Sprintf("allowed by request %d under rule %q, approved by %s, until %s",
		g.ID, d.Rule, strings.Join(by, ", "), g.GrantEnd.UTC().Format(time.RFC3339))
	return nil
}

// grantGone explains why the grant a session ran under no longer lets it.
func (b *Broker) grantGone(ctx context.Context, g *Grant) string {
	r, err := b.store.Request(ctx, g.RequestID)
	if err != nil {
		return fmt.Sprintf("the grant of request %d can no longer be checked", g.RequestID)
	}
	switch {
	case r.State == RequestRevoked:
		return fmt.Sprintf("request %d was revoked by %s: %s", r.ID, r.DecidedBy, r.Note)
	case !b.now().Before(r.GrantEnd) && r.GrantEnd.Before(r.GrantStart.Add(r.Duration)) && r.Revised != "":
		return fmt.Sprintf("the grant of request %d was cut to end at %s: %s", r.ID, r.GrantEnd.UTC().Format(time.RFC3339), r.Revised)
	case !b.now().Before(r.GrantEnd):
		return fmt.Sprintf("the grant of request %d ended at %s", r.ID, r.GrantEnd.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("request %d no longer grants this session (%s)", r.ID, r.Status(b.now()))
}

// CheckReason validates the reason of an access request, as RequestAccess
// does, so that a prompt can ask again for the reason alone. It returns
// the reason trimmed.
func CheckReason(s string) (string, error) {
	return checkReason("a reason", s)
}

// CheckGrantDuration validates the duration asked for under rule, whose
// grants last at most max, as RequestAccess does; 0 means max.
func CheckGrantDuration(d time.Duration, rule string, max time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return max, nil
	case d < time.Minute:
		return 0, refusef("duration %s is too short: ask for at least 1m", d)
	case d > max:
		return 0, refusef("duration %s is longer than rule %q allows: ask for at most %s", d, rule, max)
	}
	return d, nil
}

// checkReason validates a reason a person typed.
func checkReason(what, s string) (string, error) {
	s = strings.TrimSpace(s)
	if len([]rune(s)) < minReason {
		return "", refusef("%s is required: at least %d characters (a ticket reference and what you will do)", what, minReason)
	}
	return CheckText(what, s)
}

// CheckText validates a comment, note or reason a person typed, as
// every way in (SSH commands, the console) takes it: not empty, at most
// 500 bytes, no control, invisible or replacement characters (see
// Unseen), since it ends up in audit lines, webhooks and on other
// people's terminals, where what cannot be seen could reorder or hide
// what an approver reads. It returns s trimmed.
func CheckText(what, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", refusef("%s is empty", what)
	}
	if len(s) > maxReason {
		return "", refusef("%s is too long: at most %d bytes", what, maxReason)
	}
	if i := strings.IndexFunc(s, Unseen); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return "", refusef("%s may not contain control characters or invisible formatting characters: U+%04X at character %d",
			what, r, utf8.RuneCountInString(s[:i])+1)
	}
	return s, nil
}

// Unseen reports whether r is a control character or one that changes or
// hides text without being seen: bidirectional controls (U+202E), zero
// widths and joiners (U+200B, U+200D, U+2060), the byte order mark
// (U+FEFF) and the other format characters, variation selectors and
// fillers (Unicode's default-ignorable code points), line and paragraph
// separators; and the replacement character, which invalid UTF-8 decodes
// to.
func Unseen(r rune) bool {
	return unicode.IsControl(r) || r == unicode.ReplacementChar ||
		unicode.In(r, unicode.Cf, unicode.Bidi_Control, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Zl, unicode.Zp)
}

// RequestAccess files an access request of technician for target, from
// source: its grant will be used from source's country only (see
// AccessRequest.UsableFrom). When the technician already has a pending
// request or an active grant for the target under the same rule, usable
// from source, it returns that one with existing set.
func (b *Broker) RequestAccess(ctx context.Context, technician, target, source, reason string, duration time.Duration) (req AccessRequest, existing bool, err error) {
	// One request per technician and target: the check and the insert
	// are not interleaved on this node.
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	defer func() { b.auditRefusal(ctx, err, technician, "request", 0, target, source) }()
	rs := b.rules.Load()
	tech, ok := rs.technicians[technician]
	if !ok {
		return req, false, refusef("unknown technician %q", technician)
	}
	tg, ok := rs.targets[target]
	if !ok {
		return req, false, refusef("no target called %q is available to you", target)
	}
	if l := b.lockFor(tech, tg); l != nil {
		return req, false, &Refusal{Msg: lockReason(tg.Name, l)}
	}
	d := b.Decide(tech, tg, source, b.now())
	switch d.Effect {
	case Allow:
		return req, false, refusef("no approval is needed: rule %q already allows you to reach %s", d.Rule, tg.Name)
	case Deny:
		return req, false, &Refusal{Msg: d.Reason}
	}
	spec := *d.Approval
	// A grant or a pending request for another source is not this
	// source's: approvers decide where a grant is used from.
	if g, _, err := b.activeGrant(ctx, tech.Name, tg.Name, d.Rule, d.Inputs.Source); err != nil {
		return req, false, err
	} else if g != nil {
		return *g, true, nil
	}
	pending, err := b.store.Requests(ctx, RequestFilter{Technician: tech.Name, Target: tg.Name, States: []RequestState{RequestPending}})
	if err != nil {
		return req, false, fmt.Errorf("read requests: %w", err)
	}
	for _, p := range pending {
		if p.Rule == d.Rule && b.now().Before(p.Expires) && p.UsableFrom(d.Inputs.Source) {
			return p, true, nil
		}
	}
	if reason, err = CheckReason(reason); err != nil {
		return req, false, err
	}
	if duration, err = CheckGrantDuration(duration, d.Rule, spec.MaxGrant); err != nil {
		return req, false, err
	}
	now := b.now()
	req, err = b.store.CreateRequest(ctx, AccessRequest{
		Technician: tech.Name, Affiliate: tech.Affiliate.Name, AffiliateCountry: tech.Affiliate.Country,
		Target: tg.Name, Rule: d.Rule, Source: source, SourceCountry: d.Inputs.Source.Country, Reason: reason, Duration: duration,
		State: RequestPending, Needed: spec.Approvals, Created: now, Expires: now.Add(spec.PendingFor),
	})
	if err != nil {
		return req, false, fmt.Errorf("store the request: %w", err)
	}
	b.transition(ctx, EventRequestCreated, req, tech.Name, reason)
	return req, false, nil
}

// transition audits a request's change, wakes those waiting on it and
// notifies the webhooks.
func (b *Broker) transition(ctx context.Context, kind EventKind, r AccessRequest, by, note string) {
	approvers := b.Approvers(&r)
	detail, _ := json.Marshal(map[string]any{
		"request": r.ID, "state": r.State, "by": by, "note": note, "rule": r.Rule, "reason": r.Reason,
		"duration": r.Duration.String(), "approvals": len(r.Approvals), "needed": r.Needed,
		"grant_end": r.GrantEnd, "approvers": approvers,
	})
	b.Audit(ctx, AuditEvent{Kind: kind, Technician: r.Technician, Target: r.Target, Source: r.Source, Detail: string(detail)})
	b.changed(r.ID)
	if b.notifier != nil {
		b.notifier.Notify(Event{Kind: kind, At: b.now().UTC(), Request: &r, By: by, Note: note, Approvers: approvers})
	}
}

// auditRefusal audits a refused request operation.
func (b *Broker) auditRefusal(ctx context.Context, err error, actor, action string, id int64, target, source string) {
	var rf *Refusal
	if !errors.As(err, &rf) {
		return
	}
	if target == "" && id != 0 {
		if r, err := b.store.Request(ctx, id); err == nil {
			target = r.Target
		}
	}
	detail, _ := json.Marshal(map[string]any{"action": action, "request": id, "why": rf.Msg})
	b.Audit(ctx, AuditEvent{Kind: EventRequestRefused, Technician: actor, Target: target, Source: source, Detail: string(detail)})
}

// Notified lists who is told of a new request: the approvers and the
// webhooks.
func (b *Broker) Notified(r *AccessRequest) (approvers, webhooks []string) {
	approvers = b.Approvers(r)
	if b.notifier != nil {
		webhooks = b.notifier.Names()
	}
	return approvers, webhooks
}

// update runs fn on request id; a pending request past its deadline is
// marked expired first and fn is not run.
func (b *Broker) update(ctx context.Context, id int64, fn func(*AccessRequest) error) (AccessRequest, error) {
	var expired bool
	r, err := b.store.UpdateRequest(ctx, id, func(r *AccessRequest) error {
		expired = false
		if r.State == RequestPending && !b.now().Before(r.Expires) {
			expire(r, b.now())
			expired = true
			return nil
		}
		return fn(r)
	})
	if errors.Is(err, ErrNotFound) {
		return r, refusef("there is no request %d", id)
	}
	if err != nil {
		return r, err
	}
	if expired {
		b.transition(ctx, EventRequestExpired, r, "sekisho", r.Note)
		return r, refusef("request %d expired at %s without enough approvals", id, r.Expires.UTC().Format(time.RFC3339))
	}
	return r, nil
}

func expire(r *AccessRequest, now time.Time) {
	r.State = RequestExpired
	r.DecidedBy = "sekisho"
	r.DecidedAt = now
	r.Note = fmt.Sprintf("no decision within %s", r.Expires.Sub(r.Created).Round(time.Second))
}

func notPending(r *AccessRequest, now time.Time) error {
	return refusef("request %d is no longer pending: %s", r.ID, r.Status(now))
}

// Approve records approver's approval of request id. The last approval
// needed makes it a grant, from now for the duration asked for.
func (b *Broker) Approve(ctx context.Context, approver string, id int64, comment string) (r AccessRequest, err error) {
	// Transitions of requests happen, and are told, in order.
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	defer func() { b.auditRefusal(ctx, err, approver, "approve", id, r.Target, "") }()
	who, ok := b.Technician(approver)
	if !ok {
		return r, refusef("unknown approver %q", approver)
	}
	comment = strings.TrimSpace(comment)
	if comment != "" {
		if comment, err = CheckText("a comment", comment); err != nil {
			return r, err
		}
	}
	// The decision is made on the rule as it is now and on the stored
	// approvals that still count (see revise); what that changes is kept
	// and told even when this approval is not the last one needed.
	var (
		ended   bool
		revised *AccessRequest // as revised, before this approval
	)
	r, err = b.update(ctx, id, func(r *AccessRequest) error {
		ended, revised = false, nil
		if r.State != RequestPending {
			return notPending(r, b.now())
		}
		now := b.now()
		spec, why := b.ruleNow(r)
		if why != "" {
			endUnder(r, now, why)
			ended = true
			return nil
		}
		if changes := b.holdPending(r, spec); len(changes) > 0 {
			r.Revised = strings.Join(changes, "; ")
			revised = &AccessRequest{}
			*revised = *r
		}
		if r.ApprovedBy(who.Name) {
			return refusef("you already approved request %d; it needs another approver (%d of %d)", r.ID, len(r.Approvals), r.Needed)
		}
		if why := b.mayDecide(who, r); why != "" {
			return &Refusal{Msg: why}
		}
		r.Approvals = append(slices.Clip(r.Approvals), RequestApproval{By: who.Name, Affiliate: who.Affiliate.Name, Comment: comment, At: now})
		if len(r.Approvals) >= r.Needed {
			grantFrom(r, now)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	if ended {
		b.transition(ctx, EventRequestDenied, r, "sekisho", r.Note)
		return r, notPending(&r, b.now())
	}
	if revised != nil {
		b.transition(ctx, EventRequestRevised, *revised, "sekisho", revised.Revised)
	}
	kind := EventRequestApproval
	if r.State == RequestApproved {
		kind = EventRequestApproved
	}
	b.transition(ctx, kind, r, who.Name, comment)
	return r, nil
}

// Deny ends pending request id with approver's reason.
func (b *Broker) Deny(ctx context.Context, approver string, id int64, reason string) (r AccessRequest, err error) {
	// Transitions of requests happen, and are told, in order.
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	defer func() { b.auditRefusal(ctx, err, approver, "deny", id, r.Target, "") }()
	who, ok := b.Technician(approver)
	if !ok {
		return r, refusef("unknown approver %q", approver)
	}
	if reason, err = checkReason("a reason", reason); err != nil {
		return r, err
	}
	r, err = b.update(ctx, id, func(r *AccessRequest) error {
		if r.State != RequestPending {
			return notPending(r, b.now())
		}
		if r.Technician == who.Name {
			return refusef("request %d is your own: cancel it with `cancel %d`", r.ID, r.ID)
		}
		// An admin may deny what they could not approve, within their
		// scope.
		if why := b.mayAct(who, r, "deny"); why != "" {
			return &Refusal{Msg: why}
		}
		if why := b.mayDecide(who, r); why != "" && !b.IsAdmin(who.Name) {
			return &Refusal{Msg: why}
		}
		r.State, r.DecidedBy, r.DecidedAt, r.Note = RequestDenied, who.Name, b.now(), reason
		return nil
	})
	if err != nil {
		return r, err
	}
	b.transition(ctx, EventRequestDenied, r, who.Name, reason)
	return r, nil
}

// Cancel ends technician's own pending request id.
func (b *Broker) Cancel(ctx context.Context, technician string, id int64, note string) (r AccessRequest, err error) {
	// Transitions of requests happen, and are told, in order.
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	defer func() { b.auditRefusal(ctx, err, technician, "cancel", id, r.Target, "") }()
	if note = strings.TrimSpace(note); note != "" {
		if note, err = CheckText("a note", note); err != nil {
			return r, err
		}
	}
	r, err = b.update(ctx, id, func(r *AccessRequest) error {
		if r.Technician != technician {
			return refusef("request %d is not yours; only %s can cancel it", r.ID, r.Technician)
		}
		if r.State != RequestPending {
			return notPending(r, b.now())
		}
		r.State, r.DecidedBy, r.DecidedAt, r.Note = RequestCancelled, technician, b.now(), note
		return nil
	})
	if err != nil {
		return r, err
	}
	b.transition(ctx, EventRequestCancelled, r, technician, note)
	return r, nil
}

// Revoke ends the grant of request id at once; live sessions under it end.
// The requester, an approver who may decide it, or an admin may revoke.
func (b *Broker) Revoke(ctx context.Context, by string, id int64, reason string) (r AccessRequest, err error) {
	// Transitions of requests happen, and are told, in order.
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	defer func() { b.auditRefusal(ctx, err, by, "revoke", id, r.Target, "") }()
	who, ok := b.Technician(by)
	if !ok {
		return r, refusef("unknown technician %q", by)
	}
	if reason, err = checkReason("a reason", reason); err != nil {
		return r, err
	}
	r, err = b.update(ctx, id, func(r *AccessRequest) error {
		if !r.ActiveGrant(b.now()) {
			return refusef("request %d is not an active grant: %s", r.ID, r.Status(b.now()))
		}
		if r.Technician != who.Name {
			if why := b.mayAct(who, r, "revoke"); why != "" {
				return &Refusal{Msg: why}
			}
			if why := b.mayDecide(who, r); why != "" && !b.IsAdmin(who.Name) {
				return &Refusal{Msg: why}
			}
		}
		r.State, r.DecidedBy, r.DecidedAt, r.Note = RequestRevoked, who.Name, b.now(), reason
		return nil
	})
	if err != nil {
		return r, err
	}
	b.transition(ctx, EventRequestRevoked, r, who.Name, reason)
	b.grantsChanged()
	return r, nil
}

// ExpireRequests marks pending requests past their deadline expired and
// returns how many it marked.
func (b *Broker) ExpireRequests(ctx context.Context) (int, error) {
	b.reqMu.Lock()
	defer b.reqMu.Unlock()
	list, err := b.store.Requests(ctx, RequestFilter{States: []RequestState{RequestPending}})
	if err != nil {
		return 0, fmt.Errorf("read requests: %w", err)
	}
	n := 0
	for _, p := range list {
		if b.now().Before(p.Expires) {
			continue
		}
		var did bool
		r, err := b.store.UpdateRequest(ctx, p.ID, func(r *AccessRequest) error {
			did = r.State == RequestPending && !b.now().Before(r.Expires)
			if did {
				expire(r, b.now())
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("expire request %d: %w", p.ID, err)
		}
		if did {
			n++
			b.transition(ctx, EventRequestExpired, r, "sekisho", r.Note)
		}
	}
	return n, nil
}

// GrantUsed audits a session starting under a grant.
func (b *Broker) GrantUsed(ctx context.Context, g *Grant, session string) {
	r, err := b.store.Request(ctx, g.RequestID)
	if err != nil {
		b.log.Error("grant used but not readable", "request", g.RequestID, "err", err)
		return
	}
	b.transition(ctx, EventRequestUsed, r, r.Technician, "session "+session)
}

// Request returns access request id.
func (b *Broker) Request(ctx context.Context, id int64) (AccessRequest, error) {
	r, err := b.store.Request(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return r, refusef("there is no request %d", id)
	}
	return r, err
}

// Requests lists access requests, newest first; with f.Viewer, only
// those within the viewer's scope.
func (b *Broker) Requests(ctx context.Context, f RequestFilter) ([]AccessRequest, error) {
	if f.Viewer != "" {
		if sc := b.ScopeOf(f.Viewer); !sc.Unlimited() {
			in := b.scopedTargets(sc)
			if f.Targets != nil {
				in = slices.DeleteFunc(in, func(t string) bool { return !slices.Contains(f.Targets, t) })
			}
			f.Targets = in
		}
	}
	return b.store.Requests(ctx, f)
}
