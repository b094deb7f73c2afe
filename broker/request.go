package broker

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// RequestState is where an access request is in its life.
type RequestState string

// Access request states. A request is filed pending; approvals make it
// approved (a grant, until GrantEnd); a denial, the pending deadline, the
// requester or a revocation end it.
const (
	RequestPending   RequestState = "pending"
	RequestApproved  RequestState = "approved"
	RequestDenied    RequestState = "denied"
	RequestExpired   RequestState = "expired"
	RequestCancelled RequestState = "cancelled"
	RequestRevoked   RequestState = "revoked"
)

// RequestApproval is one approver's yes.
type RequestApproval struct {
	By        string    `json:"by"`
	Affiliate string    `json:"affiliate"`
	Comment   string    `json:"comment,omitempty"`
	At        time.Time `json:"at"`
}

// ApprovalSpec is what an approval rule asks of approvers.
type ApprovalSpec struct {
	// Approvals is how many distinct approvers must say yes; at least 1.
	Approvals int `json:"approvals"`
	// From lists the groups whose members may approve.
	From []string `json:"from"`
	// OtherAffiliate requires approvers from another affiliate than the
	// requester's.
	OtherAffiliate bool `json:"other_affiliate,omitempty"`
	// PendingFor is how long a request waits for approvals before it
	// expires.
	PendingFor time.Duration `json:"pending_for"`
	// MaxGrant bounds the duration a technician may ask for.
	MaxGrant time.Duration `json:"max_grant"`
}

// Default approval settings.
const (
	DefaultPendingFor = 15 * time.Minute
	DefaultMaxGrant   = time.Hour
)

// withDefaults fills in what the rule left unset.
func (s ApprovalSpec) withDefaults() ApprovalSpec {
	if s.Approvals < 1 {
		s.Approvals = 1
	}
	if s.PendingFor <= 0 {
		s.PendingFor = DefaultPendingFor
	}
	if s.MaxGrant <= 0 {
		s.MaxGrant = DefaultMaxGrant
	}
	return s
}

// AccessRequest is a technician's request to reach a target under an
// approval rule, and, once approved, the grant it gives.
type AccessRequest struct {
	ID               int64             `json:"id"`
	Technician       string            `json:"technician"`
	Affiliate        string            `json:"affiliate"`
	AffiliateCountry string            `json:"affiliate_country"`
	Target           string            `json:"target"`
	Rule             string            `json:"rule"`
	Source           string            `json:"source"`
	SourceCountry    string            `json:"source_country"` // of Source when filed, "" if unknown: see UsableFrom
	Reason           string            `json:"reason"`
	Duration         time.Duration     `json:"duration"` // the grant asked for
	State            RequestState      `json:"state"`
	Needed           int               `json:"needed"` // approvals needed
	Approvals        []RequestApproval `json:"approvals"`
	Created          time.Time         `json:"created"`
	Expires          time.Time         `json:"expires"` // while pending
	// DecidedBy, DecidedAt and Note say who ended the request and why
	// (denied, cancelled, revoked, expired).
	DecidedBy  string    `json:"decided_by,omitempty"`
	DecidedAt  time.Time `json:"decided_at,omitzero"`
	Note       string    `json:"note,omitempty"`
	GrantStart time.Time `json:"grant_start,omitzero"`
	GrantEnd   time.Time `json:"grant_end,omitzero"`
	// Revised says what the rules in force last changed of the request
	// after it was filed (see Broker.ReviseRequests), as its technician
	// is told: a count raised, approvals that no longer count, a
	// duration or a grant cut.
	Revised string `json:"revised,omitempty"`
}

// UsableFrom reports whether the request's grant may be used by a
// connection from src: from the source country the approvers saw, or,
// where none was known when the request was filed (and for requests
// filed before sekisho kept it), from the very address it was filed from.
// Another source needs a new request.
func (r *AccessRequest) UsableFrom(src SourceInput) bool {
	if r.SourceCountry != "" {
		return src.Country == r.SourceCountry
	}
	return src.Address != "" && src.Address == sourceAddress(r.Source)
}

// elsewhere tells a technician at src why r's grant does not let them in.
func (r *AccessRequest) elsewhere(src SourceInput) string {
	return fmt.Sprintf("request %d was approved for connections from %s; you are connecting from %s: file a new request",
		r.ID, describeSource(r.SourceCountry, sourceAddress(r.Source)), describeSource(src.Country, src.Address))
}

