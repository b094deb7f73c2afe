package broker

//go:generate go test ../internal/auditdoc -run TestAuditDoc -update

// EventKind names an audit event: what happened, for the `kind` field of
// every row of the audit log, of its syslog copy, and (for requests and
// cross-border sessions) of webhook notifications.
//
// The audit log is a public interface: security teams search it, SIEMs
// parse it. Every kind sekisho writes is a constant in this file and
// nowhere else (TestEveryAuditKindIsAConstant fails on a kind spelled as a
// string elsewhere, given as a string to an AuditEvent or an audit
// helper, or converted to EventKind), and docs/AUDIT.md is generated from the comments
// below (TestAuditDoc fails when it is stale; `go generate ./broker`
// rewrites it). A kind, once released, keeps its name and the meaning of
// its fields; fields may be added.
//
// Each comment names the fields the event fills besides at and kind, and
// what detail holds: JSON with the fields listed, or text for people.
type EventKind string

// Connections, decisions and sessions.
const (
	// A login that did not authenticate (a key not registered, a
	// certificate not accepted, a password tried). Fields: source.
	// Detail (JSON): login, method, key (its SHA256 fingerprint), note
	// (further failures of this login from this source are counted,
	// not each audited).
	EventAuthFailed EventKind = "auth.failed"

	// Something refused: a connection before its handshake, a target or
	// command not allowed, a channel or request type, a forward, a
	// transfer against the rules, an action outside a reviewer's scope,
	// a lock in force. Fields: technician, target, source, session where
	// known. Detail: text saying what was refused and why; JSON
	// {lock, kind, name, reason} for a lock, {action, on, scope, why} for
	// a scope refusal.
	EventRefused EventKind = "refused"

	// The rules' decision on a technician reaching a target. Fields:
	// technician, target, source. Detail (JSON): effect (allow, deny,
	// approval), rule, reason, grant (when an approved request
	// applies), inputs (technician, affiliate, source country, target,
	// residency, time), trace (each rule considered and why it matched
	// or not).
	EventDecision EventKind = "decision"

	// A certificate issued by Vault for a session. Fields: technician,
	// target, session. Detail (JSON): serial, key_id, principal,
	// valid_before (RFC 3339), critical_options, extensions, sign_ms.
	EventCertIssued EventKind = "cert.issued"

	// Vault did not issue a certificate (sealed, unreachable, the role
	// refused). Fields: technician, target, session. Detail: text, the
	// error.
	EventCertFailed EventKind = "cert.failed"

	// A target presented a host key other than the one pinned for it;
	// nothing was sent to it. Fields: technician, target, source,
	// session. Detail: text naming the keys.
	EventHostKey EventKind = "target.hostkey_mismatch"

	// A session started relaying, its recording open. Fields:
	// technician, target, source, session. Detail (JSON): affiliate,
	// residency, cross_border, rule, login.
	EventSessionStart EventKind = "session.start"

	// A session ended. Fields: technician, target, source, session.
	// Detail (JSON): reason, bytes_in, bytes_out; text "recording
	// failed: …" when it ended because its recording could not be
	// written.
	EventSessionEnd EventKind = "session.end"

	// A live session ended because its technician's key was removed or
	// a lock came into force. Fields: technician, target, session.
	// Detail: text, why.
	EventSessionRevoked EventKind = "session.revoked"

	// A live session ended because the grant it ran under ended or was
	// revoked. Fields: technician, target, session. Detail (JSON):
	// request, until, why.
	EventSessionGrantCut EventKind = "session.grant_cut"

	// An admin ended a live session (over SSH or in the console).
	// Fields: technician (who killed it), target, source, session.
	// Detail: text, the reason given.
	EventSessionKilled EventKind = "session.killed"

	// Somebody watched a live session, or replayed one from the start
	// while it ran (SSH `watch`, the console, the CLI). Fields:
	// technician (the watcher; empty from the CLI), target, source
	// ("web", "cli" or the address), session. Detail: text or JSON
	// {by, through, served_by} saying where it was watched from.
	EventSessionWatched EventKind = "session.watched"

	// A surviving node ended a session of a node lost from the cluster
	// and sealed its recording from the object store. Fields:
	// technician, target, source, session. Detail (JSON): node,
	// lost_after, by, recording.
	EventSessionNodeLost EventKind = "session.node_lost"

	// A port forward opened through a session (ssh -L, -D). Fields:
	// technician, target, session. Detail: text "HOST:PORT -> ADDRESS".
	EventForwardOpen EventKind = "forward.open"

	// A port forward closed. Fields: technician, target, session.
	// Detail (JSON): destination, bytes_in, bytes_out.
	EventForwardClose EventKind = "forward.close"

	// A ProxyJump (ssh -J) to a target answered by sekisho as that
	// target; the inner connection then goes through the same rules.
	// Fields: technician, target, source, session (the outer
	// connection's). Detail: text naming the destination asked for, the
	// target and the inner login.
	EventJump EventKind = "jump.open"

	// A connection to the node-to-node listener refused (a key other
	// than the cluster's host key, another method, a stalled handshake,
	// a flood). Fields: source. Detail: text, why.
	EventClusterRefused EventKind = "cluster.refused"
)

