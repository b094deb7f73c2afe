package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ModerationSpec is a rule's moderation block: the sessions it lets
// through run only while enough people of the data's side watch them,
// able to hold the technician's input and end the session.
type ModerationSpec struct {
	// From lists the groups whose members may moderate.
	From []string `json:"from"`
	// Affiliates, if set, are the only affiliates moderators may be of.
	Affiliates []string `json:"affiliates,omitempty"`
	// DataCountry requires a moderator of an affiliate in the target's
	// residency: a person on the data's side of the border.
	DataCountry bool `json:"data_country,omitempty"`
	// Moderators is how many must watch at once; at least 1.
	Moderators int `json:"moderators"`
	// Grace is how long a session whose last moderator left waits, its
	// input held, for one to join again before it ends.
	Grace time.Duration `json:"grace"`
}

// DefaultModerationGrace is the grace period a rule that names none gets.
const DefaultModerationGrace = 30 * time.Second

func (s ModerationSpec) withDefaults() ModerationSpec {
	if s.Moderators < 1 {
		s.Moderators = 1
	}
	if s.Grace <= 0 {
		s.Grace = DefaultModerationGrace
	}
	return s
}

// Required reports whether the spec asks for moderation at all.
func (s ModerationSpec) Required() bool { return len(s.From) > 0 }

// MayModerate reports whether moderator may moderate technician's session
// on target under spec, and if not, why: never the technician, nobody of
// the technician's affiliate, only members of spec.From, of
// spec.Affiliates when it is set, of the target's residency when
// spec.DataCountry, and nobody locked.
func (b *Broker) MayModerate(moderator, technician string, target *Target, spec ModerationSpec) (bool, string) {
	m, ok := b.Technician(moderator)
	if !ok {
		return false, moderator + " is not a sekisho technician"
	}
	t, ok := b.Technician(technician)
	switch {
	case moderator == technician:
		return false, "a technician cannot moderate their own session"
	case !ok:
		return false, "the session's technician " + technician + " is no longer registered"
	case m.Affiliate.Name == t.Affiliate.Name:
		return false, fmt.Sprintf("%s is of %s, the technician's own affiliate: a moderator is of another", moderator, m.Affiliate.Name)
	case !inAnyGroup(m, spec.From):
		return false, fmt.Sprintf("%s is in none of the groups that moderate this session (%s)", moderator, strings.Join(spec.From, ", "))
	case len(spec.Affiliates) > 0 && !slices.Contains(spec.Affiliates, m.Affiliate.Name):
		return false, fmt.Sprintf("%s is of %s; this session's moderators are of %s", moderator, m.Affiliate.Name, strings.Join(spec.Affiliates, ", "))
	case spec.DataCountry && target == nil:
		return false, "the session's target is not known, so neither is the country of its data"
	case spec.DataCountry && !strings.EqualFold(m.Affiliate.Country, target.Residency):
		return false, fmt.Sprintf("%s's affiliate %s is in %s; this session's moderators are in %s, where its data lives",
			moderator, m.Affiliate.Name, m.Affiliate.Country, target.Residency)
	}
	if why, locked := b.Locked(moderator); locked {
		return false, why
	}
	return true, ""
}

// Moderators lists who may moderate technician's session on target under
// spec now: whom a waiting technician is told of.
func (b *Broker) Moderators(technician string, target *Target, spec ModerationSpec) []string {
	var out []string
	for name := range b.rules.Load().technicians {
		if ok, _ := b.MayModerate(name, technician, target, spec); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// ModerationNotice is a session waiting for moderators, as the audit log
// and the webhooks are told of it.
type ModerationNotice struct {
	Session    string         `json:"id"`
	Technician string         `json:"technician"`
	Affiliate  string         `json:"affiliate"`
	Target     string         `json:"target"`
	Source     string         `json:"source"`
	Rule       string         `json:"rule"`
	Spec       ModerationSpec `json:"-"`
	// Moderators is how many must watch.
	Moderators int `json:"moderators"`
}

// ModerationWaiting audits that a session waits for moderators and
// tells the webhooks, naming who may moderate it. It returns them, and
// the webhooks told.
func (b *Broker) ModerationWaiting(ctx context.Context, n ModerationNotice) (moderators, webhooks []string) {
	var t *Target
	if tg, ok := b.Target(n.Target); ok {
		t = tg
	}
	moderators = b.Moderators(n.Technician, t, n.Spec)
	n.Moderators = n.Spec.withDefaults().Moderators
	b.Audit(ctx, AuditEvent{Kind: EventModerationWaiting, Technician: n.Technician, Target: n.Target, Source: n.Source, Session: n.Session,
		Detail: JSONDetail(map[string]any{"rule": n.Rule, "moderators": n.Moderators, "may_moderate": moderators})})
	if b.notifier != nil {
		b.notifier.Notify(Event{Kind: EventModerationWaiting, At: b.now().UTC(), Moderation: &n, Moderators: moderators})
		webhooks = b.notifier.Names()
	}
	return moderators, webhooks
}

// ModeratedSession is a live session that waits for moderators or is
// moderated, as those who may moderate it see it.
type ModeratedSession struct {
	ID         string   `json:"id"`
	Technician string   `json:"technician"`
	Target     string   `json:"target"`
	Rule       string   `json:"rule"`
	Needed     int      `json:"needed"`     // how many moderators must watch
	Moderators []string `json:"moderators"` // who watches now
	Started    bool     `json:"started"`    // it reached its target
	HeldBy     string   `json:"held_by,omitempty"`
	Held       bool     `json:"held"` // the input is held (by a moderator, or none watches)
}
