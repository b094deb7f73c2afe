package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/sqlitestore"
	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/recording"
)

// A node killed after sealing a recording but before registering the
// session's end: at the next start the session is ended in the register
// from the sealed recording, with its own end time, reason and byte
// counts, and its seal is registered so that verify passes.
func TestKilledBetweenSealAndRegisterIsFinishedAtStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := sqlitestore.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	recDir := filepath.Join(dir, "recordings")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk := broker.New(broker.Config{Store: store, Logger: log})

	start := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	r := &broker.SessionRecord{ID: "0b6f3c1e-8f0e-4f7e-9d43-2b1d2f7c6a11", Technician: "aiko", Target: "web-sg-01", StartedAt: start}
	if err := store.StartSession(ctx, r); err != nil {
		t.Fatal(err)
	}
	rec, err := recording.CreateSigned(recDir, recording.Meta{ID: r.ID, Technician: "aiko", Target: "web-sg-01", Start: start}, key)
	if err != nil {
		t.Fatal(err)
	}
	end := start.Add(30 * time.Second)
	if err := rec.End(end, "client closed", 12, 345); err != nil {
		t.Fatal(err)
	}
	// Killed here: the register still has the session live.

	finishRegistrations(ctx, brk, store, recDir, log)
	got, err := store.Session(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.EndedAt.Equal(end) || got.EndReason != "client closed" || got.BytesIn != 12 || got.BytesOut != 345 {
		t.Fatalf("register after the start: ended %v (%q), bytes %d/%d; want %v (\"client closed\"), 12/345", got.EndedAt, got.EndReason, got.BytesIn, got.BytesOut, end)
	}
	sdir, err := recording.SessionDir(recDir, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := recording.Verify(sdir, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	v.CheckRegister(true, got.Ended(), got.RecordingHead, got.RecordingChunks)
	if !v.OK {
		t.Fatalf("verify against the register: %v", v.Problems)
	}
	hardening.Report(t, "kill", "killed between sealing a recording and registering the session's end: at the next start the session is ended with its own time, reason and byte counts, and verifies against the register")
}
