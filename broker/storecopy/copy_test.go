package storecopy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/broker/storecopy"
	"github.com/sekisho/sekisho/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// populate fills a SQLite store the way a node would over a while: what
// an operator moving to PostgreSQL must not lose.
func populate(t *testing.T, ctx context.Context, s *sqlitestore.Store, base time.Time) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		at := base.Add(time.Duration(i) * time.Minute)
		r := &broker.SessionRecord{
			ID: fmt.Sprintf("s%02d", i), Technician: []string{"aiko", "li", "wei"}[i%3], Affiliate: "ops", AffiliateCountry: "CN",
			Source: "203.0.113.7:5000", SourceCountry: "CN", SourceNetwork: "office", Target: "db-jp-01", TargetAddress: "10.0.0.5:22",
			Residency: "jp", Login: "root", CrossBorder: i%2 == 0, Rule: "r", Trace: `[{"rule":"r"}]`,
			CertSerial: 1<<63 + uint64(i), CertKeyID: "sekisho:aiko", StartedAt: at, Recording: fmt.Sprintf("jp/s%02d", i), Request: int64(i % 4),
			Moderated: i%3 == 1,
		}
		must(s.StartSession(ctx, r))
		must(s.Audit(ctx, broker.AuditEvent{At: at, Kind: "session.start", Technician: r.Technician, Target: r.Target, Session: r.ID, Detail: fmt.Sprintf("event %d", i)}))
		if i < 35 {
			must(s.EndSession(ctx, r.ID, broker.SessionEnd{At: at.Add(30 * time.Second), BytesIn: int64(i), BytesOut: 2 * int64(i), Reason: "client closed"}))
			must(s.SetRecordingSeal(ctx, r.ID, fmt.Sprintf("head%d", i), i+1, i%5 != 0))
		}
		if i < 10 {
			must(s.IndexSessionText(ctx, r.ID, broker.SessionText{Typed: fmt.Sprintf("cat /etc/shadow-%d\n", i), Shown: "root:x:0:0", Files: i % 2, Commands: 1}))
		}
	}
	// A detail SQLite kept as it came, which PostgreSQL cannot hold as is.
	must(s.Audit(ctx, broker.AuditEvent{At: base.Add(time.Hour), Kind: "auth.failed", Detail: "user \xff\x00x"}))
	for i := range 6 {
		r, err := s.CreateRequest(ctx, broker.AccessRequest{
			Technician: "li", Affiliate: "ops", AffiliateCountry: "CN", Target: "db-jp-01", Rule: "r", Source: "203.0.113.7:5000",
			SourceCountry: "CN", Reason: fmt.Sprintf("INC-%d", i), Duration: time.Hour, State: broker.RequestPending, Needed: 2,
			Created: base.Add(time.Duration(i) * time.Second), Expires: base.Add(time.Hour),
		})
		must(err)
		if i%2 == 0 {
			_, err = s.UpdateRequest(ctx, r.ID, func(r *broker.AccessRequest) error {
				r.Approvals = []broker.RequestApproval{{By: "sato", Affiliate: "hq", Comment: "ok", At: base.Add(time.Minute)}, {By: "tanaka", Affiliate: "hq", At: base.Add(2 * time.Minute)}}
				r.State, r.DecidedBy, r.DecidedAt = broker.RequestApproved, "tanaka", base.Add(2*time.Minute)
				r.GrantStart, r.GrantEnd, r.Revised = base.Add(2*time.Minute), base.Add(62*time.Minute), "max_grant 1h"
				return nil
			})
			must(err)
		}
	}
	l1, err := s.AddLock(ctx, broker.Lock{Kind: broker.LockTechnician, Name: "li", Reason: "left", By: "sato", Created: base})
	must(err)
	_, err = s.AddLock(ctx, broker.Lock{Kind: broker.LockAffiliate, Name: "ops", Reason: "audit", By: "sato", Created: base, Expires: base.Add(240 * time.Hour)})
	must(err)
	must(s.RemoveLock(ctx, l1.ID))
	_, err = s.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "db-jp-01", Reason: "maintenance", By: "sato", Created: base})
	must(err)
	must(s.SetHold(ctx, broker.LegalHold{Session: "s03", Reason: "case 7", By: "suzuki", At: base}))
	must(s.SetTOTP(ctx, "li", "sealed:li"))
	must(s.SetTOTP(ctx, "aiko", "sealed:aiko"))
	if ok, err := s.ClaimTOTPStep(ctx, "li", 12345); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
}

