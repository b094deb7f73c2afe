package broker_test

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
)

// Sources of the grant scenario: two offices of ops-cn's, one in CN and
// one in SG, and an address no network or database knows.
const (
	fromCN       = "203.0.113.7:5000"
	fromCN2      = "[::ffff:203.0.113.99]:6000" // another address in CN, as a v4-mapped one
	fromSG       = "198.51.100.7:5000"
	fromUnknown  = "192.0.2.1:5000"
	fromUnknown2 = "192.0.2.2:5000"
)

// grantScenario: li and wei (ops-cn) need kenji's approval for db-jp-01.
func grantScenario(t *testing.T) (*broker.Broker, *sqlitestore.Store) {
	t.Helper()
	techs := []*broker.Technician{
		{Name: "li", Affiliate: opsCN},
		{Name: "wei", Affiliate: opsCN},
		{Name: "kenji", Affiliate: operatorJP, Groups: []string{"approvers"}},
	}
	targets := []*broker.Target{{Name: dbJP, Address: "10.0.0.1:22", Login: "dbadmin", Residency: "JP", Data: []string{"pii"}}}
	policy, err := broker.NewPolicy([]broker.Rule{
		{Name: oneRule, Effect: broker.Approval, Match: broker.Match{Targets: []string{dbJP}},
			Approval: broker.ApprovalSpec{Approvals: 1, From: []string{"approvers"}, PendingFor: time.Hour, MaxGrant: maxGrant}},
	})
	if err != nil {
		t.Fatal(err)
	}
	geo := broker.NewGeo([]*broker.Network{
		{Name: "cn-office", Country: "CN", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		{Name: "sg-office", Country: "SG", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	}, nil)
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "sekisho.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Geo: geo, Store: store,
		Logger: slog.New(slog.DiscardHandler)}), store
}

// authorize is Authorize's decision, failing the test on an error.
func authorize(t *testing.T, b *broker.Broker, tech, from string) broker.Decision {
	t.Helper()
	d, _, err := b.Authorize(t.Context(), tech, dbJP, from)
	if err != nil {
		t.Fatalf("Authorize(%s from %s): %v", tech, from, err)
	}
	return d
}

