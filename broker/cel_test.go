package broker

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/geotest"
)

func TestConditionCompileErrorsNameRuleAndPosition(t *testing.T) {
	tests := []struct {
		when string
		want []string
	}{
		{`technican.country == "JP"`, []string{"rule r1", "1:1", "undeclared reference to 'technican'"}},
		{`target.residence == "JP"`, []string{"rule r1", "1:7", "undefined field 'residence'"}},
		{`target.name`, []string{"rule r1", "a condition must be true or false"}},
		{`cross_border &&`, []string{"rule r1", "1:16", "Syntax error"}},
		{`"pii" in target.data && technician.country = "JP"`, []string{"rule r1", "Syntax error"}},
	}
	for _, tt := range tests {
		_, err := NewPolicy([]Rule{{Name: "r1", Effect: Allow, When: tt.when}})
		var ce *ConditionError
		if !errors.As(err, &ce) {
			t.Errorf("%q: error %v, want a ConditionError", tt.when, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tt.when, err, w)
			}
		}
	}
}

func celFixture() (aiko, li *Technician, db, web *Target) {
	aiko = &Technician{Name: "aiko", Affiliate: Affiliate{Name: "ops-jp", Country: "JP"}, Groups: []string{"db-admins"}}
	li = &Technician{Name: "li", Affiliate: Affiliate{Name: "ops-cn", Country: "CN"}}
	db = &Target{Name: "db-jp-01", Login: "ops", Residency: "JP", Zone: "Asia/Tokyo", Data: []string{"pii", "messages"},
		Labels: map[string]string{"env": "prod"}}
	web = &Target{Name: "web-sg-01", Login: "ops", Residency: "SG"}
	return
}

func TestConditions(t *testing.T) {
	aiko, li, db, web := celFixture()
	// 2026-12-01 03:00 in Tokyo is 2026-11-30 18:00 UTC.
	night := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	day := time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC) // 10:00 in Tokyo
	tests := []struct {
		name string
		when string
		req  Request
		want bool
	}{
		{"pii and cross-border by affiliate", `"pii" in target.data && cross_border`, Request{Technician: li, Target: db, SourceCountry: "JP"}, true},
		{"domestic", `"pii" in target.data && cross_border`, Request{Technician: aiko, Target: db, SourceCountry: "JP"}, false},
		{"cross-border by source", `cross_border`, Request{Technician: aiko, Target: db, SourceCountry: "CN"}, true},
		{"unknown source is cross-border", `cross_border`, Request{Technician: aiko, Target: db}, true},
		{"source country", `source.country == "JP"`, Request{Technician: aiko, Target: db, SourceCountry: "JP"}, true},
		{"source network", `source.network == "tokyo-office"`, Request{Technician: aiko, Target: db, SourceNetwork: "tokyo-office"}, true},
		{"source address", `source.address == "192.0.2.7"`, Request{Technician: aiko, Target: db, Source: "192.0.2.7:4000"}, true},
		{"groups", `"db-admins" in technician.groups`, Request{Technician: aiko, Target: db}, true},
		{"no groups", `"db-admins" in technician.groups`, Request{Technician: li, Target: db}, false},
		{"affiliate", `technician.affiliate == "ops-cn" && technician.country == "CN"`, Request{Technician: li, Target: web}, true},
		{"labels", `target.labels["env"] == "prod"`, Request{Technician: aiko, Target: db}, true},
		{"has label", `has(target.labels.env)`, Request{Technician: aiko, Target: web}, false},
		{"office hours in the target's zone", `now.getHours(target.zone) >= 9 && now.getHours(target.zone) < 18`, Request{Technician: aiko, Target: db, Now: day}, true},
		{"night in the target's zone", `now.getHours(target.zone) >= 9 && now.getHours(target.zone) < 18`, Request{Technician: aiko, Target: db, Now: night}, false},
		{"string functions", `target.name.startsWith("db-") && target.residency.lowerAscii() == "jp"`, Request{Technician: aiko, Target: db}, true},
	}
	for _, tt := range tests {
		p, err := NewPolicy([]Rule{{Name: "r", Effect: Allow, When: tt.when}})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		d := p.Decide(tt.req)
		if got := d.Effect == Allow; got != tt.want {
			t.Errorf("%s: %q matched = %v, want %v (trace %+v)", tt.name, tt.when, got, tt.want, d.Trace)
		}
	}
}