// From describes where the request was filed from, as approvers see it:
// the country and the address.
func (r *AccessRequest) From() string {
	addr := sourceAddress(r.Source)
	if r.SourceCountry == "" {
		return addr + " (country unknown)"
	}
	return r.SourceCountry + " (" + addr + ")"
}

// describeSource is a source's country, or its address when the country
// is unknown.
func describeSource(country, addr string) string {
	if country != "" {
		return country
	}
	return addr + " (country unknown)"
}

// sourceAddress is the address of host:port, as the rules see it.
func sourceAddress(source string) string {
	host := source
	if h, _, err := net.SplitHostPort(source); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// ActiveGrant reports whether the request is a grant in force at t.
func (r *AccessRequest) ActiveGrant(t time.Time) bool {
	return r.State == RequestApproved && t.Before(r.GrantEnd)
}

// Status describes the request's state at t in a few words.
func (r *AccessRequest) Status(t time.Time) string {
	switch r.State {
	case RequestPending:
		return fmt.Sprintf("pending, %d of %d approvals", len(r.Approvals), r.Needed)
	case RequestApproved:
		if !t.Before(r.GrantEnd) {
			return "grant ended " + r.GrantEnd.UTC().Format(time.RFC3339)
		}
		return "granted until " + r.GrantEnd.UTC().Format(time.RFC3339)
	}
	s := string(r.State)
	if r.DecidedBy != "" {
		s += " by " + r.DecidedBy
	}
	if r.Note != "" {
		s += ": " + r.Note
	}
	return s
}

// ApprovedBy reports whether name approved the request.
func (r *AccessRequest) ApprovedBy(name string) bool {
	for _, a := range r.Approvals {
		if a.By == name {
			return true
		}
	}
	return false
}

// RequestFilter narrows a request listing; zero fields do not filter.
type RequestFilter struct {
	Technician string
	Target     string
	// Targets, when not nil, keeps only requests for one of these
	// targets; a non-nil empty slice keeps none.
	Targets []string
	States  []RequestState
	Limit   int
	// Viewer, when set, keeps only the requests within that person's
	// scope (their review_residency): Broker.Requests turns it into
	// Targets; a Store does not read it.
	Viewer string
}

// Event is what notifications (webhooks) are told: a transition of an
// access request (Request set), a cross-border session starting or
// ending (Session set), or a session waiting for moderators (Moderation
// set).
type Event struct {
	Kind    EventKind      `json:"event"` // an EventRequest* or EventSessionCrossBorder* kind
	At      time.Time      `json:"at"`
	Request *AccessRequest `json:"request,omitempty"`
	Session *SessionNotice `json:"session,omitempty"`
	// By is who caused the transition (the requester, an approver, or
	// "sekisho" for an expiry); Note is their comment or reason.
	By   string `json:"by,omitempty"`
	Note string `json:"note,omitempty"`
	// Approvers are the technicians who may decide the request.
	Approvers []string `json:"approvers,omitempty"`
	// Moderation is a session waiting for moderators (kind
	// moderation.waiting); Moderators are who may moderate it.
	Moderation *ModerationNotice `json:"moderation,omitempty"`
	Moderators []string          `json:"moderators,omitempty"`
}

// SessionNotice is what a notification tells of a session.
type SessionNotice struct {
	ID               string    `json:"id"`
	Technician       string    `json:"technician"`
	Affiliate        string    `json:"affiliate"`
	AffiliateCountry string    `json:"affiliate_country"`
	Source           string    `json:"source"`
	SourceCountry    string    `json:"source_country"` // "" when unknown
	Target           string    `json:"target"`
	Residency        string    `json:"residency"`
	Login            string    `json:"login"`
	Rule             string    `json:"rule"`
	Request          int64     `json:"request,omitempty"` // the grant it runs under
	StartedAt        time.Time `json:"started_at"`
	EndedAt          time.Time `json:"ended_at,omitzero"`
	EndReason        string    `json:"end_reason,omitempty"`
	BytesIn          int64     `json:"bytes_in,omitempty"`  // technician to target
	BytesOut         int64     `json:"bytes_out,omitempty"` // target to technician
}

// Notifier delivers events (webhooks). Notify must not block.
type Notifier interface {
	Notify(Event)
	// Names lists the configured destinations, for the technician's
	// "notified" line.
	Names() []string
}
