package pgstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/pgtest"
)

// A node back after a survivor took its session over (frozen, cut off)
// cannot overwrite the survivor's "node lost" end or its seal, which is
// the one in the object store.
func TestTakenOverSessionKeepsTheSurvivorsEndAndSeal(t *testing.T) {
	ctx := context.Background()
	s := open(t, pgtest.NewDatabase(t))
	at := time.Now().UTC().Truncate(time.Microsecond)
	if err := s.Heartbeat(ctx, "n1", "", at); err != nil {
		t.Fatal(err)
	}
	if err := s.StartSession(ctx, &broker.SessionRecord{ID: "s1", Node: "n1", StartedAt: at, Recording: "s1"}); err != nil {
		t.Fatal(err)
	}
	// Taken for lost at once.
	var claimed []broker.SessionRecord
	deadline := time.Now().Add(10 * time.Second)
	for len(claimed) == 0 && time.Now().Before(deadline) {
		var err error
		if claimed, err = s.ClaimLostSessions(ctx, time.Microsecond, broker.EndNodeLost); err != nil {
			t.Fatal(err)
		}
	}
	if len(claimed) != 1 {
		t.Fatalf("claimed %d sessions, want s1", len(claimed))
	}
	if err := s.SetRecordingSeal(ctx, "s1", "survivor-head", 3, false); err != nil {
		t.Fatalf("the survivor's seal: %v", err)
	}

	// The node comes back and says otherwise.
	if err := s.EndSession(ctx, "s1", broker.SessionEnd{At: at.Add(time.Hour), Reason: "client closed"}); !errors.Is(err, broker.ErrTakenOver) {
		t.Errorf("the node's end of a session taken over: %v, want ErrTakenOver", err)
	}
	if err := s.SetRecordingSeal(ctx, "s1", "node-head", 9, true); !errors.Is(err, broker.ErrTakenOver) {
		t.Errorf("the node's seal of a session taken over: %v, want ErrTakenOver", err)
	}
	r, err := s.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if r.EndReason != broker.EndNodeLost || r.RecordingHead != "survivor-head" || r.RecordingChunks != 3 || r.RecordingComplete {
		t.Errorf("after the node came back: %q, head %q, %d chunks, complete %v; want the survivor's", r.EndReason, r.RecordingHead, r.RecordingChunks, r.RecordingComplete)
	}
	// The same seal again is no change, and an unknown session is not found.
	if err := s.SetRecordingSeal(ctx, "s1", "survivor-head", 3, false); err != nil {
		t.Errorf("the survivor's seal again: %v", err)
	}
	if err := s.EndSession(ctx, "nope", broker.SessionEnd{At: at}); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("an unknown session: %v", err)
	}
}
