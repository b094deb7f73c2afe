package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Audit event kinds.
const (
	EventDecision     = "decision"
	EventAuthFailed   = "auth.failed"
	EventCertIssued   = "cert.issued"
	EventCertFailed   = "cert.failed"
	EventSessionStart = "session.start"
	EventSessionEnd   = "session.end"
	EventHostKey      = "target.hostkey_mismatch"
	EventRefused      = "refused"
)

// ErrUnknownTarget is returned when a technician names a target that is not
// configured. The message to the technician does not reveal which targets
// exist.
var ErrUnknownTarget = errors.New("unknown target")

// Broker answers the SSH side's questions: who is this, may they reach
// that, and with which certificate. It keeps the register of sessions.
type Broker struct {
	technicians map[string]*Technician
	targets     map[string]*Target
	policy      *Policy
	geo         *Geo
	issuer      *Issuer
	store       Store
	log         *slog.Logger
	now         func() time.Time
}

// Config holds what a Broker is made of.
type Config struct {
	Technicians []*Technician
	Targets     []*Target
	Policy      *Policy
	Geo         *Geo // locates source addresses; nil knows none
	Issuer      *Issuer
	Store       Store
	Logger      *slog.Logger
}

// New returns a broker.
func New(c Config) *Broker {
	b := &Broker{
		technicians: map[string]*Technician{},
		targets:     map[string]*Target{},
		policy:      c.Policy,
		geo:         c.Geo,
		issuer:      c.Issuer,
		store:       c.Store,
		log:         c.Logger,
		now:         time.Now,
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.policy == nil {
		b.policy = &Policy{}
	}
	for _, t := range c.Technicians {
		b.technicians[t.Name] = t
	}
	for _, t := range c.Targets {
		b.targets[t.Name] = t
	}
	return b
}

// Technician returns the technician called name.
func (b *Broker) Technician(name string) (*Technician, bool) {
	t, ok := b.technicians[name]
	return t, ok
}

// Target returns the target called name.
func (b *Broker) Target(name string) (*Target, bool) {
	t, ok := b.targets[name]
	return t, ok
}

// Store returns the state store.
func (b *Broker) Store() Store { return b.store }

// Authorize decides whether technician may reach target from source. The
// decision, with its full trace, is written to the audit log whatever it
// is; a refusal is logged as well.
func (b *Broker) Authorize(ctx context.Context, technician, target, source string) (Decision, *Target, error) {
	tech, ok := b.technicians[technician]
	if !ok {
		return Decision{}, nil, fmt.Errorf("unknown technician %q", technician)
	}
	tg, ok := b.targets[target]
	if !ok {
		b.Audit(ctx, AuditEvent{Kind: EventRefused, Technician: technician, Target: target, Source: source,
			Detail: "unknown target"})
		return Decision{Effect: Deny, Reason: fmt.Sprintf("no target called %q is available to you", target)}, nil, ErrUnknownTarget
	}
	d := b.Decide(tech, tg, source, b.now())
	detail, _ := json.Marshal(struct {
		Effect Effect      `json:"effect"`
		Rule   string      `json:"rule"`
		Reason string      `json:"reason"`
		Inputs Inputs      `json:"inputs"`
		Trace  []TraceStep `json:"trace"`
	}{d.Effect, d.Rule, d.Reason, d.Inputs, d.Trace})
	b.Audit(ctx, AuditEvent{Kind: EventDecision, Technician: technician, Target: target, Source: source, Detail: string(detail)})
	if !d.Allowed() {
		b.log.Warn("access refused", "technician", technician, "affiliate", tech.Affiliate.Name,
			"target", target, "residency", tg.Residency, "source", source, "rule", d.Rule, "reason", d.Reason)
	}
	return d, tg, nil
}

// Decide evaluates the rules for tech reaching tg from source at now,
// locating the source first. It records nothing: Authorize does that.
func (b *Broker) Decide(tech *Technician, tg *Target, source string, now time.Time) Decision {
	req := Request{Technician: tech, Target: tg, Source: source, Now: now}
	host := source
	if h, _, err := net.SplitHostPort(source); err == nil {
		host = h
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		req.SourceCountry, req.SourceNetwork = b.geo.Locate(addr)
	}
	return b.policy.Decide(req)
}

// Policy returns the rules in force.
func (b *Broker) Policy() *Policy { return b.policy }

// Certificate issues a short-lived certificate for one session. The key
// ID names the technician, the affiliate and the session, so the target's
// own sshd log says who connected.
func (b *Broker) Certificate(ctx context.Context, tech *Technician, d Decision, target *Target, sessionID string) (*Credential, error) {
	if !d.Allowed() {
		return nil, errors.New("certificate refused: access not allowed")
	}
	keyID := fmt.Sprintf("sekisho technician=%s affiliate=%s session=%s target=%s", tech.Name, tech.Affiliate.Name, sessionID, target.Name)
	cred, err := b.issuer.Issue(ctx, CertRequest{Principal: d.Login, KeyID: keyID})
	if err != nil {
		b.Audit(ctx, AuditEvent{Kind: EventCertFailed, Technician: tech.Name, Target: target.Name, Session: sessionID, Detail: err.Error()})
		return nil, err
	}
	b.Audit(ctx, AuditEvent{Kind: EventCertIssued, Technician: tech.Name, Target: target.Name, Session: sessionID,
		Detail: fmt.Sprintf(`{"serial":%d,"key_id":%q,"principal":%q,"valid_before":%q}`,
			cred.Certificate.Serial, keyID, d.Login, time.Unix(int64(cred.Certificate.ValidBefore), 0).UTC().Format(time.RFC3339))})
	return cred, nil
}

// Audit writes an event to the audit log (store and structured log). A
// failure to store it is logged; it never hides the event from the log.
func (b *Broker) Audit(ctx context.Context, e AuditEvent) {
	if e.At.IsZero() {
		e.At = b.now().UTC()
	}
	b.log.Info("audit", "kind", e.Kind, "technician", e.Technician, "target", e.Target,
		"source", e.Source, "session", e.Session, "detail", e.Detail)
	if b.store == nil {
		return
	}
	if err := b.store.Audit(ctx, e); err != nil {
		b.log.Error("audit store write failed", "kind", e.Kind, "err", err)
	}
}

// SessionStarted registers a session that is about to relay, and audits it.
func (b *Broker) SessionStarted(ctx context.Context, r *SessionRecord) error {
	if err := b.store.StartSession(ctx, r); err != nil {
		return err
	}
	b.Audit(ctx, AuditEvent{Kind: EventSessionStart, Technician: r.Technician, Target: r.Target, Source: r.Source, Session: r.ID,
		Detail: fmt.Sprintf(`{"affiliate":%q,"residency":%q,"cross_border":%v,"rule":%q,"login":%q}`, r.Affiliate, r.Residency, r.CrossBorder, r.Rule, r.Login)})
	return nil
}

// SessionEnded records the end of a session, and audits it.
func (b *Broker) SessionEnded(ctx context.Context, id string, end SessionEnd) error {
	err := b.store.EndSession(ctx, id, end)
	b.Audit(ctx, AuditEvent{Kind: EventSessionEnd, Session: id,
		Detail: fmt.Sprintf(`{"reason":%q,"bytes_in":%d,"bytes_out":%d}`, end.Reason, end.BytesIn, end.BytesOut)})
	return err
}
