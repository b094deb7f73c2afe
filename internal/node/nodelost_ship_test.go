package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// recordOn registers a live session of node and starts its recording in
// spool, streamed by u, with output enough for two chunks.
func recordOn(t *testing.T, s broker.Store, u *recording.Uploader, spool string, key ed25519.PrivateKey, node string) (broker.SessionRecord, *recording.Session, *recording.Channel) {
	t.Helper()
	ctx := context.Background()
	r := broker.SessionRecord{ID: uuid.NewString(), Technician: "aiko", Target: "web-sg-01", Residency: "SG", Source: "192.0.2.7:50000",
		StartedAt: time.Now().UTC().Truncate(time.Second), Node: node, Trace: "[]"}
	if err := s.StartSession(ctx, &r); err != nil {
		t.Fatal(err)
	}
	rec, err := recording.CreateSigned(spool, recording.Meta{ID: r.ID, Technician: r.Technician, Target: r.Target, Residency: "SG", Start: r.StartedAt}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(ctx, r.ID, "SG", nil); err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(recording.ChannelInfo{PTY: true, Term: "xterm", Cols: 80, Rows: 24, Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Stdout(bytes.Repeat([]byte("row 42 of the customer table\r\n"), 90000)); err != nil {
		t.Fatal(err)
	}
	return r, rec, ch
}

// endRecording ends and seals a recording and returns its seal.
func endRecording(t *testing.T, rec *recording.Session, ch *recording.Channel, spool, id string) recording.Seal {
	t.Helper()
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rec.End(time.Now(), "client closed", 10, 20); err != nil {
		t.Fatal(err)
	}
	seal, err := recording.ReadSeal(spool, id)
	if err != nil {
		t.Fatal(err)
	}
	return seal
}

// waitLost waits until the store takes node for lost.
func waitLost(t *testing.T, s broker.Store, node string, lostAfter time.Duration) {
	t.Helper()
	waitFor(t, lostAfter+10*time.Second, node+" silent for node_lost_after", func() bool {
		nodes, err := s.Nodes(context.Background())
		if err != nil {
			return false
		}
		for _, nb := range nodes {
			if nb.Name == node {
				return nb.Silent > lostAfter
			}
		}
		return false
	})
}

// verifyStored fetches id from st and verifies it against the register.
func verifyStored(t *testing.T, s broker.Store, st *recording.S3Store, id string, pub ed25519.PublicKey) recording.Verification {
	t.Helper()
	ctx := context.Background()
	dir, err := st.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := recording.Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Session(ctx, id)
	v.CheckRegister(err == nil, r.Ended(), r.RecordingHead, r.RecordingChunks)
	return v
}

// A node seals two recordings, ships their seals and is killed before
// their chains and metadata, with their sessions live in the register.
// A survivor claims both; it finishes the first in the store from the
// live objects and registers the node's seal, and is cut off before the
// second. The node starts again: it keeps both spool copies, the store
// holding their seals, and its uploads finish them; the survivor then
// registers the second. Both verify complete against the register.
func TestLostNodeCutOffAfterItsSealsFinishesThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newLostNodeCluster(t, "cut-sg")
	dsn, m, st, routes, key, pub, s := c.dsn, c.m, c.st, c.routes, c.key, c.pub, c.s
	var cutOff atomic.Bool
	cutOff.Store(true)
	nodeStore := m.RefusingStore(t, "cut-sg", func(r *http.Request) bool {
		return cutOff.Load() && r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/chain.jsonl")
	})
	nodeRoutes, err := recording.NewRoutes([]recording.Route{{Store: "cut-sg", Zones: []string{"*"}, S3: nodeStore}})
	if err != nil {
		t.Fatal(err)
	}
	const lostAfter = time.Second
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	if err := s.Heartbeat(ctx, "node-b", "127.0.0.1:2222", time.Now()); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	u := recording.NewUploader(spool, nodeRoutes, log)
	first, rec1, ch1 := recordOn(t, s, u, spool, key, "node-b")
	second, rec2, ch2 := recordOn(t, s, u, spool, key, "node-b")
	seal1 := endRecording(t, rec1, ch1, spool, first.ID)
	seal2 := endRecording(t, rec2, ch2, spool, second.ID)
	waitFor(t, 30*time.Second, "both seals in the store", func() bool { return st.Has(ctx, first.ID) && st.Has(ctx, second.ID) })
	u.Close() // kill -9

	waitLost(t, s, "node-b", lostAfter)
	claimed, err := s.ClaimLostSessions(ctx, lostAfter, broker.EndNodeLost)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %d sessions, err %v; want both", len(claimed), err)
	}
	n := survivor(t, dsn, "node-a", lostAfter, routes, key)
	r1, err := s.Session(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.sealLost(ctx, r1); err != nil {
		t.Fatalf("sealing the recording of a node cut off after its seal: %v", err)
	}
	if r1, _ = s.Session(ctx, first.ID); r1.RecordingHead != recording.RegisterHead(seal1.Head) || !r1.RecordingComplete {
		t.Fatalf("registered head %.12s complete %v; want the node's seal %.12s, complete", r1.RecordingHead, r1.RecordingComplete, seal1.Head)
	}

	// The node starts again.
	setAsideSuperseded(ctx, s, spool, nodeRoutes, log)
	for _, id := range []string{first.ID, second.ID} {
		if _, err := os.Stat(filepath.Join(spool, id, "seal.json")); err != nil {
			t.Fatalf("the spool copy of %s, whose seal is the store's, was set aside: %v", id, err)
		}
	}
	cutOff.Store(false)
	u2 := recording.NewUploader(spool, nodeRoutes, log)
	u2.Resume(func(string) (string, error) { return "SG", nil })
	waitFor(t, 30*time.Second, "the uploads to finish", func() bool {
		return len(m.Objects(t, "cut-sg", second.ID+"/session.json")) == 1 && len(m.Objects(t, "cut-sg", first.ID+"/live/")) == 0 &&
			len(m.Objects(t, "cut-sg", second.ID+"/live/")) == 0
	})
	u2.Close()
	if err := n.recoverLostNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if r2, _ := s.Session(ctx, second.ID); r2.RecordingHead != recording.RegisterHead(seal2.Head) || !r2.RecordingComplete {
		t.Fatalf("registered head %.12s complete %v; want the node's seal %.12s, complete", r2.RecordingHead, r2.RecordingComplete, seal2.Head)
	}
	for _, id := range []string{first.ID, second.ID} {
		if v := verifyStored(t, s, st, id, pub); !v.OK || !v.Complete {
			t.Errorf("verify %s against the register: ok %v complete %v problems %v; want ok, complete", id, v.OK, v.Complete, v.Problems)
		}
	}
}

// A session ends on a node and its end and seal are registered while the
// uploader still ships its chunks; the node dies and never comes back. A
// survivor seals the recording as incomplete from what reached the store
// and audits it; the register keeps the node's seal, so that verify
// reports the store's recording as cut short rather than passing it.
func TestLostNodeEndedSessionSealedFromStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newLostNodeCluster(t, "ended-sg")
	dsn, m, st, routes, key, pub, s := c.dsn, c.m, c.st, c.routes, c.key, c.pub, c.s
	const lostAfter = time.Second
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	if err := s.Heartbeat(ctx, "node-b", "127.0.0.1:2222", time.Now()); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	u := recording.NewUploader(spool, routes, log)
	r, rec, ch := recordOn(t, s, u, spool, key, "node-b")
	waitFor(t, 30*time.Second, "two chunks and their chain records in the store", func() bool {
		return len(m.Objects(t, "ended-sg", r.ID+"/chunks/")) >= 2 && m.LiveChainCovers(t, "ended-sg", r.ID) >= 2
	})
	u.Close() // what it had not shipped yet never is
	if err := ch.Stdout(bytes.Repeat([]byte("row 43 of the customer table\r\n"), 90000)); err != nil {
		t.Fatal(err)
	}
	seal := endRecording(t, rec, ch, spool, r.ID)
	if err := s.EndSession(ctx, r.ID, broker.SessionEnd{At: time.Now(), Reason: "client closed"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRecordingSeal(ctx, r.ID, recording.RegisterHead(seal.Head), seal.Chunks, seal.Complete); err != nil {
		t.Fatal(err)
	}

	waitLost(t, s, "node-b", lostAfter)
	if err := survivor(t, dsn, "node-a", lostAfter, routes, key).recoverLostNodes(ctx); err != nil {
		t.Fatal(err)
	}
	there, err := st.StoredSeal(ctx, r.ID)
	if err != nil {
		t.Fatalf("the recording of a session that ended on a lost node is not sealed in the store: %v", err)
	}
	if there.Complete || there.Chunks >= seal.Chunks || !strings.Contains(there.Reason, "node-b") {
		t.Errorf("store's seal: complete %v, %d chunks, reason %q; want incomplete, fewer than %d, naming node-b", there.Complete, there.Chunks, there.Reason, seal.Chunks)
	}
	if live := m.Objects(t, "ended-sg", r.ID+"/live/"); len(live) != 0 {
		t.Errorf("live objects left after sealing: %v", live)
	}
	got, err := s.Session(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.RecordingHead != recording.RegisterHead(seal.Head) || !got.RecordingComplete || got.EndReason != "client closed" {
		t.Errorf("register: head %.12s complete %v end %q; want the node's seal %.12s, complete, its end kept", got.RecordingHead, got.RecordingComplete, got.EndReason, seal.Head)
	}
	v := verifyStored(t, s, st, r.ID, pub)
	if v.OK || v.Complete || !v.Signed || len(v.Problems) != 1 || !strings.Contains(v.Problems[0].What, "differs from the one the register recorded") {
		t.Errorf("verify against the register: ok %v complete %v signed %v problems %v; want it failed on the register's seal only", v.OK, v.Complete, v.Signed, v.Problems)
	}
	// Another sweep, by another survivor, finds it sealed.
	if err := survivor(t, dsn, "node-c", lostAfter, routes, key).recoverLostNodes(ctx); err != nil {
		t.Fatal(err)
	}
	events, err := s.SearchAudit(ctx, broker.AuditFilter{Kinds: []string{"recording.unshipped"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Session != r.ID || !strings.Contains(events[0].Detail, `"registered_complete":true`) {
		t.Fatalf("recording.unshipped events: %+v; want one, of %s", events, r.ID)
	}
}
