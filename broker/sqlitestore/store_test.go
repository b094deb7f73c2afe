package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sekisho.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// base is a fixed instant with a non-zero nanosecond part, in a zone other
// than UTC, so that round trips are checked to the nanosecond.
var base = time.Date(2025, 3, 1, 18, 0, 0, 123456789, time.FixedZone("JST", 9*3600))

func record(id, tech, target string, started time.Time) *broker.SessionRecord {
	return &broker.SessionRecord{
		ID: id, Technician: tech, Affiliate: "ops-jp", AffiliateCountry: "JP", Source: "192.0.2.7:50022",
		Target: target, TargetAddress: "10.0.0.1:22", Residency: "JP", Login: "dbadmin", CrossBorder: tech == "li",
		Rule: "pii-in-residency", Trace: `[{"rule":"pii-in-residency","effect":"allow","matched":true,"why":"matched"}]`,
		CertSerial: 7, CertKeyID: "sekisho:" + tech + ":" + id, StartedAt: started, Recording: "2025/03/01/" + id + ".cast",
	}
}

func ids(list []broker.SessionRecord) []string {
	out := []string{}
	for _, r := range list {
		out = append(out, r.ID)
	}
	return out
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)

	// Inserted out of order; listed newest first.
	inserts := []*broker.SessionRecord{
		record("s2", "aiko", "db-jp-01", base.Add(2*time.Minute)),
		record("s1", "aiko", "web-sg-01", base.Add(1*time.Minute)),
		record("s4", "li", "web-sg-01", base.Add(4*time.Minute)),
		record("s3", "li", "db-jp-01", base.Add(3*time.Minute)),
		// Only nanoseconds later than s4: ordering must not truncate.
		record("s5", "aiko", "db-jp-01", base.Add(4*time.Minute+1)),
	}
	for _, r := range inserts {
		if err := s.StartSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StartSession(ctx, record("s1", "aiko", "x", base)); err == nil {
		t.Error("a second session with ID s1 was accepted")
	}

	tests := []struct {
		name string
		f    broker.SessionFilter
		want []string
	}{
		{"all", broker.SessionFilter{}, []string{"s5", "s4", "s3", "s2", "s1"}},
		{"technician", broker.SessionFilter{Technician: "li"}, []string{"s4", "s3"}},
		{"target", broker.SessionFilter{Target: "db-jp-01"}, []string{"s5", "s3", "s2"}},
		{"technician and target", broker.SessionFilter{Technician: "aiko", Target: "db-jp-01"}, []string{"s5", "s2"}},
		{"limit", broker.SessionFilter{Limit: 2}, []string{"s5", "s4"}},
		{"limit with filter", broker.SessionFilter{Target: "web-sg-01", Limit: 1}, []string{"s4"}},
		{"since", broker.SessionFilter{Since: base.Add(3 * time.Minute)}, []string{"s5", "s4", "s3"}},
		{"since in UTC", broker.SessionFilter{Since: base.Add(3*time.Minute + 1).UTC()}, []string{"s5", "s4"}},
		{"no such technician", broker.SessionFilter{Technician: "bob"}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Sessions(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Errorf("Sessions(%+v) = %v, want %v", tc.f, ids(got), tc.want)
			}
		})
	}
}

func TestSessionRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	want := record("0195d3f4-7c1e-7000-8000-000000000001", "li", "db-jp-01", base)
	want.CertSerial = 1<<63 + 12345 // larger than int64
	if err := s.StartSession(ctx, want); err != nil {
		t.Fatal(err)
	}

	got, err := s.Session(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ended() {
		t.Errorf("a session that did not end reports Ended, EndedAt %v", got.EndedAt)
	}
	checkRecord(t, got, *want)

	end := broker.SessionEnd{At: base.Add(17*time.Minute + 987654321), BytesIn: 1 << 40, BytesOut: 123456789012, Reason: "target closed the connection"}
	if err := s.EndSession(ctx, want.ID, end); err != nil {
		t.Fatal(err)
	}
	got, err = s.Session(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Ended() {
		t.Error("ended session does not report Ended")
	}
	want.EndedAt, want.BytesIn, want.BytesOut, want.EndReason = end.At, end.BytesIn, end.BytesOut, end.Reason
	checkRecord(t, got, *want)

	list, err := s.Sessions(ctx, broker.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("Sessions returned %d records, want 1", len(list))
	}
	checkRecord(t, list[0], *want)
}

// checkRecord compares records, times with Equal (the store returns UTC).
func checkRecord(t *testing.T, got, want broker.SessionRecord) {
	t.Helper()
	if !got.StartedAt.Equal(want.StartedAt) {
		t.Errorf("StartedAt = %v, want %v", got.StartedAt, want.StartedAt)
	}
	if !got.EndedAt.Equal(want.EndedAt) {
		t.Errorf("EndedAt = %v, want %v", got.EndedAt, want.EndedAt)
	}
	got.StartedAt, want.StartedAt = time.Time{}, time.Time{}
	got.EndedAt, want.EndedAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	if err := s.StartSession(ctx, record("s1", "aiko", "db-jp-01", base)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Session(unknown) err = %v, want ErrNotFound", err)
	}
	err := s.EndSession(ctx, "nope", broker.SessionEnd{At: base, Reason: "x"})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("EndSession(unknown) err = %v, want ErrNotFound", err)
	}
	// The unknown ID did not touch the known session.
	got, err := s.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Ended() || got.EndReason != "" {
		t.Errorf("s1 changed by EndSession of another ID: %+v", got)
	}
}

func TestAuditEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)

	if got, err := s.AuditEvents(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("empty log: AuditEvents = %v, %v", got, err)
	}
	var all []broker.AuditEvent
	for i := range 150 {
		e := broker.AuditEvent{
			At:   base.Add(time.Duration(i)*time.Second + time.Duration(i)),
			Kind: []string{"decision", "session_start", "session_end"}[i%3], Technician: "aiko", Target: "db-jp-01",
			Source: "192.0.2.7:50022", Session: fmt.Sprintf("s%d", i), Detail: fmt.Sprintf(`{"n":%d}`, i),
		}
		if err := s.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
	}
	// A minimal event: empty optional fields are stored as empty.
	minimal := broker.AuditEvent{At: base.Add(time.Hour), Kind: "hostkey_mismatch"}
	if err := s.Audit(ctx, minimal); err != nil {
		t.Fatal(err)
	}
	all = append(all, minimal)

	for _, tc := range []struct{ limit, want int }{{3, 3}, {1, 1}, {151, 151}, {1000, 151}, {0, 100}, {-1, 100}} {
		got, err := s.AuditEvents(ctx, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Fatalf("AuditEvents(%d) returned %d events, want %d", tc.limit, len(got), tc.want)
		}
		wantEvents := all[len(all)-tc.want:]
		for i := range got {
			g, w := got[i], wantEvents[i]
			if !g.At.Equal(w.At) {
				t.Errorf("AuditEvents(%d)[%d].At = %v, want %v", tc.limit, i, g.At, w.At)
			}
			g.At, w.At = time.Time{}, time.Time{}
			if g != w {
				t.Errorf("AuditEvents(%d)[%d] = %+v, want %+v", tc.limit, i, g, w)
			}
		}
	}
}

