package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

func TestReportPeriod(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 30, 0, 0, time.FixedZone("JST", 9*3600))
	day := func(m time.Month, d int) time.Time { return time.Date(2026, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		since, until string
		from, to     time.Time
		err          string
	}{
		{since: "", until: "", from: now.Add(-30 * 24 * time.Hour), to: now},
		{since: "30d", until: "", from: now.Add(-30 * 24 * time.Hour), to: now},
		{since: "12h", until: "", from: now.Add(-12 * time.Hour), to: now},
		{since: "2026-11-01", until: "", from: day(11, 1), to: now},
		// A date given to --until is included whole.
		{since: "2026-11-01", until: "2026-11-07", from: day(11, 1), to: day(11, 8)},
		{since: "2026-11-01T09:00:00+09:00", until: "2026-11-02T00:00:00Z", from: day(11, 1), to: day(11, 2)},
		{since: "7d", until: "1d", from: now.Add(-7 * 24 * time.Hour), to: now.Add(-24 * time.Hour)},
		{since: "2026-11-07", until: "2026-11-07", from: day(11, 7), to: day(11, 8)},
		{since: "2026-11-08", until: "2026-11-07", err: "--since must come before --until"},
		{since: "last month", err: `--since "last month": not a date`},
		{since: "-3d", err: `--since "-3d": not a date`},
		{since: "0d", err: `--since "0d": not a date`},
		{since: "30d", until: "tomorrow", err: `--until "tomorrow": not a date`},
		{since: "2026-13-01", err: `--since "2026-13-01": not a date`},
	}
	for _, tt := range tests {
		from, to, err := reportPeriod(tt.since, tt.until, now)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("since %q until %q: error %v, want %q", tt.since, tt.until, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("since %q until %q: %v", tt.since, tt.until, err)
			continue
		}
		if !from.Equal(tt.from) || !to.Equal(tt.to) || from.Location() != time.UTC || to.Location() != time.UTC {
			t.Errorf("since %q until %q: %v to %v, want %v to %v in UTC", tt.since, tt.until, from, to, tt.from, tt.to)
		}
	}
}

