package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
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
		recording TEXT NOT NULL);
		INSERT INTO sessions (id, technician, affiliate, affiliate_country, source, target, target_address, residency, login,
		cross_border, rule, trace, cert_serial, cert_key_id, started_at, recording)
		VALUES ('old', 'li', 'ops-cn', 'CN', '203.0.113.5:4000', 'db-jp-01', '10.0.0.1:22', 'JP', 'ops',
		1, 'r', '[]', '1', 'k', '2025-03-01T09:00:00.000000000Z', 'old')`); err != nil {
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
			CrossBorder: cb, Moderated: cb, StartedAt: time.Now()}
		if err := s.StartSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Sessions(ctx, broker.SessionFilter{CrossBorder: &yes})
	if err != nil || len(got) != 2 || got[0].ID != "s0" || got[0].SourceCountry != "CN" || got[0].SourceNetwork != "cn-vpn" || !got[0].Moderated {
		t.Errorf("cross-border sessions: %+v, %v", got, err)
	}
	// A session of the older file was not moderated: no rule could ask.
	if old, err := s.Session(ctx, "old"); err != nil || old.Moderated || old.SourceCountry != "" || old.Technician != "li" {
		t.Errorf("the older file's session: %+v, %v", old, err)
	}
	if got, _ := s.Sessions(ctx, broker.SessionFilter{CrossBorder: &no}); len(got) != 1 || got[0].ID != "s1" || got[0].Moderated {
		t.Errorf("domestic sessions: %+v", got)
	}
}

// A secret replaced (a secret in the clear sealed in its place) is left
// in neither the database nor its log: secure_delete zeroes it in the
// page and a checkpoint empties the log. What ReplaceTOTPSecret answers
// is tested for every backend in broker/storetest.
func TestReplacedTOTPSecretIsErased(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if err := s.SetTOTP(ctx, "aiko", "PLAIN"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ReplaceTOTPSecret(ctx, "aiko", "PLAIN", "vault:v1:x"); !ok || err != nil {
		t.Fatalf("replacing the stored secret: %v, %v; want true", ok, err)
	}
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
