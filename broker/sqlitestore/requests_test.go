package sqlitestore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// pending is a minimal pending request: no approvals, no optional times.
func pending(tech, target string) broker.AccessRequest {
	return broker.AccessRequest{
		Technician: tech, Affiliate: "ops-" + tech, AffiliateCountry: "JP", Target: target, Rule: "r",
		Source: "192.0.2.7:50022", Reason: "maintenance", Duration: time.Hour, State: broker.RequestPending, Needed: 1,
		Created: base, Expires: base.Add(broker.DefaultPendingFor),
	}
}

// A state file from before access requests gets the table on Open.
func TestRequestsOnAnOlderFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL,
		technician TEXT NOT NULL, target TEXT NOT NULL, source TEXT NOT NULL, session TEXT NOT NULL, detail TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.CreateRequest(ctx, pending("aiko", "db-jp-01"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Requests(ctx, broker.RequestFilter{Technician: "aiko"}); err != nil || len(got) != 1 || got[0].ID != r.ID {
		t.Errorf("Requests on a migrated file: %+v, %v", got, err)
	}
}

// A requests table from before source countries were kept gets the
// column on Open; its rows read back without a country (their grants are
// then used from the address they were filed from only) and update.
func TestRequestsWithoutSourceCountry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE requests (
	id INTEGER PRIMARY KEY AUTOINCREMENT, technician TEXT NOT NULL, affiliate TEXT NOT NULL, affiliate_country TEXT NOT NULL,
	target TEXT NOT NULL, rule TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL, duration INTEGER NOT NULL,
	state TEXT NOT NULL, needed INTEGER NOT NULL, approvals TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL,
	expires_at TEXT, decided_by TEXT NOT NULL DEFAULT '', decided_at TEXT, note TEXT NOT NULL DEFAULT '',
	grant_start TEXT, grant_end TEXT);
INSERT INTO requests (technician, affiliate, affiliate_country, target, rule, source, reason, duration, state, needed,
	approvals, created_at, expires_at, decided_at, grant_start, grant_end)
	VALUES ('li', 'ops-cn', 'CN', 'db-jp-01', 'r', '203.0.113.7:5000', 'INC-1 old grant', 3600000000000, 'approved', 1,
	'[{"by":"kenji","affiliate":"operator-jp","at":"2026-11-26T05:00:00Z"}]', '2026-11-26T05:00:00.000000000Z',
	'2026-11-26T05:15:00.000000000Z', '2026-11-26T05:01:00.000000000Z', '2026-11-26T05:01:00.000000000Z', '2026-11-26T06:01:00.000000000Z')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old, err := s.Request(ctx, 1)
	if err != nil || old.SourceCountry != "" || old.Source != "203.0.113.7:5000" || old.State != broker.RequestApproved {
		t.Fatalf("the older grant: %+v, %v; want it approved, from 203.0.113.7:5000, without a country", old, err)
	}
	if r, err := s.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error { r.State = broker.RequestRevoked; return nil }); err != nil || r.SourceCountry != "" || r.State != broker.RequestRevoked {
		t.Errorf("update of the older grant: %+v, %v", r, err)
	}
	r := pending("li", "db-jp-01")
	r.SourceCountry = "SG"
	if r, err = s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Request(ctx, r.ID); err != nil || got.SourceCountry != "SG" {
		t.Errorf("a new request on the migrated file: source country %q, %v; want SG", got.SourceCountry, err)
	}
}