func TestConditionEvaluationErrorNeverGrantsNorLifts(t *testing.T) {
	aiko, _, _, web := celFixture()
	// web-sg-01 has no "env" label: indexing it is an evaluation error.
	p, err := NewPolicy([]Rule{
		{Name: "deny-prod", Effect: Deny, When: `target.labels["env"] == "prod"`},
		{Name: "allow-all", Effect: Allow},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(Request{Technician: aiko, Target: web, SourceCountry: "JP"})
	if d.Effect != Deny || d.Rule != "deny-prod" || !strings.Contains(d.Trace[0].Why, "failed to evaluate") {
		t.Errorf("deny rule with an evaluation error: %v %q %q", d.Effect, d.Rule, d.Trace[0].Why)
	}
	p, _ = NewPolicy([]Rule{{Name: "allow-prod", Effect: Allow, When: `target.labels["env"] == "prod"`}})
	if d := p.Decide(Request{Technician: aiko, Target: web}); d.Effect != Deny || d.Rule != "" {
		t.Errorf("allow rule with an evaluation error: %v %q", d.Effect, d.Rule)
	}
}

func TestDecisionCarriesInputs(t *testing.T) {
	_, li, db, _ := celFixture()
	p, _ := NewPolicy([]Rule{{Name: "r", Effect: Deny, When: `cross_border`}})
	at := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	d := p.Decide(Request{Technician: li, Target: db, Source: "[::ffff:203.0.113.7]:2222", SourceCountry: "CN", SourceNetwork: "cn-vpn", Now: at})
	in := d.Inputs
	if in.Technician.Country != "CN" || in.Source.Address != "203.0.113.7" || in.Source.Country != "CN" || in.Source.Network != "cn-vpn" ||
		in.Target.Residency != "JP" || !in.CrossBorder || in.Now.Location().String() != "Asia/Tokyo" || in.Now.Hour() != 3 {
		t.Errorf("inputs %+v", in)
	}
	if !strings.Contains(d.Reason, "connecting from CN") && !strings.Contains(d.Reason, "affiliate ops-cn is in CN") {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestGeoLongestPrefixWins(t *testing.T) {
	g := NewGeo(nil, nil)
	if c, n := g.Locate(netip.MustParseAddr("10.1.2.3")); c != "" || n != "" {
		t.Errorf("an empty Geo located an address: %q %q", c, n)
	}
	g = NewGeo([]*Network{
		{Name: "apac-vpn", Country: "SG", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{Name: "tokyo-office", Country: "JP", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}},
	}, nil)
	tests := []struct{ addr, country, network string }{
		{"10.1.2.3", "JP", "tokyo-office"},
		{"10.2.0.1", "SG", "apac-vpn"},
		{"::ffff:10.1.0.9", "JP", "tokyo-office"},
		{"2001:db8::1", "JP", "tokyo-office"},
		{"192.0.2.1", "", ""},
	}
	for _, tt := range tests {
		c, n := g.Locate(netip.MustParseAddr(tt.addr))
		if c != tt.country || n != tt.network {
			t.Errorf("Locate(%s) = %q, %q; want %q, %q", tt.addr, c, n, tt.country, tt.network)
		}
	}
}

func TestGeoIPDatabaseAndNetworksTableWins(t *testing.T) {
	db, err := OpenGeoIP(geotest.Write(t, map[string]string{"203.0.113.0/24": "CN", "198.51.100.0/24": "US", "2001:db8::/32": "SG"}))
	if err != nil {
		t.Fatal(err)
	}
	g := NewGeo([]*Network{{Name: "vpn-tokyo", Country: "JP", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")}}}, db)
	tests := []struct{ addr, country, network string }{
		{"203.0.113.7", "CN", ""},            // GeoIP
		{"203.0.113.200", "JP", "vpn-tokyo"}, // both answer: the table wins
		{"198.51.100.1", "US", ""},
		{"2001:db8::5", "SG", ""},
		{"192.0.2.1", "", ""}, // nobody knows
	}
	for _, tt := range tests {
		c, n := g.Locate(netip.MustParseAddr(tt.addr))
		if c != tt.country || n != tt.network {
			t.Errorf("Locate(%s) = %q, %q; want %q, %q", tt.addr, c, n, tt.country, tt.network)
		}
	}
	if _, err := OpenGeoIP(filepath.Join(t.TempDir(), "missing.mmdb")); err == nil || !strings.Contains(err.Error(), "geoip database") {
		t.Errorf("missing database: %v", err)
	}
}

func TestHoursAndDaysInTheTargetsZone(t *testing.T) {
	aiko, _, db, _ := celFixture() // db is in Asia/Tokyo
	office, _ := ParseHourRange("09:00-18:00")
	night, _ := ParseHourRange("22:00-06:00")
	// 2026-12-01 is a Tuesday. 01:00 UTC is 10:00 in Tokyo; 14:00 UTC is 23:00.
	morning := time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)
	late := time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)
	saturday := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	tests := []struct {
		match Match
		at    time.Time
		want  bool
	}{
		{Match{Hours: office}, morning, true},
		{Match{Hours: office}, late, false},
		{Match{Hours: night}, late, true},
		{Match{Hours: night}, morning, false},
		{Match{Hours: office, Days: []time.Weekday{time.Monday, time.Tuesday}}, morning, true},
		{Match{Hours: office, Days: []time.Weekday{time.Monday, time.Tuesday}}, saturday, false},
	}
	for _, tt := range tests {
		p := &Policy{Rules: []Rule{{Name: "r", Effect: Allow, Match: tt.match}}}
		d := p.Decide(Request{Technician: aiko, Target: db, SourceCountry: "JP", Now: tt.at})
		if d.Allowed() != tt.want {
			t.Errorf("%v %v at %s: allowed %v, want %v (%s)", tt.match.Hours, tt.match.Days, tt.at, d.Allowed(), tt.want, d.Trace[0].Why)
		}
	}
	for _, bad := range []string{"9-17", "25:00-26:00", "08:00-08:00", "08:60-09:00", "x"} {
		if _, err := ParseHourRange(bad); err == nil {
			t.Errorf("ParseHourRange(%q) accepted", bad)
		}
	}
}