// Moderated sessions.
const (
	// A session whose rule asks for moderators waits for them; nothing
	// reaches the target yet. Also a webhook notification. Fields:
	// technician, target, source, session. Detail (JSON): rule,
	// moderators (how many must watch), may_moderate (who may).
	EventModerationWaiting EventKind = "moderation.waiting"

	// A moderator sat down to watch a session (`moderate` over SSH, or
	// "Join as moderator" in the console). Fields: technician (the
	// moderator), target, source (their address; "web" for the console;
	// "node NAME" when seated through another node of the cluster),
	// session. Detail (JSON): technician (whose session it is).
	EventModerationJoined EventKind = "moderation.joined"

	// A moderator left a session. Fields and detail as
	// moderation.joined.
	EventModerationLeft EventKind = "moderation.left"

	// A moderator sent the technician a line. Fields as
	// moderation.joined. Detail (JSON): technician, text.
	EventModerationMessage EventKind = "moderation.message"

	// A moderator held the technician's input: what they type is
	// dropped until a moderator releases it. Fields as
	// moderation.joined. Detail (JSON): technician.
	EventModerationHold EventKind = "moderation.hold"

	// A moderator released the technician's input. Fields and detail as
	// moderation.hold.
	EventModerationRelease EventKind = "moderation.release"

	// A moderator ended the session (session.revoked follows once a
	// started session has ended). Fields as moderation.joined. Detail
	// (JSON): technician, reason.
	EventModerationEnd EventKind = "moderation.end"
)

// Second factor (TOTP).
const (
	// A technician enrolled a second factor. Fields: technician.
	EventMFAEnrolled EventKind = "mfa.enrolled"

	// A verification code refused (wrong, reused, not enrolled, not
	// checked). Fields: technician, source. Detail: text, why.
	EventMFAFailed EventKind = "mfa.failed"

	// Too many wrong codes for a technician or from an address; codes
	// are refused for a while. Fields: technician, source. Detail: text
	// with the limits.
	EventMFAThrottled EventKind = "mfa.throttled"

	// A technician's sealed TOTP secret no longer opens with Vault's
	// transit key; their codes cannot be checked until re-enrolled.
	// Fields: technician. Detail: text with what to run.
	EventMFAUnopenable EventKind = "mfa.unopenable"

	// A TOTP secret in the clear found in the store that was not there
	// at start, and refused. Fields: technician. Detail: text.
	EventMFATampered EventKind = "mfa.tampered"

	// A TOTP secret kept in the clear was sealed with Vault's transit
	// key. Fields: technician.
	EventMFASealed EventKind = "mfa.sealed"
)

// Access requests. The same kinds name the webhook notifications of
// requests (their `event` field).
const (
	// A technician asked for access where the rules want approval.
	// Fields: technician, target, source. Detail (JSON) of every
	// request event: request (its number), state, by, note, rule,
	// reason, duration, approvals, needed, grant_end, approvers.
	EventRequestCreated EventKind = "request.created"
	// One approval given, more needed. Fields and detail as
	// request.created; by is the approver.
	EventRequestApproval EventKind = "request.approval"
	// The last approval given: a grant until grant_end. Fields and
	// detail as request.created.
	EventRequestApproved EventKind = "request.approved"
	// An approver denied the request. Fields and detail as
	// request.created.
	EventRequestDenied EventKind = "request.denied"
	// Nobody decided in time. Fields and detail as request.created; by
	// is "sekisho".
	EventRequestExpired EventKind = "request.expired"
	// The technician withdrew the request. Fields and detail as
	// request.created.
	EventRequestCancelled EventKind = "request.cancelled"
	// An approver or admin ended a grant early. Fields and detail as
	// request.created.
	EventRequestRevoked EventKind = "request.revoked"
	// A session started under the grant. Fields and detail as
	// request.created.
	EventRequestUsed EventKind = "request.used"
	// A pending request or grant changed because the rules changed
	// under it (its approvers, or its rule no longer applies). Fields
	// and detail as request.created; note says what changed.
	EventRequestRevised EventKind = "request.revised"
	// A request operation refused (approving one's own request, an
	// approver not named by the rule, a request already decided).
	// Fields: technician (who tried), target, source. Detail (JSON):
	// action, request, why.
	EventRequestRefused EventKind = "request.refused"
)

// Cross-border sessions. Webhook notifications only: the audit log has
// session.start and session.end with cross_border in their detail.
const (
	// A session from an affiliate outside the target's residency
	// started. Webhook body: session (id, technician, affiliate,
	// affiliate_country, source, source_country, target, residency,
	// login, rule, request, started_at).
	EventSessionCrossBorder EventKind = "session.cross_border"
	// That session ended. Webhook body: the session as above, with
	// ended_at and reason.
	EventSessionCrossBorderEnded EventKind = "session.cross_border_ended"
)

