package node

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// A recording directory whose write hangs (a stalled mount) costs one
// probe, not one per round: the rounds meanwhile say it does not answer,
// and the node is not ready.
func TestReadyRoundsDoNotPileUpOnAHungDisk(t *testing.T) {
	release := make(chan struct{})
	var probes atomic.Int32
	h := &health{node: "n", vault: func(context.Context) error { return nil }, store: func(context.Context) error { return nil },
		recDir: func() error { probes.Add(1); <-release; return nil }, standing: func() bool { return false },
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first := h.check(context.Background())
	if first.ready() || first.Checks[checkRecordings] != "no answer in "+readyTimeout.String() {
		t.Fatalf("first round with the disk hung: %+v", first)
	}
	h.lastAt = time.Time{} // the next round now, not in a second
	second := h.check(context.Background())
	if second.ready() || second.Checks[checkRecordings] != "no answer from the last probe yet" {
		t.Fatalf("second round with the disk hung: %+v", second)
	}
	if n := probes.Load(); n != 1 {
		t.Errorf("%d write probes of the hung disk, want 1", n)
	}
	close(release)
	waitFor(t, 10*time.Second, "the hung probe to return", func() bool { return !h.recBusy.Load() })
	h.lastAt = time.Time{}
	if r := h.check(context.Background()); !r.ready() {
		t.Errorf("once the disk answers: %+v", r)
	}
}