// reportConfig writes the test config and a state store beside it with one
// approved request and three sessions: li's cross-border one under the
// request, which moderators had to watch, li's to a target since removed,
// and aiko's domestic one.
func reportConfig(t *testing.T) string {
	t.Helper()
	path := nodetest.WriteConfig(t, nil)
	ctx := context.Background()
	dir := filepath.Join(filepath.Dir(path), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := sqlitestore.Open(ctx, filepath.Join(dir, "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := func(d, h int) time.Time { return time.Date(2026, 11, d, h, 0, 0, 0, time.UTC) }
	req, err := s.CreateRequest(ctx, broker.AccessRequest{Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Target: "db-jp-01",
		Rule: "pii-abroad", Reason: "fix replication \x1b]0;owned\a", State: broker.RequestApproved, Needed: 2, Created: at(20, 8),
		Approvals: []broker.RequestApproval{{By: "aiko", At: at(20, 9)}, {By: "sato", At: at(20, 9)}}, GrantEnd: at(20, 10)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []broker.SessionRecord{
		{ID: "s1", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: "203.0.113.5:4000", SourceCountry: "CN",
			Target: "db-jp-01", Residency: "JP", CrossBorder: true, Rule: "pii-abroad", Trace: "[]", StartedAt: at(20, 9), Request: req.ID,
			Recording: "2026/11/20/s1", Moderated: true},
		{ID: "s2", Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: "203.0.113.5:4001",
			Target: "old-sg-01", Residency: "SG", CrossBorder: true, Rule: "any-affiliate-to-web", Trace: "[]", StartedAt: at(21, 3),
			Recording: "2026/11/21/s2"},
		{ID: "s3", Technician: "aiko", Affiliate: "ops-jp", AffiliateCountry: "JP", Source: "198.51.100.7:5000", SourceCountry: "JP",
			Target: "db-jp-01", Residency: "JP", Rule: "pii-in-residency", Trace: "[]", StartedAt: at(22, 1), Recording: "2026/11/22/s3"},
	} {
		if err := s.StartSession(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EndSession(ctx, "s1", broker.SessionEnd{At: at(20, 10), BytesIn: 100, BytesOut: 200, Reason: "grant ended"}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReportCrossBorderCommand(t *testing.T) {
	t.Parallel()
	config := reportConfig(t)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "table",
			args: nil,
			want: "cross-border sessions from 2026-10-27T12:00:00Z to 2026-11-26T12:00:00Z (UTC, all residencies): 2\n\n" +
				"STARTED               SESSION  TECHNICIAN  AFFILIATE    FROM  TARGET     RESIDENCY  DATA          REQUEST  APPROVED BY  ENDED                 MODERATED  REASON\n" +
				`2026-11-20T09:00:00Z  s1       li          ops-cn (CN)  CN    db-jp-01   JP         pii,messages  1        aiko,sato    2026-11-20T10:00:00Z  yes        "fix replication \x1b]0;owned\a"` + "\n" +
				"2026-11-21T03:00:00Z  s2       li          ops-cn (CN)  ?     old-sg-01  SG         -             -        -            live                  no         \n\n" +
				"by affiliate: ops-cn 2\nby residency: JP 1, SG 1\nwithout an access request: 1\nmoderated: 1, unmoderated: 1\n",
		},
		{
			name: "csv of SG",
			args: []string{"--format", "csv", "--residency", "sg", "--since", "2026-11-01", "--until", "2026-11-25"},
			want: `"session","technician","affiliate","affiliate_country","source","source_country","target","residency","data","rule","request","reason","approved_by","started","ended","end_reason","bytes_in","bytes_out","recording","recording_complete","moderated"` + "\n" +
				`"s2","li","ops-cn","CN","203.0.113.5:4001","","old-sg-01","SG","","any-affiliate-to-web","","","","2026-11-21T03:00:00Z","","","0","0","2026/11/21/s2","false","false"` + "\n",
		},
		{
			name: "empty period",
			args: []string{"--since", "2026-11-22", "--until", "2026-11-23"},
			want: "cross-border sessions from 2026-11-22T00:00:00Z to 2026-11-24T00:00:00Z (UTC, all residencies): 0\n\n" +
				"by affiliate: -\nby residency: -\nwithout an access request: 0\nmoderated: 0, unmoderated: 0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := cmdReportCrossBorder(context.Background(), &out, append([]string{"--config", config}, tt.args...), now); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("output\n got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestReportCrossBorderJSON(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	if err := cmdReportCrossBorder(context.Background(), &out, []string{"--config", reportConfig(t), "--format", "json", "--residency", "JP"}, now); err != nil {
		t.Fatal(err)
	}
	var got struct {
		From        time.Time
		Residencies []string
		Rows        []broker.CrossBorderRow
		ByAffiliate map[string]int `json:"by_affiliate"`
		Moderated   int
		Unmoderated int
		Daily       []broker.DailyCount
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in\n%s", err, out.String())
	}
	if len(got.Rows) != 1 || got.Rows[0].Session != "s1" || got.Rows[0].Request != 1 || !reflect.DeepEqual(got.Rows[0].ApprovedBy, []string{"aiko", "sato"}) ||
		!reflect.DeepEqual(got.Rows[0].Data, []string{"pii", "messages"}) || got.Rows[0].Reason != "fix replication \x1b]0;owned\a" ||
		!got.Rows[0].Moderated {
		t.Errorf("rows %+v", got.Rows)
	}
	if got.Moderated != 1 || got.Unmoderated != 0 || !strings.Contains(out.String(), `"moderated": 1,`) || !strings.Contains(out.String(), `"unmoderated": 0`) {
		t.Errorf("moderated %d, unmoderated %d; want 1 and 0, as \"moderated\" and \"unmoderated\" in\n%s", got.Moderated, got.Unmoderated, out.String())
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("the JSON holds a raw escape character")
	}
	wantDaily := []broker.DailyCount{{Day: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), Affiliate: "ops-cn", Residency: "JP", Sessions: 1}}
	if !reflect.DeepEqual(got.Daily, wantDaily) || !reflect.DeepEqual(got.Residencies, []string{"JP"}) ||
		!reflect.DeepEqual(got.ByAffiliate, map[string]int{"ops-cn": 1}) || !got.From.Equal(now.Add(-30*24*time.Hour)) {
		t.Errorf("report %+v", got)
	}
}

func TestReportCommandErrors(t *testing.T) {
	t.Parallel()
	config := nodetest.WriteConfig(t, nil)
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		args  []string
		usage bool
		want  string
	}{
		{args: []string{"--format", "xlsx"}, usage: true, want: `--format "xlsx": use table, csv or json`},
		{args: []string{"--since", "yesterday"}, usage: true, want: `--since "yesterday": not a date`},
		{args: []string{"--residency", " , "}, usage: true, want: "--residency lists no residency"},
		{args: []string{"extra"}, usage: true, want: `unexpected argument "extra"`},
		{args: nil, want: "has `sekisho serve` run with this config?"},
	}
	for _, tt := range tests {
		err := cmdReportCrossBorder(context.Background(), &bytes.Buffer{}, append([]string{"--config", config}, tt.args...), now)
		var ue usageError
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.As(err, &ue) != tt.usage {
			t.Errorf("%q: error %v (usage error: %v), want %q", tt.args, err, errors.As(err, &ue), tt.want)
		}
	}
	for _, args := range [][]string{{"report"}, {"report", "weekly"}} {
		var ue usageError
		if err := run(context.Background(), args); !errors.As(err, &ue) || !strings.Contains(err.Error(), "cross-border") {
			t.Errorf("%q: %v, want a usage error naming cross-border", args, err)
		}
	}
}