// Recordings.
const (
	// A recording sealed: its chunks' hash chain signed with the node's
	// recording key, kept in the register so that a seal re-made later
	// is found out. Fields: technician, target, session. Detail (JSON):
	// session, complete, reason, chunks, head, meta_sha256, key,
	// signature.
	EventRecordingSealed EventKind = "recording.sealed"

	// A recording could not be sealed at a session's end. Fields:
	// technician, target, session. Detail (JSON): session_end_reason,
	// error.
	EventRecordingSealFailed EventKind = "recording.seal_failed"

	// At start, a recording's seal could not be checked against the
	// register. Detail: text, the error.
	EventRecordingSealMissing EventKind = "recording.seal_missing"

	// At start, a recording a crash left unsealed was sealed as
	// incomplete. Fields: session. Detail: text, why.
	EventRecordingRecovered EventKind = "recording.recovered"

	// A lost node's recording could not be found whole in the object
	// store; what was there is sealed as incomplete. Fields: technician,
	// target, session. Detail (JSON): node, by, store, reason, complete,
	// chunks, head.
	EventRecordingUnshipped EventKind = "recording.unshipped"

	// Retention deleted a recording. Fields: technician, target,
	// session. Detail (JSON): residency, ended, retention.
	EventRecordingDeleted EventKind = "recording.deleted"

	// A legal hold put on a recording (`sekisho hold`): retention keeps
	// it. Fields: session. Detail (JSON): the hold (session, reason, by,
	// created).
	EventRecordingHold EventKind = "recording.hold"

	// A legal hold released. Fields: session. Detail (JSON): by.
	EventRecordingRelease EventKind = "recording.release"
)

// Locks.
const (
	// A lock added (a technician, affiliate, target or source kept
	// out). Fields: technician (who added it, in the console), source.
	// Detail (JSON): the lock (id, kind, name, reason, by, created,
	// expires).
	EventLockAdded EventKind = "lock.added"

	// A lock removed. Fields: technician (who removed it, in the
	// console), source. Detail (JSON): id, and by or reason.
	EventLockRemoved EventKind = "lock.removed"
)

// The web console.
const (
	// A sign-in link printed over SSH (`ssh … login`). Fields:
	// technician. Detail (JSON): roles, key, expires.
	EventWebLinkIssued EventKind = "web.link_issued"

	// A browser signed in, with a link printed over SSH or through
	// single sign-on. Fields: technician. Detail (JSON): roles, scope,
	// from; through single sign-on also via ("oidc"), issuer, subject
	// (the provider's), groups (as the ID token listed them).
	EventWebSignIn EventKind = "web.sign_in"

	// A sign-in refused: an unknown, used or expired link, a post from
	// another site, a person no longer allowed; through single sign-on
	// also an unknown, used or replayed state, a callback in another
	// browser, an ID token that does not verify (signature, issuer,
	// audience, expiry, nonce), a technician claim naming nobody, groups
	// that leave no console role. One row per source per 10 s; the next
	// says how many more there were. Fields: technician where known,
	// source. Detail: JSON {why, refused_since_last_row}, with via
	// ("oidc"), issuer and subject for single sign-on; or text.
	EventWebSignInRefused EventKind = "web.sign_in_refused"

	// A browser signed out. Fields: technician. Detail, for a session of
	// single sign-on (JSON): via ("oidc"), issuer, subject, at_provider
	// (whether the browser went on to sign out at the provider).
	EventWebSignOut EventKind = "web.sign_out"

	// A console request refused (no role for it, a CSRF token missing,
	// a request from another site, a session signed out because its
	// key or role went). Fields: technician, session where it applies.
	// Detail: JSON {method, path, why}, or text.
	EventWebRefused EventKind = "web.refused"

	// A session's page opened in the console. Fields: technician (the
	// viewer), target, source ("web"), session.
	EventWebView EventKind = "web.view"

	// A recording's channel replayed in the console. Fields:
	// technician, target, source ("web"), session. Detail (JSON):
	// channel.
	EventWebReplay EventKind = "web.replay"

	// A search of typed text in the console. Fields: technician.
	// Detail (JSON): query, sessions (how many matched), scope.
	EventWebSearch EventKind = "web.search"

	// A report produced in the console. Fields: technician. Detail
	// (JSON): report, from, to, rows.
	EventWebReport EventKind = "web.report"
)

// warnings are the kinds a syslog copy sends with severity warning, not
// notice: refusals, failures, and sessions ended against their
// technician's will.
var warnings = map[EventKind]bool{
	EventAuthFailed: true, EventRefused: true, EventCertFailed: true, EventHostKey: true,
	EventSessionRevoked: true, EventSessionGrantCut: true, EventSessionKilled: true, EventSessionNodeLost: true,
	EventModerationEnd:  true,
	EventClusterRefused: true,
	EventMFAFailed:      true, EventMFAThrottled: true, EventMFAUnopenable: true, EventMFATampered: true,
	EventRequestRefused:      true,
	EventRecordingSealFailed: true, EventRecordingSealMissing: true, EventRecordingRecovered: true, EventRecordingUnshipped: true,
	EventWebSignInRefused: true, EventWebRefused: true,
}

// Warning reports whether k is a refusal or a failure, which a syslog
// copy sends with severity warning.
func (k EventKind) Warning() bool { return warnings[k] }
