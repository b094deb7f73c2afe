package broker

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by a Store when the asked-for record does not exist.
var ErrNotFound = errors.New("not found")

// SessionRecord is the register entry of one connection through sekisho.
type SessionRecord struct {
	ID               string    `json:"id"`
	Technician       string    `json:"technician"`
	Affiliate        string    `json:"affiliate"`
	AffiliateCountry string    `json:"affiliate_country"`
	Source           string    `json:"source"`
	SourceCountry    string    `json:"source_country"` // "" when unknown
	SourceNetwork    string    `json:"source_network"`
	Target           string    `json:"target"`
	TargetAddress    string    `json:"target_address"`
	Residency        string    `json:"residency"`
	Login            string    `json:"login"`
	CrossBorder      bool      `json:"cross_border"`
	Rule             string    `json:"rule"`
	Trace            string    `json:"trace"` // JSON of []TraceStep
	CertSerial       uint64    `json:"cert_serial"`
	CertKeyID        string    `json:"cert_key_id"`
	StartedAt        time.Time `json:"started_at"`
	EndedAt          time.Time `json:"ended_at,omitzero"`
	BytesIn          int64     `json:"bytes_in"`  // technician to target
	BytesOut         int64     `json:"bytes_out"` // target to technician
	EndReason        string    `json:"end_reason,omitempty"`
	Recording        string    `json:"recording"` // recording location, relative to the recording directory
	// RecordingHead and RecordingChunks are the recording's seal, as
	// recorded when it was sealed: a seal.json replaced or re-made later
	// does not match them.
	RecordingHead     string `json:"recording_head,omitempty"`
	RecordingChunks   int    `json:"recording_chunks,omitempty"`
	RecordingComplete bool   `json:"recording_complete,omitempty"`
	// Request is the approved access request whose grant the session ran
	// under, so that a reviewer can go from a session to who asked for it,
	// why, and who approved it; 0 when the rules let it through without one.
	Request int64 `json:"request,omitempty"`
	// Node is the sekisho node that served the session (its node_name).
	Node string `json:"node,omitempty"`
	// Moderated says the rule the session ran under asked for moderators
	// (Decision.Moderation), so that a reviewer can tell the sessions
	// someone had to watch from those nobody had to. A session is
	// registered once it reaches its target, which a moderated one does
	// only once enough moderators watch; one that ended while it waited
	// is in the audit log (moderation.waiting), not in the register.
	Moderated bool `json:"moderated,omitempty"`
}

// Ended reports whether the session has finished.
func (s *SessionRecord) Ended() bool { return !s.EndedAt.IsZero() }

// SessionEnd is what is known when a session finishes.
type SessionEnd struct {
	At       time.Time
	BytesIn  int64
	BytesOut int64
	Reason   string
	// Technician, Target and Source name the session in the audit
	// event of its end, so that a search by them finds it.
	Technician, Target, Source string
}

// SessionFilter narrows a session listing. Zero fields do not filter;
// the fields that are set must all hold (AND).
type SessionFilter struct {
	Technician string
	Target     string
	// CrossBorder, when set, keeps only cross-border sessions (true) or
	// only domestic ones (false).
	CrossBorder *bool
	// Since keeps sessions started at or after it; Until those started
	// before it.
	Since time.Time
	Until time.Time
	// Affiliate, SourceCountry and Residency keep sessions whose field
	// equals them exactly.
	Affiliate     string
	SourceCountry string
	Residency     string
	// Residencies, when not nil, keeps only sessions whose residency is
	// one of them. It is a reviewer's residency scope, so it is closed by
	// default: a non-nil empty slice keeps no session at all, and only a
	// nil slice means "any residency".
	Residencies []string
	// EndReason keeps sessions whose end reason contains it, ignoring
	// ASCII case.
	EndReason string
	// HasFiles, when set, keeps only sessions with file transfers (true)
	// or only those without (false), as counted by the session's text
	// index; a session not indexed yet counts as without.
	HasFiles *bool
	// Text keeps sessions whose indexed typed or shown text matches it,
	// every whitespace-separated word (or, in double quotes, the whole
	// phrase) as a case-insensitive substring. It is not a query language:
	// operators and punctuation in it are searched for literally.
	Text string
	// Live keeps only sessions not ended in the register.
	Live bool
	// Node keeps the sessions the node of that name served.
	Node string
	// Limit caps the number of sessions returned (0: no cap); Offset skips
	// that many of the newest first, for paging.
	Limit  int
	Offset int
}