// state is everything a node reads from a store, for comparison.
type state struct {
	Sessions []broker.SessionRecord
	Audit    []broker.AuditEvent
	Requests []broker.AccessRequest
	Locks    []broker.Lock
	Holds    []broker.LegalHold
	TOTP     map[string]broker.TOTPState
	Search   []string
	ToIndex  []string
}

func read(t *testing.T, ctx context.Context, s interface {
	broker.Store
	SessionsToIndex(context.Context, int) ([]string, error)
}, now time.Time) state {
	t.Helper()
	var st state
	var err error
	if st.Sessions, err = s.Sessions(ctx, broker.SessionFilter{}); err != nil {
		t.Fatal(err)
	}
	if st.Audit, err = s.AuditEvents(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	if st.Requests, err = s.Requests(ctx, broker.RequestFilter{}); err != nil {
		t.Fatal(err)
	}
	if st.Locks, err = s.Locks(ctx, now); err != nil {
		t.Fatal(err)
	}
	if st.Holds, err = s.Holds(ctx); err != nil {
		t.Fatal(err)
	}
	st.TOTP = map[string]broker.TOTPState{}
	for _, who := range []string{"li", "aiko"} {
		if st.TOTP[who], err = s.TOTP(ctx, who); err != nil {
			t.Fatal(err)
		}
	}
	found, err := s.Sessions(ctx, broker.SessionFilter{Text: "etc/shadow-3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range found {
		st.Search = append(st.Search, r.ID)
	}
	if st.ToIndex, err = s.SessionsToIndex(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	// Microseconds: what both engines keep.
	base := time.Date(2026, 12, 1, 9, 0, 0, 123456000, time.UTC)
	path := filepath.Join(t.TempDir(), "sekisho.db")
	src, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	populate(t, ctx, src, base)
	now := base.Add(2 * time.Hour)
	want := read(t, ctx, src, now)
	src.Close()

	dsn := pgtest.NewDatabase(t)
	dst, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	counts, err := storecopy.SQLiteToPostgres(ctx, path, dst.Pool())
	if err != nil {
		t.Fatal(err)
	}
	if got := counts.String(); got != "sessions 40, audit events 41, access requests 6, locks 3, legal holds 1, second factors 2, indexed texts 10" {
		t.Errorf("counts: %s", got)
	}
	got := read(t, ctx, dst, now)
	// The one text PostgreSQL cannot hold as SQLite kept it.
	for i, e := range want.Audit {
		if e.Kind == "auth.failed" {
			want.Audit[i].Detail = "user \uFFFD\uFFFDx"
		}
	}
	v1, v2 := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := range v1.NumField() {
		if !reflect.DeepEqual(v1.Field(i).Interface(), v2.Field(i).Interface()) {
			t.Errorf("%s differ after the copy:\nsqlite:   %+v\npostgres: %+v", v1.Type().Field(i).Name, v1.Field(i).Interface(), v2.Field(i).Interface())
		}
	}
	if len(got.Search) != 1 || len(got.ToIndex) != 25 || len(got.Locks) != 2 {
		t.Errorf("search %v, to index %d, locks %d: the populated store is not what the test meant", got.Search, len(got.ToIndex), len(got.Locks))
	}

	// The copy goes on where SQLite left off.
	r, err := dst.CreateRequest(ctx, broker.AccessRequest{Technician: "li", Target: "db-jp-01", State: broker.RequestPending, Created: now})
	if err != nil || r.ID != 7 {
		t.Errorf("the next request: ID %d, %v; want 7", r.ID, err)
	}
	l, err := dst.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "x", Created: now})
	if err != nil || l.ID != 4 {
		t.Errorf("the next lock: ID %d, %v; want 4", l.ID, err)
	}
	if ok, err := dst.ClaimTOTPStep(ctx, "li", 12345); err != nil || ok {
		t.Errorf("a code used on SQLite was accepted again on PostgreSQL (%v, %v)", ok, err)
	}

	// Never into a database a node has started on.
	other, err := pgstore.Open(ctx, pgtest.NewDatabase(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Heartbeat(ctx, "n1", "", now); err != nil {
		t.Fatal(err)
	}
	if _, err := storecopy.SQLiteToPostgres(ctx, path, other.Pool()); err == nil || !strings.Contains(err.Error(), "nodes have run on this PostgreSQL database") {
		t.Errorf("a copy into a database a node started on: %v, want a refusal", err)
	}

	// Never over a database in use.
	_, err = storecopy.SQLiteToPostgres(ctx, path, dst.Pool())
	if err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("a second copy: %v, want a refusal", err)
	}
}
