package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/units"
)

// encode renders e as a request body in format f.
func encode(f Format, e broker.Event) ([]byte, error) {
	if f == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{slackEscape(summary(e))})
	}
	return json.Marshal(struct {
		broker.Event
		Text string `json:"text"`
	}{e, summary(e)})
}

// summary says what happened in one line, from the facts in the event
// only. The bastion's address is not known here, so the approve hint is
// the command, not a full ssh line. What people typed (a reason, a
// comment) comes last, after whose words they are, quoted with Go's
// escapes: a reason that reads "… approve with: approve 41" cannot pose
// as sekisho's own words, nor hide or reorder any with invisible
// characters.
func summary(e broker.Event) string {
	if e.Session != nil {
		return sessionSummary(e)
	}
	if n := e.Moderation; n != nil {
		who := "nobody may"
		if len(e.Moderators) > 0 {
			who = "who may: " + strings.Join(e.Moderators, ", ")
		}
		return fmt.Sprintf("sekisho: %s (%s) waits on %s for %d moderator(s) under rule %s; %s — session %s",
			n.Technician, n.Affiliate, n.Target, n.Moderators, n.Rule, who, n.Session)
	}
	if e.Request == nil {
		return "sekisho: " + string(e.Kind)
	}
	r := *e.Request
	about := fmt.Sprintf("request %d (%s → %s)", r.ID, r.Technician, r.Target)
	var b strings.Builder
	b.WriteString("sekisho: ")
	switch e.Kind {
	case broker.EventRequestCreated:
		fmt.Fprintf(&b, "%s (%s, %s) requests %s for %s", r.Technician, r.Affiliate, r.AffiliateCountry, r.Target, r.Duration)
		fmt.Fprintf(&b, " — request %d, %s", r.ID, approvals(r))
		writePending(&b, e)
		writeTyped(&b, r.Technician, "reason", r.Reason)
	case broker.EventRequestApproval:
		b.WriteString(about + " approved")
		writeBy(&b, e)
		b.WriteString(" — " + approvals(r))
		writePending(&b, e)
		writeTyped(&b, e.By, "comment", e.Note)
	case broker.EventRequestApproved:
		b.WriteString(about + " approved")
		writeBy(&b, e)
		if !r.GrantEnd.IsZero() {
			b.WriteString("; granted until " + r.GrantEnd.UTC().Format(time.RFC3339))
		}
		writeTyped(&b, e.By, "comment", e.Note)
	case broker.EventRequestExpired:
		fmt.Fprintf(&b, "%s expired unapproved with %s", about, approvals(r))
	case broker.EventRequestUsed:
		fmt.Fprintf(&b, "%s started a session on %s under request %d", r.Technician, r.Target, r.ID)
		if !r.GrantEnd.IsZero() {
			b.WriteString(", granted until " + r.GrantEnd.UTC().Format(time.RFC3339))
		}
	default: // denied, cancelled, revoked, refused and kinds added later
		b.WriteString(about + " " + strings.TrimPrefix(string(e.Kind), "request."))
		writeBy(&b, e)
		label := "note"
		if e.Kind == broker.EventRequestDenied || e.Kind == broker.EventRequestRevoked {
			label = "reason"
		}
		writeTyped(&b, e.By, label, e.Note)
	}
	return b.String()
}

// slackEscape escapes the three characters Slack gives meaning to, so that
// a reason like "<!channel>" is shown, not acted on.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// approvals is e.g. "0 of 1 approvals".
func approvals(r broker.AccessRequest) string {
	return fmt.Sprintf("%d of %d approvals", len(r.Approvals), r.Needed)
}

// writeBy writes " by who", if who is known.
func writeBy(b *strings.Builder, e broker.Event) {
	if e.By != "" {
		b.WriteString(" by " + e.By)
	}
}

// writeTyped writes `. who's label: "text"`, text quoted as Go quotes
// it (quotes, backslashes, controls and invisible characters escaped),
// unless text is empty.
func writeTyped(b *strings.Builder, who, label, text string) {
	if text == "" {
		return
	}
	if who == "" {
		fmt.Fprintf(b, ". %s: %q", label, text)
		return
	}
	fmt.Fprintf(b, ". %s's %s: %q", who, label, text)
}

// writePending tells approvers of a pending request how to decide it.
func writePending(b *strings.Builder, e broker.Event) {
	if len(e.Approvers) > 0 {
		b.WriteString("; approvers: " + strings.Join(e.Approvers, ", "))
	}
	fmt.Fprintf(b, ". approve with: approve %d", e.Request.ID)
}

// sessionSummary says in one line which cross-border session started or
// ended, from where, to what and under which rule.
func sessionSummary(e broker.Event) string {
	n := e.Session
	var b strings.Builder
	from := n.SourceCountry
	if from == "" {
		from = "unknown country"
	}
	switch e.Kind {
	case broker.EventSessionCrossBorderEnded:
		fmt.Fprintf(&b, "sekisho: cross-border session of %s (%s, %s) on %s (%s) ended after %s (%q); %s in, %s out",
			n.Technician, n.Affiliate, n.AffiliateCountry, n.Target, n.Residency,
			n.EndedAt.Sub(n.StartedAt).Round(time.Second), n.EndReason, units.Bytes(n.BytesIn), units.Bytes(n.BytesOut))
	default:
		fmt.Fprintf(&b, "sekisho: %s (%s, %s) started a cross-border session on %s (%s) as %s from %s (%s) under rule %s",
			n.Technician, n.Affiliate, n.AffiliateCountry, n.Target, n.Residency, n.Login, n.Source, from, n.Rule)
		if n.Request != 0 {
			fmt.Fprintf(&b, ", request %d", n.Request)
		}
	}
	b.WriteString(" — session " + n.ID)
	return b.String()
}