func TestGrantIsBoundToTheSourceCountry(t *testing.T) {
	t.Parallel()
	b, _ := grantScenario(t)
	ctx := t.Context()
	r, _, err := b.RequestAccess(ctx, "li", dbJP, fromCN, reason, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.SourceCountry != "CN" || r.From() != "CN (203.0.113.7)" {
		t.Errorf("request from %s: source country %q, From %q; want CN, \"CN (203.0.113.7)\"", fromCN, r.SourceCountry, r.From())
	}
	if r, err = b.Approve(ctx, "kenji", r.ID, ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Request(ctx, r.ID); got.SourceCountry != "CN" {
		t.Errorf("stored grant: source country %q, want CN", got.SourceCountry)
	}

	for _, from := range []string{fromCN, fromCN2} {
		if d := authorize(t, b, "li", from); !d.Allowed() || d.Grant == nil || d.Grant.RequestID != r.ID {
			t.Errorf("li from %s (CN) under the grant: %s %q, want allowed by request %d", from, d.Effect, d.Reason, r.ID)
		}
	}
	d := authorize(t, b, "li", fromSG)
	want := "request 1 was approved for connections from CN; you are connecting from SG: file a new request"
	if d.Allowed() || d.Effect != broker.Approval || d.Grant != nil || d.Reason != want {
		t.Errorf("li from SG under a grant for CN: %s grant %+v %q; want approval needed, %q", d.Effect, d.Grant, d.Reason, want)
	}
	d = authorize(t, b, "li", fromUnknown)
	if want := "request 1 was approved for connections from CN; you are connecting from 192.0.2.1 (country unknown): file a new request"; d.Allowed() || d.Reason != want {
		t.Errorf("li from an unknown country: %s %q, want %q", d.Effect, d.Reason, want)
	}

	// From SG li files a new request; the grant for CN is not it.
	sg, existing, err := b.RequestAccess(ctx, "li", dbJP, fromSG, "INC-43 from the Singapore office", 30*time.Minute)
	if err != nil || existing || sg.ID == r.ID || sg.State != broker.RequestPending || sg.SourceCountry != "SG" {
		t.Fatalf("request from SG: {id %d %s from %q}, existing %v, %v; want a new pending request from SG", sg.ID, sg.State, sg.SourceCountry, existing, err)
	}
	if again, existing, _ := b.RequestAccess(ctx, "li", dbJP, fromSG, reason, 0); !existing || again.ID != sg.ID {
		t.Errorf("asking again from SG: {id %d}, existing %v; want the pending request %d", again.ID, existing, sg.ID)
	}
	if again, existing, _ := b.RequestAccess(ctx, "li", dbJP, fromCN2, reason, 0); !existing || again.ID != r.ID {
		t.Errorf("asking again from CN: {id %d}, existing %v; want the grant %d", again.ID, existing, r.ID)
	}
	if _, err := b.Approve(ctx, "kenji", sg.ID, ""); err != nil {
		t.Fatal(err)
	}
	for from, id := range map[string]int64{fromSG: sg.ID, fromCN: r.ID} {
		if d := authorize(t, b, "li", from); !d.Allowed() || d.Grant.RequestID != id {
			t.Errorf("li from %s: %s %+v, want allowed by request %d", from, d.Effect, d.Grant, id)
		}
	}
}

// A request from an address of unknown country, and one filed before
// sekisho kept the country (stored without it), are used from the same
// address only.
func TestGrantWithoutCountryIsBoundToItsAddress(t *testing.T) {
	t.Parallel()
	b, store := grantScenario(t)
	ctx := t.Context()
	r, _, err := b.RequestAccess(ctx, "li", dbJP, fromUnknown, reason, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.SourceCountry != "" || r.From() != "192.0.2.1 (country unknown)" {
		t.Errorf("request from an unknown country: %q, From %q", r.SourceCountry, r.From())
	}
	if _, err := b.Approve(ctx, "kenji", r.ID, ""); err != nil {
		t.Fatal(err)
	}
	if d := authorize(t, b, "li", "192.0.2.1:7000"); !d.Allowed() {
		t.Errorf("li from the same address, another port: %s %q, want allowed", d.Effect, d.Reason)
	}
	d := authorize(t, b, "li", fromUnknown2)
	if want := "request 1 was approved for connections from 192.0.2.1 (country unknown); you are connecting from 192.0.2.2 (country unknown): file a new request"; d.Allowed() || d.Reason != want {
		t.Errorf("li from another unknown address: %s %q, want %q", d.Effect, d.Reason, want)
	}

	// An older grant: wei's, from CN, stored without its country.
	now := time.Now()
	old, err := store.CreateRequest(ctx, broker.AccessRequest{Technician: "wei", Affiliate: "ops-cn", AffiliateCountry: "CN",
		Target: dbJP, Rule: oneRule, Source: fromCN, Reason: reason, Duration: time.Hour, State: broker.RequestApproved, Needed: 1,
		Approvals: []broker.RequestApproval{{By: "kenji", Affiliate: "operator-jp", At: now}},
		Created:   now, Expires: now.Add(time.Hour), DecidedAt: now, GrantStart: now, GrantEnd: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if d := authorize(t, b, "wei", "203.0.113.7:6000"); !d.Allowed() || d.Grant.RequestID != old.ID {
		t.Errorf("wei from the address of the older grant: %s %q, want allowed", d.Effect, d.Reason)
	}
	if d := authorize(t, b, "wei", fromCN2); d.Allowed() {
		t.Errorf("wei from another address in CN under a grant without a country: allowed, want refused (closed)")
	}
}

func TestUsableFrom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		country, source string
		from            broker.SourceInput
		want            bool
	}{
		{"CN", fromCN, broker.SourceInput{Address: "203.0.113.8", Country: "CN"}, true},
		{"CN", fromCN, broker.SourceInput{Address: "198.51.100.7", Country: "SG"}, false},
		{"CN", fromCN, broker.SourceInput{Address: "192.0.2.1"}, false},
		{"", fromUnknown, broker.SourceInput{Address: "192.0.2.1"}, true},
		{"", fromUnknown, broker.SourceInput{Address: "192.0.2.1", Country: "JP"}, true}, // the address it was filed from, now located
		{"", fromUnknown, broker.SourceInput{Address: "192.0.2.2"}, false},
		{"", "[::ffff:192.0.2.1]:22", broker.SourceInput{Address: "192.0.2.1"}, true},
		{"", "", broker.SourceInput{}, false},
	} {
		r := broker.AccessRequest{SourceCountry: tc.country, Source: tc.source}
		if got := r.UsableFrom(tc.from); got != tc.want {
			t.Errorf("grant from %q (%q) usable from %+v = %v, want %v", tc.source, tc.country, tc.from, got, tc.want)
		}
	}
}
