package recording_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/internal/miniotest"
	"github.com/sekisho/sekisho/recording"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A node streams a live recording to the store and dies before sealing
// it: another node seals it from the store alone, up to the last chunk
// that arrived, and the recording it leaves in the store verifies as
// incomplete. Sealing it again (a second survivor) gives the same seal,
// and the node that made it, back and sealing its own, learns that the
// store's seal is the one of record instead of replacing it.
func TestSealShippedFromWhatReachedTheStore(t *testing.T) {
	ctx := context.Background()
	m := miniotest.Start(t)
	st := m.Bucket(t, "rec-sg")
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	spool := t.TempDir()
	routes, err := recording.NewRoutes([]recording.Route{{Store: "sg", Zones: []string{"*"}, S3: st}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	u := recording.NewUploader(spool, routes, log)
	id := uuid.NewString()
	start := time.Now().UTC().Truncate(time.Second)
	rec, err := recording.CreateSigned(spool, recording.Meta{ID: id, Technician: "aiko", Target: "web-sg-01", Residency: "SG", Start: start}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(ctx, id, "SG", nil); err != nil {
		t.Fatal(err)
	}
	// An exec channel first: its exact bytes go to 1.raw, chained with
	// its events when it closes (chunks 1-3: the header, 1.raw, events).
	ex, err := rec.Channel(recording.ChannelInfo{Kind: "exec", Command: "hostname"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.Stdout([]byte("exact-bytes-before-the-loss\x00")); err != nil {
		t.Fatal(err)
	}
	if err := ex.Close(); err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(recording.ChannelInfo{PTY: true, Term: "xterm", Cols: 80, Rows: 24, Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	// Past 1 MiB a chunk is made at once: two and a half make two
	// (chunks 5 and 6, after the header, 4).
	out := bytes.Repeat([]byte("sekisho records before it forwards\r\n"), 75000)
	if err := ch.Stdout(out); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "five chunks and their chain records in the store", func() bool {
		return len(m.Objects(t, "rec-sg", id+"/chunks/")) >= 5 && m.LiveChainCovers(t, "rec-sg", id) >= 5
	})
	u.Close() // the node dies: nothing more is shipped
	shipped := len(m.Objects(t, "rec-sg", id+"/chunks/"))
	if err := ch.Stdout([]byte("typed after the last shipment\r\n")); err != nil {
		t.Fatal(err)
	}

	// A survivor seals what reached the store.
	seal, err := st.SealShipped(ctx, recording.Meta{ID: id, Residency: "SG", Start: start}, t.TempDir(), key, "node lost")
	if err != nil {
		t.Fatal(err)
	}
	if seal.Complete || seal.Chunks < 5 || seal.Chunks > shipped {
		t.Fatalf("seal: complete %v, %d chunks; want incomplete, 5..%d chunks", seal.Complete, seal.Chunks, shipped)
	}
	fetched := t.TempDir()
	dir, err := st.Fetch(ctx, id, fetched)
	if err != nil {
		t.Fatal(err)
	}
	v, err := recording.Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	v.CheckRegister(true, true, recording.RegisterHead(seal.Head), seal.Chunks)
	if !v.OK || v.Complete || !v.Signed || v.Chunks != seal.Chunks {
		t.Fatalf("verify of the survivor's seal: ok %v complete %v signed %v chunks %d (problems %v); want ok, incomplete, signed, %d chunks", v.OK, v.Complete, v.Signed, v.Chunks, v.Problems, seal.Chunks)
	}
	if want := "verified up to chunk"; !strings.Contains(v.Reason, want) || !strings.Contains(v.Reason, "node lost") {
		t.Errorf("reason %q: want it to say node lost and %q", v.Reason, want)
	}
	// The survivor's metadata lists the channels (their event streams),
	// and the exact bytes read back through them.
	var export bytes.Buffer
	if err := recording.ExportJSON(&export, fetched, id, 1); err != nil {
		t.Fatalf("export of the survivor's seal: %v", err)
	}
	if !strings.Contains(export.String(), `"code":"x-stdout","text":"exact-bytes-before-the-loss\u0000"`) {
		t.Errorf("the exec channel's exact bytes are not in the export:\n%s", export.String())
	}
	if live := m.Objects(t, "rec-sg", id+"/live/"); len(live) != 0 {
		t.Errorf("live objects left after sealing: %v", live)
	}

	// A second survivor, or a retry, finds the seal of record.
	again, err := st.SealShipped(ctx, recording.Meta{ID: id, Residency: "SG", Start: start}, t.TempDir(), key, "node lost")
	if err != nil {
		t.Fatal(err)
	}
	if again.Head != seal.Head || again.Chunks != seal.Chunks || again.Signature != seal.Signature {
		t.Fatalf("sealed again: %d chunks ending %.12s, want the store's %d ending %.12s", again.Chunks, again.Head, seal.Chunks, seal.Head)
	}

	// The node comes back, seals its own copy and resumes the upload:
	// the store keeps the survivor's seal.
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rec.End(time.Now(), "client closed", 1, 2); err != nil {
		t.Fatal(err)
	}
	u2 := recording.NewUploader(spool, routes, log)
	u2.Resume(func(string) (string, error) { return "SG", nil })
	waitFor(t, 30*time.Second, "the upload to give way to the store's seal", func() bool {
		b, err := os.ReadFile(filepath.Join(spool, id, "upload.json"))
		var st struct {
			SealedElsewhere bool `json:"sealed_elsewhere"`
		}
		return err == nil && json.Unmarshal(b, &st) == nil && st.SealedElsewhere
	})
	u2.Close()
	dir, err = st.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err = recording.Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Complete || v.Head != seal.Head {
		t.Fatalf("after the node came back the store holds: ok %v complete %v head %.12s; want the survivor's seal %.12s", v.OK, v.Complete, v.Head, seal.Head)
	}
	if _, err := os.Stat(filepath.Join(spool, id)); errors.Is(err, os.ErrNotExist) {
		t.Error("the spool copy of a recording sealed elsewhere was removed")
	}
}

// A node ships a recording's seal and is cut off before its chain and
// metadata: the store holds a seal that nothing there vouches for. A
// survivor stores the chain and metadata from the live objects, as the
// seal vouches for them, and the recording verifies complete; sealing it
// again gives the same seal.
func TestSealShippedFinishesASealCutOffFromTheRest(t *testing.T) {
	ctx := context.Background()
	m := miniotest.Start(t)
	st := m.Bucket(t, "rec-cut")
	// The node's store takes everything but the chain: it is cut off
	// right after the seal.
	cut := m.RefusingStore(t, "rec-cut", func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/chain.jsonl")
	})
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	spool := t.TempDir()
	routes, err := recording.NewRoutes([]recording.Route{{Store: "rec-cut", Zones: []string{"*"}, S3: cut}})
	if err != nil {
		t.Fatal(err)
	}
	u := recording.NewUploader(spool, routes, slog.New(slog.NewTextHandler(io.Discard, nil)))
	id := uuid.NewString()
	start := time.Now().UTC().Truncate(time.Second)
	rec, err := recording.CreateSigned(spool, recording.Meta{ID: id, Technician: "aiko", Target: "web-sg-01", Residency: "SG", Start: start}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(ctx, id, "SG", nil); err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(recording.ChannelInfo{PTY: true, Term: "xterm", Cols: 80, Rows: 24, Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Stdout(bytes.Repeat([]byte("sekisho records before it forwards\r\n"), 75000)); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rec.End(time.Now(), "client closed", 1, 2); err != nil {
		t.Fatal(err)
	}
	local, err := recording.ReadSeal(spool, id)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the node's seal in the store", func() bool { return st.Has(ctx, id) })
	u.Close() // the node dies
	if got := append(m.Objects(t, "rec-cut", id+"/chain.jsonl"), m.Objects(t, "rec-cut", id+"/session.json")...); len(got) != 0 {
		t.Fatalf("the store holds %v; want the seal without the rest", got)
	}

	seal, err := st.SealShipped(ctx, recording.Meta{ID: id, Residency: "SG", Start: start}, t.TempDir(), key, "node lost")
	if err != nil {
		t.Fatalf("sealing a recording whose node was cut off after its seal: %v", err)
	}
	if seal != local {
		t.Fatalf("seal %+v, want the node's own %+v", seal, local)
	}
	dir, err := st.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := recording.Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	v.CheckRegister(true, true, recording.RegisterHead(local.Head), local.Chunks)
	if !v.OK || !v.Complete || !v.Signed || v.Chunks != local.Chunks {
		t.Fatalf("verify: ok %v complete %v signed %v chunks %d (problems %v); want ok, complete, signed, %d chunks", v.OK, v.Complete, v.Signed, v.Chunks, v.Problems, local.Chunks)
	}
	if live := m.Objects(t, "rec-cut", id+"/live/"); len(live) != 0 {
		t.Errorf("live objects left after the recording was finished: %v", live)
	}
	again, err := st.SealShipped(ctx, recording.Meta{ID: id, Residency: "SG", Start: start}, t.TempDir(), key, "node lost")
	if err != nil || again != local {
		t.Fatalf("sealed again: %+v, %v; want the node's seal", again, err)
	}
}
