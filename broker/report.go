package broker

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CrossBorderRow is one cross-border session in the report: who, from which
// affiliate and country, reached which target holding which data, under
// which rule and approved request, when, and where its recording is.
type CrossBorderRow struct {
	Session          string `json:"session"`
	Technician       string `json:"technician"`
	Affiliate        string `json:"affiliate"`
	AffiliateCountry string `json:"affiliate_country"`
	Source           string `json:"source"`
	SourceCountry    string `json:"source_country"` // "" when unknown
	Target           string `json:"target"`
	Residency        string `json:"residency"`
	// Data are the target's data classes in its current configuration;
	// none when the target is no longer configured.
	Data []string `json:"data"`
	Rule string   `json:"rule"`
	// Request is the approved access request the session ran under; 0 when
	// the rule allowed the session without approval. Reason is that
	// request's reason, as the technician gave it, and ApprovedBy its
	// approvers in the order they approved.
	Request    int64     `json:"request,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	ApprovedBy []string  `json:"approved_by"`
	Started    time.Time `json:"started"`
	Ended      time.Time `json:"ended,omitzero"` // zero while live
	EndReason  string    `json:"end_reason,omitempty"`
	BytesIn    int64     `json:"bytes_in"`  // technician to target
	BytesOut   int64     `json:"bytes_out"` // target to technician
	// Recording is the recording's location, relative to the recording
	// store of the target's residency; the session ID names it for
	// `sekisho replay` and the console. RecordingComplete reports whether
	// it was sealed complete.
	Recording         string `json:"recording"`
	RecordingComplete bool   `json:"recording_complete"`
	// Moderated says the session's rule asked for moderators, who had to
	// watch while it ran (see SessionRecord.Moderated).
	Moderated bool `json:"moderated"`
}

// CrossBorderReport lists the cross-border sessions that started in
// [From, To), oldest first, with counts for a summary.
type CrossBorderReport struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Residencies is the reviewer's scope the report was limited to; nil
	// when it covers every residency.
	Residencies []string         `json:"residencies"`
	Rows        []CrossBorderRow `json:"rows"`
	// ByAffiliate and ByResidency count the rows per technician affiliate
	// and per target residency.
	ByAffiliate map[string]int `json:"by_affiliate"`
	ByResidency map[string]int `json:"by_residency"`
	// Unapproved counts the rows whose session ran without an access
	// request: a rule allowed it outright.
	Unapproved int `json:"unapproved"`
	// Moderated counts the rows whose rule asked for moderators and
	// Unmoderated the others: together, every row.
	Moderated   int `json:"moderated"`
	Unmoderated int `json:"unmoderated"`
}

// BuildCrossBorderReport reads the cross-border sessions that started in
// [from, to) from the store. A session belongs to the period it started
// in, so consecutive periods neither count a session twice nor miss one.
//
// targets looks up a target's current configuration for its data classes.
// residencies is the reviewer's scope: nil reports every residency, a
// non-nil slice only sessions to targets in those residencies (an empty
// one, none).
//
// An access request that a session names but the store does not hold is an
// error, not an empty cell: the report is evidence of who approved what.
func BuildCrossBorderReport(ctx context.Context, s Store, targets func(name string) (*Target, bool), from, to time.Time, residencies []string) (CrossBorderReport, error) {
	from, to = from.UTC(), to.UTC()
	if !from.Before(to) {
		return CrossBorderReport{}, fmt.Errorf("cross-border report: period from %s to %s is empty; the start must come before the end",
			from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	r := CrossBorderReport{
		From: from, To: to,
		ByAffiliate: map[string]int{},
		ByResidency: map[string]int{},
	}
	if residencies != nil {
		r.Residencies = slices.Clone(residencies)
	}
	cross := true
	var scope []string // the store matches residencies exactly; they are upper case
	if residencies != nil {
		scope = []string{}
		for _, z := range residencies {
			scope = append(scope, strings.ToUpper(z))
		}
	}
	list, err := s.Sessions(ctx, SessionFilter{CrossBorder: &cross, Since: from, Until: to, Residencies: scope})
	if err != nil {
		return CrossBorderReport{}, fmt.Errorf("cross-border report: sessions: %w", err)
	}
	requests := map[int64]AccessRequest{}
	for _, rec := range list {
		// The store filters already; a session that started at or after
		// the end, a domestic one or one outside the scope is dropped here
		// whatever the store did.
		if !rec.CrossBorder || rec.StartedAt.Before(from) || !rec.StartedAt.Before(to) || !inScope(rec.Residency, residencies) {
			continue
		}
		row := CrossBorderRow{
			Session: rec.ID, Technician: rec.Technician, Affiliate: rec.Affiliate, AffiliateCountry: rec.AffiliateCountry,
			Source: rec.Source, SourceCountry: rec.SourceCountry, Target: rec.Target, Residency: rec.Residency,
			Rule: rec.Rule, Request: rec.Request, Started: rec.StartedAt.UTC(), EndReason: rec.EndReason,
			BytesIn: rec.BytesIn, BytesOut: rec.BytesOut, Recording: rec.Recording, RecordingComplete: rec.RecordingComplete,
			Moderated: rec.Moderated,
		}
		if rec.Ended() {
			row.Ended = rec.EndedAt.UTC()
		}
		if t, ok := targets(rec.Target); ok && t != nil {
			row.Data = slices.Clone(t.Data)
		}
		if rec.Request != 0 {
			req, ok := requests[rec.Request]
			if !ok {
				req, err = s.Request(ctx, rec.Request)
				if err != nil {
					return CrossBorderReport{}, fmt.Errorf("cross-border report: session %s: %w", rec.ID, err)
				}
				requests[rec.Request] = req
			}
			row.Reason = req.Reason
			for _, a := range req.Approvals {
				row.ApprovedBy = append(row.ApprovedBy, a.By)
			}
		} else {
			r.Unapproved++
		}
		if row.Moderated {
			r.Moderated++
		} else {
			r.Unmoderated++
		}
		r.ByAffiliate[row.Affiliate]++
		r.ByResidency[row.Residency]++
		r.Rows = append(r.Rows, row)
	}
	slices.SortFunc(r.Rows, func(a, b CrossBorderRow) int {
		return cmp.Or(a.Started.Compare(b.Started), strings.Compare(a.Session, b.Session))
	})
	return r, nil
}

func inScope(residency string, scope []string) bool {
	if scope == nil {
		return true
	}
	for _, z := range scope {
		if strings.EqualFold(z, residency) {
			return true
		}
	}
	return false
}

// DailyCount is the number of cross-border sessions of one affiliate to one
// residency that started on one UTC day.
type DailyCount struct {
	Day       time.Time `json:"day"` // UTC midnight
	Affiliate string    `json:"affiliate"`
	Residency string    `json:"residency"`
	Sessions  int       `json:"sessions"`
}

// Daily counts the report's sessions per UTC day, affiliate and residency,
// sorted by day, then affiliate, then residency. Days without sessions are
// left out; a chart fills them with zeros between r.From and r.To.
func (r CrossBorderReport) Daily() []DailyCount {
	type key struct {
		day                  time.Time
		affiliate, residency string
	}
	counts := map[key]int{}
	for _, row := range r.Rows {
		t := row.Started.UTC()
		day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		counts[key{day, row.Affiliate, row.Residency}]++
	}
	out := make([]DailyCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, DailyCount{Day: k.day, Affiliate: k.affiliate, Residency: k.residency, Sessions: n})
	}
	slices.SortFunc(out, func(a, b DailyCount) int {
		return cmp.Or(a.Day.Compare(b.Day), strings.Compare(a.Affiliate, b.Affiliate), strings.Compare(a.Residency, b.Residency))
	})
	return out
}

// crossBorderColumns is the CSV header. Spreadsheets and scripts read
// the columns by place: a new one goes at the end.
var crossBorderColumns = []string{
	"session", "technician", "affiliate", "affiliate_country", "source", "source_country",
	"target", "residency", "data", "rule", "request", "reason", "approved_by",
	"started", "ended", "end_reason", "bytes_in", "bytes_out", "recording", "recording_complete",
	"moderated",
}

// WriteCSV writes the report as CSV (RFC 4180): a header row, then one row
// per session in the report's order. Times are RFC 3339 in UTC, an empty
// cell for a session still live; lists (data classes, approvers) are
// joined with ";"; request is empty for a session that ran without one;
// recording_complete and moderated are true or false.
//
// The cells carry untrusted text (the technician's reason, names, end
// reasons), and spreadsheets run a cell that looks like a formula. So, as
// the OWASP guidance on CSV injection says, every cell is quoted, and a
// cell that starts with = + - @ TAB or CR is prefixed with a single quote,
// which makes the spreadsheet show it as text; a quoted cell also keeps a
// ";" or "," in the text from starting a new cell in any locale. A reader
// that is not a spreadsheet sees the quote as part of the value.
func (r CrossBorderReport) WriteCSV(w io.Writer) error {
	b := bufio.NewWriter(w)
	writeCSVRecord(b, crossBorderColumns)
	for _, row := range r.Rows {
		request := ""
		if row.Request != 0 {
			request = strconv.FormatInt(row.Request, 10)
		}
		writeCSVRecord(b, []string{
			row.Session, row.Technician, row.Affiliate, row.AffiliateCountry, row.Source, row.SourceCountry,
			row.Target, row.Residency, strings.Join(row.Data, ";"), row.Rule, request, row.Reason, strings.Join(row.ApprovedBy, ";"),
			csvTime(row.Started), csvTime(row.Ended), row.EndReason,
			strconv.FormatInt(row.BytesIn, 10), strconv.FormatInt(row.BytesOut, 10), row.Recording, strconv.FormatBool(row.RecordingComplete),
			strconv.FormatBool(row.Moderated),
		})
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("write cross-border report: %w", err)
	}
	return nil
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// writeCSVRecord writes one record with every cell quoted and neutralised
// (see WriteCSV).
// Write errors stick in b and are returned by its Flush.
func writeCSVRecord(b *bufio.Writer, cells []string) {
	for i, c := range cells {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			b.WriteByte('\'')
		}
		b.WriteString(strings.ReplaceAll(c, `"`, `""`))
		b.WriteByte('"')
	}
	b.WriteByte('\n')
}