// SessionText is what a session's recording holds as text, for search.
type SessionText struct {
	Typed    string // what the technician typed on terminals, and exec commands run
	Shown    string // terminal and exec output, control sequences removed
	Files    int    // file transfers seen (sftp/scp)
	Commands int    // exec commands and typed command lines
}

// AuditEvent is one line of the audit log: a decision, a refusal, a session
// start or end, a certificate issued, a host key mismatch.
type AuditEvent struct {
	At         time.Time `json:"at"`
	Kind       EventKind `json:"kind"`
	Technician string    `json:"technician,omitempty"`
	Target     string    `json:"target,omitempty"`
	Source     string    `json:"source,omitempty"`
	Session    string    `json:"session,omitempty"`
	Detail     string    `json:"detail,omitempty"`
}

// AuditFilter narrows a search of the audit log; zero fields do not
// filter, and the fields set must all hold.
type AuditFilter struct {
	// Kinds are event kinds; one ending in "." or "*" is a prefix
	// ("mfa." or "mfa.*": every mfa event).
	Kinds      []string
	Technician string
	Target     string
	Session    string
	// Source is an address, with or without its port.
	Source       string
	Since, Until time.Time
	// Text is a substring of the detail, in any case (of ASCII letters).
	Text string
	// Limit is how many of the newest matching events; 0 means 100.
	Limit int
}

