package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Scope is the part of the register a person may see and act on, by the
// residency of what it concerns: the residencies of their technician
// entry's review_residency, or every residency when it has none. It is one
// scope for every action of an admin, approver or reviewer, over SSH, in
// the console and in its API: seeing, watching and ending sessions and
// their recordings, listing and deciding access requests and grants,
// adding and removing locks.
type Scope struct {
	// Residencies lists the residencies in scope; nil means every one.
	Residencies []string
}

// Unlimited reports whether s covers every residency.
func (s Scope) Unlimited() bool { return s.Residencies == nil }

// Covers reports whether something tied to residency lies within s. The
// empty residency is something tied to no one residency: a lock on an
// affiliate or a technician, which stops them everywhere, or a request
// for a target no longer configured. Only an unlimited scope covers it,
// so that the scope is closed by default.
func (s Scope) Covers(residency string) bool {
	return s.Residencies == nil || residency != "" && slices.Contains(s.Residencies, residency)
}

// String describes s for people and the audit log.
func (s Scope) String() string {
	switch {
	case s.Residencies == nil:
		return "all residencies"
	case len(s.Residencies) == 0:
		return "no residency"
	}
	return strings.Join(s.Residencies, ", ")
}

// Concern is what an action touches, as the scope check sees it.
type Concern struct {
	// What names it in messages and the audit log: "request 7",
	// "session 0b1c…", "affiliate ops-cn".
	What string
	// Residency is the residency it is tied to (a session's, or its
	// target's); empty when it is tied to no one residency (see Covers).
	Residency string
	// Target and Session name it in the audit event of a refusal.
	Target, Session string
}

// SessionConcern is a session (live or recorded) to target, of residency.
func SessionConcern(id, target, residency string) Concern {
	return Concern{What: "session " + id, Residency: residency, Target: target, Session: id}
}

// RequestConcern is access request r: the residency of its target as
// configured now.
func (b *Broker) RequestConcern(r *AccessRequest) Concern {
	c := Concern{What: fmt.Sprintf("request %d", r.ID), Target: r.Target}
	if tg, ok := b.Target(r.Target); ok {
		c.Residency = tg.Residency
	}
	return c
}

// LockConcern is a lock of kind on name: a target lock is tied to the
// target's residency; a lock on an affiliate or a technician to none,
// since it stops them on every target.
func (b *Broker) LockConcern(kind, name string) Concern {
	c := Concern{What: kind + " " + name}
	if kind == LockTarget {
		c.Target = name
		if tg, ok := b.Target(name); ok {
			c.Residency = tg.Residency
		}
	}
	return c
}

// ScopeOf returns technician's scope as the config gives it now; a
// technician no longer configured has an empty one, which covers nothing.
func (b *Broker) ScopeOf(technician string) Scope {
	t, ok := b.Technician(technician)
	if !ok {
		return Scope{Residencies: []string{}}
	}
	return t.Scope()
}

// scopeRefusal is the scope rule: it returns why actor may not do action
// on c, or nil. Msg is what actor is told; why, for the audit log, names
// the residency as well.
func (b *Broker) scopeRefusal(actor, action string, c Concern) (rf *Refusal, why string) {
	sc := b.ScopeOf(actor)
	if sc.Covers(c.Residency) {
		return nil, ""
	}
	if c.Residency == "" {
		msg := fmt.Sprintf("%s is not tied to one residency: only someone without a review_residency (all residencies) may %s it; yours is %s",
			c.What, action, sc)
		return &Refusal{Msg: msg}, fmt.Sprintf("%s is tied to no one residency, and the reviewer's residencies are limited (%s)", c.What, sc)
	}
	return &Refusal{Msg: fmt.Sprintf("%s is outside your review_residency (%s): you may not %s it", c.What, sc, action)},
		fmt.Sprintf("%s of residency %s is outside the reviewer's residencies (%s)", c.What, c.Residency, sc)
}

// CheckScope is the scope check of every action a person takes on
// sessions, recordings and locks, over SSH, in the console and its API
// (access requests check it as they decide who may decide them). When c
// lies outside actor's scope it audits the refusal, as refused with the
// action and why, and returns a *Refusal that says why; a surface that
// hides what lies outside a scope (a session) may answer "not found"
// instead.
func (b *Broker) CheckScope(ctx context.Context, actor, action, source string, c Concern) error {
	rf, why := b.scopeRefusal(actor, action, c)
	if rf == nil {
		return nil
	}
	b.Audit(ctx, AuditEvent{Kind: EventRefused, Technician: actor, Target: c.Target, Source: source, Session: c.Session,
		Detail: JSONDetail(struct {
			Action string `json:"action"`
			On     string `json:"on"`
			Scope  string `json:"scope"`
			Why    string `json:"why"`
		}{action, c.What, b.ScopeOf(actor).String(), why})})
	return rf
}

// scopedTargets returns the targets configured now within sc, sorted; a
// non-nil empty slice when none is.
func (b *Broker) scopedTargets(sc Scope) []string {
	out := []string{}
	for name, tg := range b.rules.Load().targets {
		if sc.Covers(tg.Residency) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
