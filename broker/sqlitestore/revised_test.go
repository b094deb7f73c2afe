package sqlitestore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// A requests table from before revisions were kept gets the column on
// Open: its grants read back unrevised, and a reload can then cut one
// (a new end and why) and revoke another.
func TestRequestsWithoutRevised(t *testing.T) {
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
	grant_start TEXT, grant_end TEXT, source_country TEXT NOT NULL DEFAULT '');
INSERT INTO requests (technician, affiliate, affiliate_country, target, rule, source, reason, duration, state, needed,
	approvals, created_at, expires_at, decided_at, grant_start, grant_end, source_country)
	VALUES ('li', 'ops-cn', 'CN', 'db-jp-01', 'r', '203.0.113.7:5000', 'INC-1 old grant', 14400000000000, 'approved', 1,
	'[{"by":"kenji","affiliate":"operator-jp","at":"2026-11-26T05:00:00Z"}]', '2026-11-26T05:00:00.000000000Z',
	'2026-11-26T05:15:00.000000000Z', '2026-11-26T05:01:00.000000000Z', '2026-11-26T05:01:00.000000000Z', '2026-11-26T09:01:00.000000000Z', 'CN')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old, err := s.Request(ctx, 1)
	if err != nil || old.Revised != "" || old.State != broker.RequestApproved || old.Duration != 4*time.Hour {
		t.Fatalf("the older grant: %+v, %v; want it approved for 4h, unrevised", old, err)
	}
	cut := old.GrantStart.Add(10 * time.Minute)
	const why = `rule "r" now grants at most 10m0s`
	r, err := s.UpdateRequest(ctx, 1, func(r *broker.AccessRequest) error {
		r.GrantEnd, r.Revised = cut, why
		return nil
	})
	if err != nil || !r.GrantEnd.Equal(cut) || r.Revised != why || r.Duration != 4*time.Hour {
		t.Fatalf("cut the older grant: %+v, %v", r, err)
	}
	if got, err := s.Request(ctx, 1); err != nil || !got.GrantEnd.Equal(cut) || got.Revised != why {
		t.Errorf("the cut grant read back: end %v, revised %q, %v; want %v, %q", got.GrantEnd, got.Revised, err, cut, why)
	}
}
