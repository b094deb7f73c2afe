package sqlitestore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// A file whose browser sessions predate single sign-on gets the new
// columns on open; its sessions read as started by a link.
func TestConsoleSessionsOfAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := db.Exec(`CREATE TABLE console_sessions (
		n INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL UNIQUE, technician TEXT NOT NULL,
		key_fingerprint TEXT NOT NULL, csrf TEXT NOT NULL, created INTEGER NOT NULL, seen INTEGER NOT NULL,
		idle_until INTEGER NOT NULL, expires INTEGER NOT NULL);
		INSERT INTO console_sessions (token_hash, technician, key_fingerprint, csrf, created, seen, idle_until, expires)
		VALUES ('h', 'kenji', 'SHA256:k', 'c', ?1, ?1, ?2, ?2)`, now.UnixNano(), now.Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bs, err := s.ConsoleSession(t.Context(), "h")
	if err != nil || bs.Technician != "kenji" || bs.Via != "" || bs.Roles != nil {
		t.Fatalf("an older session: %+v, %v", bs, err)
	}
	sso := broker.ConsoleSession{TokenHash: "o", Technician: "kenji", Via: broker.ViaOIDC, Roles: []string{"admin"},
		Created: now, Seen: now, IdleTimeout: time.Hour, Expires: now.Add(time.Hour)}
	if err := s.PutConsoleSession(t.Context(), sso, 5, now); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ConsoleSession(t.Context(), "o"); err != nil || got.Via != broker.ViaOIDC || len(got.Roles) != 1 {
		t.Errorf("a single sign-on session in the migrated file: %+v, %v", got, err)
	}
}