// LegalHold keeps a session's recording past its retention.
type LegalHold struct {
	Session string    `json:"session"`
	Reason  string    `json:"reason"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// Lock kinds: what a lock stops.
const (
	LockAffiliate  = "affiliate"
	LockTechnician = "technician"
	LockTarget     = "target"
)

// Lock stops new sessions and ends live ones of an affiliate, a technician
// or to a target, until it is removed or expires.
type Lock struct {
	ID      int64     `json:"id"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Reason  string    `json:"reason"`
	By      string    `json:"by"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: until removed
}

// Active reports whether the lock is in force at t.
func (l Lock) Active(t time.Time) bool { return l.Expires.IsZero() || t.Before(l.Expires) }

// Store keeps sessions and the audit log. The embedded implementation is
// SQLite (broker/sqlitestore); several nodes share a PostgreSQL one.
type Store interface {
	StartSession(ctx context.Context, s *SessionRecord) error
	EndSession(ctx context.Context, id string, end SessionEnd) error
	Session(ctx context.Context, id string) (SessionRecord, error)
	Sessions(ctx context.Context, f SessionFilter) ([]SessionRecord, error)
	Audit(ctx context.Context, e AuditEvent) error
	AuditEvents(ctx context.Context, limit int) ([]AuditEvent, error)
	// SearchAudit returns the newest events that match f, oldest first.
	SearchAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// AddLock stores a lock and returns it with its ID.
	AddLock(ctx context.Context, l Lock) (Lock, error)
	// RemoveLock removes a lock; ErrNotFound if there is none with that ID.
	RemoveLock(ctx context.Context, id int64) error
	// Locks returns the locks not removed and not expired at now.
	Locks(ctx context.Context, now time.Time) ([]Lock, error)
	// SetTOTP stores a technician's TOTP secret (sealed), replacing any
	// other, and forgets which codes were used.
	SetTOTP(ctx context.Context, technician, secret string) error
	// ReplaceTOTPSecret stores secret in place of old, keeping which
	// codes were used, and reports false if the stored secret is no
	// longer old.
	ReplaceTOTPSecret(ctx context.Context, technician, old, secret string) (bool, error)
	// TOTPSecrets returns every stored secret by technician.
	TOTPSecrets(ctx context.Context) (map[string]string, error)
	// TOTP returns a technician's TOTP state; ErrNotFound if not enrolled.
	TOTP(ctx context.Context, technician string) (TOTPState, error)
	// ClaimTOTPStep records that the code of step was used, and reports
	// false if that step or a later one was used before.
	ClaimTOTPStep(ctx context.Context, technician string, step int64) (bool, error)

	// CreateRequest stores a new access request and returns it with its
	// ID (IDs count up from 1).
	CreateRequest(ctx context.Context, r AccessRequest) (AccessRequest, error)
	// Request returns one access request; ErrNotFound if there is none.
	Request(ctx context.Context, id int64) (AccessRequest, error)
	// Requests lists access requests, newest first.
	Requests(ctx context.Context, f RequestFilter) ([]AccessRequest, error)
	// SetRecordingSeal records a session's recording seal; ErrNotFound if
	// the session is not registered.
	SetRecordingSeal(ctx context.Context, id, head string, chunks int, complete bool) error
	// SetHold puts a recording under a legal hold: retention keeps it.
	SetHold(ctx context.Context, h LegalHold) error
	// RemoveHold lifts a hold; ErrNotFound if there is none.
	RemoveHold(ctx context.Context, session string) error
	// Holds lists the holds in force.
	Holds(ctx context.Context) ([]LegalHold, error)

	// UpdateRequest reads a request, lets fn change it and writes it back,
	// atomically: no other update of the same request interleaves, on any
	// node. An error from fn aborts the update and is returned as is.
	UpdateRequest(ctx context.Context, id int64, fn func(*AccessRequest) error) (AccessRequest, error)

	// BeginAttempt counts an attempt at now as a failure under the key of
	// every limit, unless one of the keys already has its Max failures
	// within window before now: then it counts none and reports false.
	// The check and the count are one step on every node, so that
	// parallel attempts on several nodes cannot all pass the limit.
	// Failures older than window are dropped.
	BeginAttempt(ctx context.Context, limits []FailureLimit, now time.Time, window time.Duration) (bool, error)
	// ForgiveAttempt removes, under each of keys, one failure that
	// BeginAttempt counted at at: the attempt succeeded, or was no guess.
	ForgiveAttempt(ctx context.Context, keys []string, at time.Time) error

	// PutConsoleLink stores an unused sign-in link and drops the expired
	// ones; if its technician then has more than max unused links, the
	// oldest go, in the same step on every node.
	PutConsoleLink(ctx context.Context, l ConsoleLink, max int, now time.Time) error
	// PeekConsoleLink returns the link whose token hashes to tokenHash,
	// without using it; ErrNotFound if there is none valid at now.
	PeekConsoleLink(ctx context.Context, tokenHash string, now time.Time) (ConsoleLink, error)
	// TakeConsoleLink uses a link up and returns it; ErrNotFound if there
	// is none valid at now. Of takes of one link at once, on any nodes,
	// one gets it.
	TakeConsoleLink(ctx context.Context, tokenHash string, now time.Time) (ConsoleLink, error)
	// PutConsoleSession stores a signed-in browser and drops the sessions
	// not in force at now; if its technician then has more than max, the
	// oldest go, in the same step on every node.
	PutConsoleSession(ctx context.Context, s ConsoleSession, max int, now time.Time) error
	// ConsoleSession returns the browser session whose cookie hashes to
	// tokenHash, in force or not; ErrNotFound if there is none.
	ConsoleSession(ctx context.Context, tokenHash string) (ConsoleSession, error)
	// TouchConsoleSession moves a session's Seen forward to seen (never
	// back), and so its idle end; a session that is gone is no error.
	TouchConsoleSession(ctx context.Context, tokenHash string, seen time.Time) error
	// DeleteConsoleSession signs a browser out on every node; a session
	// that is gone is no error.
	DeleteConsoleSession(ctx context.Context, tokenHash string) error
	// PutOIDCLogin stores a single sign-on that has left for the identity
	// provider, and drops those expired at now.
	PutOIDCLogin(ctx context.Context, l OIDCLogin, now time.Time) error
	// TakeOIDCLogin deletes and returns the sign-on whose state hashes to
	// stateHash; ErrNotFound if there is none valid at now. Of takes of
	// one at once, on any nodes, one gets it.
	TakeOIDCLogin(ctx context.Context, stateHash string, now time.Time) (OIDCLogin, error)

	// Heartbeat records that node, serving at address since started,
	// is alive now, by the store's clock.
	Heartbeat(ctx context.Context, node, address string, started time.Time) error
	// Nodes lists the nodes that beat; a store of one node lists none.
	Nodes(ctx context.Context) ([]NodeBeat, error)
	// ClaimLostSessions ends, with reason, the live sessions of every
	// node that has not beaten for longer than lostAfter, and returns
	// them ended. It is one step on every node: a session
	// is returned once, and a node that beats before the claim keeps
	// its sessions. A store of one node claims none.
	ClaimLostSessions(ctx context.Context, lostAfter time.Duration, reason string) ([]SessionRecord, error)
	// RunJob runs fn unless another node is running the job called name,
	// or (every > 0) ran it less than every ago; it reports whether fn
	// ran, and returns its error. A store of one node always runs it.
	RunJob(ctx context.Context, name string, every time.Duration, fn func(context.Context) error) (bool, error)

	// ProbeWrite writes and commits node's row of a table only readiness
	// checks use: it fails when the store takes no writes (a full disk,
	// a read-only replica, a lost database), as sessions would.
	ProbeWrite(ctx context.Context, node string) error
}
