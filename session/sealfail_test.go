package session

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestSealFailureIsRegisteredAsRecordingFailed: when a recording cannot be
// sealed as its session ends (the disk filled up at that moment), the
// register says "recording failed", which lets the next start seal it
// as incomplete; otherwise the missing seal would read as a seal removed.
func TestSealFailureIsRegisteredAsRecordingFailed(t *testing.T) {
	h := newHarness(t, replyAll)
	c := h.dial(t)
	// Channels are served once the session has started: its recording
	// exists.
	if _, err := c.NewSession(); err != nil {
		t.Fatal(err)
	}
	var dir string
	waitFor(t, "the recording to be created", func() bool {
		ents, _ := os.ReadDir(h.recDir)
		if len(ents) == 1 {
			dir = filepath.Join(h.recDir, ents[0].Name())
			return true
		}
		return false
	})
	// The recording's files go away before the seal can be written.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "the session to end", func() bool { return len(h.broker.endReasons()) == 1 })
	if got := h.broker.endReasons()[0]; got != EndRecordingFailed {
		t.Fatalf("end reason %q after the seal failed; want %q", got, EndRecordingFailed)
	}
	hardening.Report(t, "disk", "the seal cannot be written as a session ends: registered as %q, so the next start seals the recording incomplete", EndRecordingFailed)
}