// The CLI opens the state file while the server has it open.
func TestSecondOpenSeesData(t *testing.T) {
	ctx := context.Background()
	server, path := openTemp(t)
	if err := server.StartSession(ctx, record("s1", "aiko", "db-jp-01", base)); err != nil {
		t.Fatal(err)
	}
	if err := server.Audit(ctx, broker.AuditEvent{At: base, Kind: "session_start", Session: "s1"}); err != nil {
		t.Fatal(err)
	}

	cli, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.Sessions(ctx, broker.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(list), []string{"s1"}) {
		t.Fatalf("second Open sees sessions %v, want [s1]", ids(list))
	}
	events, err := cli.AuditEvents(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Kind != "session_start" || events[0].Session != "s1" {
		t.Fatalf("second Open sees audit events %+v", events)
	}

	// Writes by the server after the CLI opened are seen too.
	end := broker.SessionEnd{At: base.Add(time.Minute), BytesIn: 10, BytesOut: 20, Reason: "client closed"}
	if err := server.EndSession(ctx, "s1", end); err != nil {
		t.Fatal(err)
	}
	got, err := cli.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.EndedAt.Equal(end.At) || got.BytesIn != 10 || got.BytesOut != 20 || got.EndReason != "client closed" {
		t.Fatalf("second Open sees %+v after EndSession", got)
	}

	// And the data survives closing and reopening.
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Session(ctx, "s1"); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestOpenMigratesAnOlderFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	// The sessions table as the first release wrote it.
	if _, err := db.Exec(`CREATE TABLE sessions (id TEXT PRIMARY KEY, technician TEXT NOT NULL, affiliate TEXT NOT NULL,
		affiliate_country TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, target_address TEXT NOT NULL,
		residency TEXT NOT NULL, login TEXT NOT NULL, cross_border INTEGER NOT NULL, rule TEXT NOT NULL, trace TEXT NOT NULL,
		cert_serial TEXT NOT NULL, cert_key_id TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
		bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0, end_reason TEXT NOT NULL DEFAULT '',
		recording TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	yes, no := true, false
	for i, cb := range []bool{true, false} {
		r := &broker.SessionRecord{ID: fmt.Sprintf("s%d", i), Technician: "li", SourceCountry: "CN", SourceNetwork: "cn-vpn",
			CrossBorder: cb, StartedAt: time.Now()}
		if err := s.StartSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Sessions(ctx, broker.SessionFilter{CrossBorder: &yes})
	if err != nil || len(got) != 1 || got[0].ID != "s0" || got[0].SourceCountry != "CN" || got[0].SourceNetwork != "cn-vpn" {
		t.Errorf("cross-border sessions: %+v, %v", got, err)
	}
	if got, _ := s.Sessions(ctx, broker.SessionFilter{CrossBorder: &no}); len(got) != 1 || got[0].ID != "s1" {
		t.Errorf("domestic sessions: %+v", got)
	}
}

func TestLocksExpireAndAreRemoved(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "locks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	forever, err := s.AddLock(ctx, broker.Lock{Kind: broker.LockAffiliate, Name: "ops-cn", Reason: "incident", By: "op", Created: now})
	if err != nil {
		t.Fatal(err)
	}
	hour, _ := s.AddLock(ctx, broker.Lock{Kind: broker.LockTarget, Name: "db", Reason: "maintenance", By: "op", Created: now, Expires: now.Add(time.Hour)})
	ids := func(at time.Time) []int64 {
		locks, err := s.Locks(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, l := range locks {
			out = append(out, l.ID)
		}
		return out
	}
	if got := ids(now); !reflect.DeepEqual(got, []int64{forever.ID, hour.ID}) {
		t.Errorf("locks now: %v", got)
	}
	if got := ids(now.Add(2 * time.Hour)); !reflect.DeepEqual(got, []int64{forever.ID}) {
		t.Errorf("locks after the expiry: %v", got)
	}
	if err := s.RemoveLock(ctx, forever.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveLock(ctx, forever.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("removing twice: %v", err)
	}
	if got := ids(now); !reflect.DeepEqual(got, []int64{hour.ID}) {
		t.Errorf("locks after the removal: %v", got)
	}
}

// A secret is replaced only while it is the one the caller read, and the
// step of the last code used stays.
func TestReplaceTOTPSecret(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if err := s.SetTOTP(ctx, "aiko", "PLAIN"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ClaimTOTPStep(ctx, "aiko", 1000); !ok || err != nil {
		t.Fatalf("claim step 1000: %v, %v", ok, err)
	}
	if ok, err := s.ReplaceTOTPSecret(ctx, "aiko", "OTHER", "vault:v1:x"); ok || err != nil {
		t.Fatalf("replacing a secret that is not stored: %v, %v; want false", ok, err)
	}
	if ok, err := s.ReplaceTOTPSecret(ctx, "aiko", "PLAIN", "vault:v1:x"); !ok || err != nil {
		t.Fatalf("replacing the stored secret: %v, %v; want true", ok, err)
	}
	all, err := s.TOTPSecrets(ctx)
	if err != nil || len(all) != 1 || all["aiko"] != "vault:v1:x" {
		t.Fatalf("TOTPSecrets = %v, %v", all, err)
	}
	if st, _ := s.TOTP(ctx, "aiko"); st.LastStep != 1000 {
		t.Errorf("last step %d after the replacement, want 1000", st.LastStep)
	}
	// The secret replaced is in neither the database nor its log.
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("PLAIN")) {
			t.Errorf("%s still holds the replaced secret", filepath.Base(f))
		}
	}
}

// The database and its -wal and -shm files are the owner's only, when
// made and when found readable by others.
func TestStoreFilesAreOwnerOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sekisho.db")
	check := func(when string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if perm := fi.Mode().Perm(); perm&0o077 != 0 {
				t.Errorf("%s: %s has mode %o", when, filepath.Base(p), perm)
			}
		}
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTOTP(ctx, "aiko", "vault:v1:x"); err != nil {
		t.Fatal(err)
	}
	check("made")
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Chmod(p, 0o644)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	check("found readable by others")
	s2.Close()
	s.Close()
}

// The audit log is searched by kind (or kind prefix), technician, target,
// session, source address, period and detail text, newest N, oldest
// first.
func TestSearchAudit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	at := base.UTC()
	for i, e := range []broker.AuditEvent{
		{Kind: "auth.failed", Technician: "li", Source: "203.0.113.5:40000", Detail: "mfa: wrong verification code"},
		{Kind: "mfa.enrolled", Technician: "li"},
		{Kind: "mfa.tampered", Technician: "wei", Detail: "a TOTP secret in the clear"},
		{Kind: "session.start", Technician: "li", Target: "db-jp-01", Source: "203.0.113.50:41000", Session: "s1"},
		{Kind: "session.end", Session: "s1", Detail: `{"reason":"client closed"}`},
		{Kind: "mfaX", Technician: "li"},
	} {
		e.At = at.Add(time.Duration(i) * time.Hour)
		if err := s.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	kinds := func(f broker.AuditFilter) string {
		t.Helper()
		got, err := s.SearchAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var k []string
		for _, e := range got {
			k = append(k, e.Kind)
		}
		return strings.Join(k, " ")
	}
	for _, c := range []struct {
		f    broker.AuditFilter
		want string
	}{
		{broker.AuditFilter{}, "auth.failed mfa.enrolled mfa.tampered session.start session.end mfaX"},
		{broker.AuditFilter{Kinds: []string{"mfa.*"}}, "mfa.enrolled mfa.tampered"},
		{broker.AuditFilter{Kinds: []string{"mfa."}}, "mfa.enrolled mfa.tampered"},
		{broker.AuditFilter{Kinds: []string{"auth.failed", "session.end"}}, "auth.failed session.end"},
		{broker.AuditFilter{Technician: "li"}, "auth.failed mfa.enrolled session.start mfaX"},
		{broker.AuditFilter{Technician: "li", Kinds: []string{"mfa.*"}}, "mfa.enrolled"},
		{broker.AuditFilter{Session: "s1"}, "session.start session.end"},
		{broker.AuditFilter{Target: "db-jp-01"}, "session.start"},
		{broker.AuditFilter{Source: "203.0.113.5"}, "auth.failed"},
		{broker.AuditFilter{Source: "203.0.113.50:41000"}, "session.start"},
		{broker.AuditFilter{Since: at.Add(2 * time.Hour), Until: at.Add(4 * time.Hour)}, "mfa.tampered session.start"},
		{broker.AuditFilter{Text: "clear"}, "mfa.tampered"},
		{broker.AuditFilter{Text: "CLEAR"}, "mfa.tampered"},
		{broker.AuditFilter{Text: "%"}, ""},
		{broker.AuditFilter{Limit: 2}, "session.end mfaX"},
		{broker.AuditFilter{Technician: "li' OR '1'='1"}, ""},
	} {
		if got := kinds(c.f); got != c.want {
			t.Errorf("SearchAudit(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
}
