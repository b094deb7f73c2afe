package broker

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
)

// Effect is what a rule does when it matches.
type Effect string

const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
	// Approval means approvers must approve the access first: the
	// technician files an access request, and once approved, the grant
	// lets sessions through until it ends.
	Approval Effect = "approval"
)

// Rule is one entry of the ordered rule list. All conditions of Match, and
// the condition When, must hold for the rule to match; an empty condition
// holds for everyone.
type Rule struct {
	Name   string
	Effect Effect
	Match  Match
	// When is a CEL expression over technician, source, target, now and
	// cross_border (see Inputs). NewPolicy compiles it.
	When string
	// Login overrides the target's login (the certificate principal).
	Login string
	// Message is shown to the technician when the rule refuses access.
	Message string
	// Limits applies to sessions the rule allows.
	Limits Limits
	// RequireMFA asks for a TOTP code before the session starts.
	RequireMFA bool
	// Approval says who must approve, for an approval rule.
	Approval ApprovalSpec
	// Moderation says who must watch the sessions the rule lets through
	// (an allow rule, or an approval rule once approved); none if its
	// From is empty.
	Moderation ModerationSpec

	cond cel.Program
}

// Channel kinds a rule can allow.
const (
	ChannelShell       = "shell"
	ChannelExec        = "exec"
	ChannelSFTP        = "sftp"
	ChannelSCP         = "scp" // scp -O and rsync, which run as commands
	ChannelPortForward = "port_forward"
)

// DefaultChannels are allowed when a rule names none: everything but port
// forwarding.
var DefaultChannels = []string{ChannelShell, ChannelExec, ChannelSFTP, ChannelSCP}

// File transfer directions a rule can allow.
const (
	FilesBoth     = "both"
	FilesUpload   = "upload_only"   // to the target; downloads refused
	FilesDownload = "download_only" // from the target; uploads refused
	FilesNone     = "none"
)

// Limits are what an allowing rule sets for the session.
type Limits struct {
	// Channels lists the allowed channel kinds; empty means DefaultChannels.
	Channels []string `json:"channels,omitempty"`
	// Files limits the direction of file transfers; empty means both.
	Files string `json:"files,omitempty"`
	// MaxDuration ends the session after this long; zero means no limit.
	MaxDuration time.Duration `json:"max_duration,omitempty"`
	// ForwardTo lists the port-forward destinations, "host:port": host a
	// name, an IP address or a prefix, port a number or "*".
	ForwardTo []string `json:"forward_to,omitempty"`
	// UploadTo lists the directories on the target that uploads may
	// write into under files: upload_only: absolute and clean paths.
	UploadTo []string `json:"upload_to,omitempty"`
	// Legacy lists the transfers run as commands that a direction-limited
	// rule lets through, each only in the forms sekisho follows
	// completely: LegacySCP (scp -O) and LegacyRsync. Without them such a
	// rule allows SFTP alone (which OpenSSH's scp speaks by default), and
	// the target's sshd enforces that too (see TargetSFTPOnly).
	Legacy []string `json:"legacy_transfers,omitempty"`
}

// Transfers run as commands that a direction-limited rule can opt in to.
const (
	LegacySCP   = "scp"
	LegacyRsync = "rsync"
)

// Directional reports whether the limits allow files one way only.
func (l Limits) Directional() bool {
	return l.Files == FilesUpload || l.Files == FilesDownload
}

// AllowsLegacy reports whether a direction-limited rule lets the transfer
// command kind (LegacySCP or LegacyRsync) through. Rules without a
// direction limit allow both wherever they allow the scp channel.
func (l Limits) AllowsLegacy(kind string) bool {
	return !l.Directional() || slices.Contains(l.Legacy, kind)
}

// TargetSFTPOnly reports whether the certificate for a session under
// these limits has the target's sshd serve SFTP alone (the force-command
// critical option internal-sftp): a direction-limited rule that opts in
// to no transfer run as a command.
func (l Limits) TargetSFTPOnly() bool {
	return l.Directional() && len(l.Legacy) == 0
}

