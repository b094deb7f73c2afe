package web_test

import (
	"encoding/csv"
	"encoding/json"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// The report tells moderated cross-border sessions from the others: its
// page counts both and marks each row, its API and CSV say the same, the
// CSV in a last column.
func TestReportCountsModeratedSessions(t *testing.T) {
	f := newFixture(t, "")
	const moderated = "4d2e9c1b-8a7f-4e36-b5d0-2c9e8f1a7b03"
	s := broker.SessionRecord{ID: moderated, Technician: "li", Affiliate: "ops-cn", AffiliateCountry: "CN", Source: "203.0.113.9", SourceCountry: "CN",
		Target: "web-sg-01", Residency: "SG", Login: "ops", CrossBorder: true, Rule: "web-moderated", Trace: "{}",
		StartedAt: f.clock.now().Add(-10 * time.Minute), Recording: moderated, Moderated: true}
	if err := f.store.StartSession(t.Context(), &s); err != nil {
		t.Fatal(err)
	}
	rin := f.signIn(t, "rin")

	resp, page := rin.do("GET", "/reports/cross-border", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /reports/cross-border: %d", resp.StatusCode)
	}
	if m := regexp.MustCompile(`<span id="report-moderation">([^<]*)</span>`).FindStringSubmatch(page); m == nil || m[1] != "1 moderated, 2 unmoderated" {
		t.Errorf("the report's summary says %q, want \"1 moderated, 2 unmoderated\"", m)
	}
	// Each row says whether its session was moderated; the row of a
	// session links to it.
	marks := map[string]string{}
	for _, row := range regexp.MustCompile(`(?s)<tr><td>.*?</tr>`).FindAllString(page, -1) {
		id := regexp.MustCompile(`/sessions/([0-9a-f-]{36})`).FindStringSubmatch(row)
		cell := regexp.MustCompile(`<td class="moderated">([^<]*)</td>`).FindStringSubmatch(row)
		if id != nil && cell != nil {
			marks[id[1]] = cell[1]
		}
	}
	if want := map[string]string{moderated: "yes", jpSession: "no", sgSession: "no"}; !maps.Equal(marks, want) {
		t.Errorf("the rows' Moderated column: %v, want %v", marks, want)
	}

	_, body := rin.do("GET", "/api/reports/cross-border", nil, nil)
	var api struct {
		Rows []struct {
			Session   string `json:"session"`
			Moderated bool   `json:"moderated"`
		} `json:"rows"`
		Moderated   *int `json:"moderated"`
		Unmoderated *int `json:"unmoderated"`
	}
	if err := json.Unmarshal([]byte(body), &api); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	if api.Moderated == nil || *api.Moderated != 1 || api.Unmoderated == nil || *api.Unmoderated != 2 {
		t.Errorf("the API's counts: %s; want moderated 1, unmoderated 2", body)
	}
	for _, r := range api.Rows {
		if r.Moderated != (r.Session == moderated) {
			t.Errorf("the API's row of %s: moderated %v", r.Session, r.Moderated)
		}
	}

	_, text := rin.do("GET", "/reports/cross-border.csv", nil, nil)
	records, err := csv.NewReader(strings.NewReader(text)).ReadAll()
	if err != nil || len(records) != 4 {
		t.Fatalf("CSV: %v, %d records in\n%s", err, len(records), text)
	}
	last := len(records[0]) - 1
	if records[0][0] != "session" || records[0][last-1] != "recording_complete" || records[0][last] != "moderated" {
		t.Errorf("CSV header %q: want moderated last, after recording_complete", records[0])
	}
	for _, r := range records[1:] {
		if want := strconv.FormatBool(r[0] == moderated); r[last] != want {
			t.Errorf("CSV row of %s: moderated %q, want %q", r[0], r[last], want)
		}
	}
}