// AllowsChannel reports whether kind is allowed.
func (l Limits) AllowsChannel(kind string) bool {
	chans := l.Channels
	if len(chans) == 0 {
		chans = DefaultChannels
	}
	for _, c := range chans {
		if c == kind {
			return true
		}
	}
	return false
}

// Match holds the conditions of a rule.
type Match struct {
	Technicians []string          // technician names
	Affiliates  []string          // affiliate names
	Targets     []string          // target names; shell patterns as in path.Match
	Residency   []string          // target residency countries
	Data        []string          // the target holds at least one of these data classes
	Labels      map[string]string // the target carries all these labels
	// CrossBorder, when set, requires that the request is (true) or is not
	// (false) cross-border; see Request.CrossBorder.
	CrossBorder *bool
	// Hours and Days, when set, limit the rule to a time of day and days
	// of the week in the target's zone.
	Hours *HourRange
	Days  []time.Weekday
}

// HourRange is a time of day range in minutes after midnight, From
// included, To excluded; From > To wraps past midnight (22:00-06:00).
type HourRange struct{ From, To int }

// ParseHourRange parses "HH:MM-HH:MM".
func ParseHourRange(s string) (*HourRange, error) {
	var fh, fm, th, tm int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &fh, &fm, &th, &tm); err != nil || n != 4 ||
		fh < 0 || fh > 24 || th < 0 || th > 24 || fm < 0 || fm > 59 || tm < 0 || tm > 59 ||
		fh*60+fm > 24*60 || th*60+tm > 24*60 || fh*60+fm == th*60+tm {
		return nil, fmt.Errorf("hours %q: write HH:MM-HH:MM, e.g. 08:00-20:00 or 22:00-06:00", s)
	}
	return &HourRange{From: fh*60 + fm, To: th*60 + tm}, nil
}

// Contains reports whether t's time of day is in the range.
func (h *HourRange) Contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if h.From < h.To {
		return m >= h.From && m < h.To
	}
	return m >= h.From || m < h.To
}

func (h *HourRange) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", h.From/60, h.From%60, h.To/60, h.To%60)
}

// Request is what a decision is made about.
type Request struct {
	Technician *Technician
	Target     *Target
	Source     string // client address, host:port
	// SourceCountry and SourceNetwork locate the source; empty when
	// nothing knows the address.
	SourceCountry string
	SourceNetwork string
	// Now is the time of the request; zero means the present.
	Now time.Time
}

// CrossBorder reports whether the technician's affiliate, or the place the
// connection comes from, is in another country than the one where the
// target's data resides. A source whose country is unknown counts as
// another country: a connection is domestic only when shown to be.
func (r Request) CrossBorder() bool {
	res := r.Target.Residency
	return !strings.EqualFold(r.Technician.Affiliate.Country, res) || !strings.EqualFold(r.SourceCountry, res)
}

// inputs returns what the rules see for r.
func (r Request) inputs() Inputs {
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	zone := r.Target.Zone
	if loc, err := time.LoadLocation(zone); err == nil && zone != "" {
		now = now.In(loc)
	} else {
		zone, now = "UTC", now.UTC()
	}
	addr := r.Source
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		addr = a.Unmap().String()
	}
	t := r.Technician
	return Inputs{
		Technician: TechnicianInput{Name: t.Name, Affiliate: t.Affiliate.Name, Country: t.Affiliate.Country, Groups: nonNil(t.Groups)},
		Source:     SourceInput{Address: addr, Country: r.SourceCountry, Network: r.SourceNetwork},
		Target: TargetInput{Name: r.Target.Name, Residency: r.Target.Residency, Zone: zone, Data: nonNil(r.Target.Data),
			Labels: nonNilMap(r.Target.Labels)},
		Now:         now,
		CrossBorder: r.CrossBorder(),
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Decision is the outcome of evaluating the rules for a request.
type Decision struct {
	Effect Effect
	// Rule names the rule that decided; empty when nothing matched and the
	// default deny applied.
	Rule string
	// Login is the account on the target (the certificate principal).
	Login string
	// Reason is the short explanation shown to the technician.
	Reason string
	// Trace lists every rule evaluated, in order, and why it did or did not
	// match. It goes to the audit log and the session record, with Inputs.
	Trace  []TraceStep
	Inputs Inputs
	// Limits are the allowing rule's limits on the session.
	Limits Limits
	// RequireMFA is set when the technician or the allowing rule requires
	// a second factor.
	RequireMFA bool
	// Approval is the deciding rule's approval settings, when it is an
	// approval rule.
	Approval *ApprovalSpec `json:",omitempty"`
	// Moderation is who must watch the session while it runs, when the
	// deciding rule asks for moderators.
	Moderation *ModerationSpec `json:",omitempty"`
	// Grant is the approved access request that lets the session through
	// under an approval rule.
	Grant *Grant `json:",omitempty"`
}

// Grant names the approved access request a session runs under.
type Grant struct {
	RequestID  int64     `json:"request"`
	Until      time.Time `json:"until"`
	ApprovedBy []string  `json:"approved_by"`
}

// CrossBorder reports whether the decision was about a cross-border access.
func (d Decision) CrossBorder() bool { return d.Inputs.CrossBorder }

// Allowed reports whether the decision lets the connection proceed.
func (d Decision) Allowed() bool { return d.Effect == Allow }

// TraceStep records the evaluation of one rule.
type TraceStep struct {
	Rule    string `json:"rule"`
	Effect  Effect `json:"effect"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"`
}

// Policy is an ordered list of rules. Precedence: a matching deny rule
// beats everything; otherwise the first matching allow or approval rule
// decides; when nothing matches, access is denied.
type Policy struct {
	Rules []Rule
}

// Decide evaluates every rule against req and returns the decision with
// its trace.
func (p *Policy) Decide(req Request) Decision {
	var (
		trace       []TraceStep
		firstDeny   *Rule
		firstAccept *Rule
	)
	in := req.inputs()
	for i := range p.Rules {
		r := &p.Rules[i]
		ok, why := r.evaluate(req, in)
		trace = append(trace, TraceStep{Rule: r.Name, Effect: r.Effect, Matched: ok, Why: why})
		if !ok {
			continue
		}
		switch r.Effect {
		case Deny:
			if firstDeny == nil {
				firstDeny = r
			}
		default:
			if firstAccept == nil {
				firstAccept = r
			}
		}
	}
	facts := fmt.Sprintf("%s is resident in %s; affiliate %s is in %s",
		req.Target.Name, req.Target.Residency, req.Technician.Affiliate.Name, req.Technician.Affiliate.Country)
	if in.Source.Country != "" && !strings.EqualFold(in.Source.Country, req.Technician.Affiliate.Country) {
		facts += "; connecting from " + in.Source.Country
	} else if in.Source.Country == "" {
		facts += "; connecting from an address of unknown country"
	}
	d := Decision{Effect: Deny, Trace: trace, Inputs: in}
	switch {
	case firstDeny != nil:
		d.Rule = firstDeny.Name
		d.Reason = fmt.Sprintf("access to %s denied by rule %q (%s)", req.Target.Name, firstDeny.Name, facts)
		if firstDeny.Message != "" {
			d.Reason += ": " + firstDeny.Message
		}
	case firstAccept != nil && firstAccept.Effect == Approval:
		d.Effect = Approval
		d.Rule = firstAccept.Name
		// What the session gets once approved.
		d.Login = req.Target.Login
		if firstAccept.Login != "" {
			d.Login = firstAccept.Login
		}
		d.Limits = firstAccept.Limits
		d.RequireMFA = req.Technician.RequireMFA || firstAccept.RequireMFA
		spec := firstAccept.Approval.withDefaults()
		d.Approval = &spec
		d.Moderation = firstAccept.moderation()
		d.Reason = fmt.Sprintf("access to %s requires approval under rule %q (%s)", req.Target.Name, firstAccept.Name, facts)
		if firstAccept.Message != "" {
			d.Reason += ": " + firstAccept.Message
		}
	case firstAccept != nil:
		d.Effect = Allow
		d.Rule = firstAccept.Name
		d.Login = req.Target.Login
		if firstAccept.Login != "" {
			d.Login = firstAccept.Login
		}
		d.Limits = firstAccept.Limits
		d.Moderation = firstAccept.moderation()
		d.RequireMFA = req.Technician.RequireMFA || firstAccept.RequireMFA
		d.Reason = fmt.Sprintf("allowed by rule %q", firstAccept.Name)
	default:
		d.Reason = fmt.Sprintf("access to %s denied: no rule allows technician %s of affiliate %s to reach it (%s)",
			req.Target.Name, req.Technician.Name, req.Technician.Affiliate.Name, facts)
	}
	return d
}

// evaluate reports whether r matches and why. A condition that fails to
// evaluate counts as matching for a deny rule and as not matching for any
// other: an error never grants access and never lifts a refusal.
func (r *Rule) evaluate(req Request, in Inputs) (bool, string) {
	ok, why := r.Match.evaluate(req, in)
	if !ok || r.cond == nil {
		return ok, why
	}
	ok, err := r.evalCondition(in)
	switch {
	case err != nil && r.Effect == Deny:
		return true, fmt.Sprintf("condition %q failed to evaluate (%v); a deny rule then applies", r.When, err)
	case err != nil:
		return false, fmt.Sprintf("condition %q failed to evaluate (%v)", r.When, err)
	case !ok:
		return false, fmt.Sprintf("condition %q is false", r.When)
	}
	return true, fmt.Sprintf("condition %q is true", r.When)
}

func (m *Match) evaluate(req Request, in Inputs) (bool, string) {
	t, tg := req.Technician, req.Target
	if len(m.Technicians) > 0 && !contains(m.Technicians, t.Name) {
		return false, fmt.Sprintf("technician %s not in %v", t.Name, m.Technicians)
	}
	if len(m.Affiliates) > 0 && !contains(m.Affiliates, t.Affiliate.Name) {
		return false, fmt.Sprintf("affiliate %s not in %v", t.Affiliate.Name, m.Affiliates)
	}
	if len(m.Targets) > 0 && !matchAny(m.Targets, tg.Name) {
		return false, fmt.Sprintf("target %s not in %v", tg.Name, m.Targets)
	}
	if len(m.Residency) > 0 && !containsFold(m.Residency, tg.Residency) {
		return false, fmt.Sprintf("residency %s not in %v", tg.Residency, m.Residency)
	}
	if len(m.Data) > 0 {
		held := false
		for _, c := range m.Data {
			held = held || tg.Holds(c)
		}
		if !held {
			return false, fmt.Sprintf("target holds none of %v", m.Data)
		}
	}
	for k, v := range m.Labels {
		got, ok := tg.Labels[k]
		if !ok {
			// An empty wanted value still requires the label to be there.
			return false, fmt.Sprintf("label %s absent, want %q", k, v)
		}
		if got != v {
			return false, fmt.Sprintf("label %s=%q, want %q", k, got, v)
		}
	}
	if m.Hours != nil && !m.Hours.Contains(in.Now) {
		return false, fmt.Sprintf("%s in %s is outside hours %s", in.Now.Format("15:04"), in.Target.Zone, m.Hours)
	}
	if len(m.Days) > 0 && !slices.Contains(m.Days, in.Now.Weekday()) {
		return false, fmt.Sprintf("%s in %s is not one of the rule's days", in.Now.Weekday(), in.Target.Zone)
	}
	if m.CrossBorder != nil && in.CrossBorder != *m.CrossBorder {
		return false, fmt.Sprintf("cross_border is %v (affiliate country %s, source country %q, residency %s)",
			in.CrossBorder, t.Affiliate.Country, in.Source.Country, tg.Residency)
	}
	return true, fmt.Sprintf("matched (affiliate country %s, source country %q, residency %s, cross_border %v)",
		t.Affiliate.Country, in.Source.Country, tg.Residency, in.CrossBorder)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// moderation returns the rule's moderation settings, or nil if it asks
// for none.
func (r *Rule) moderation() *ModerationSpec {
	if !r.Moderation.Required() {
		return nil
	}
	spec := r.Moderation.withDefaults()
	return &spec
}
