package recording

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// endedSession records a sealed session that ended at end and returns
// its ID and directory.
func endedSession(t *testing.T, root string, end time.Time) (id, dir string) {
	t.Helper()
	id = uuid.NewString()
	s, err := Create(root, Meta{ID: id, Technician: "alice", Target: "web1", Start: end.Add(-time.Minute)})
	must(t, err)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("$ exit\r\n")))
	must(t, c.Close())
	must(t, s.End(end, "client closed", 0, 0))
	return id, s.Dir()
}

// setMetaID rewrites the ID in the session.json of dir, as someone who
// can write the spool could.
func setMetaID(t *testing.T, dir, id string) {
	t.Helper()
	m, err := readMetaFile(dir)
	must(t, err)
	m.ID = id
	b, err := json.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600))
}

// Holds and deletion go by the directory's name; a session.json naming
// another session keeps the recording and is reported.
func TestExpireLocal(t *testing.T) {
	root := t.TempDir()
	end := time.Now().Add(-48 * time.Hour)
	expired, expiredDir := endedSession(t, root, end)
	held, heldDir := endedSession(t, root, end)
	renamed, renamedDir := endedSession(t, root, end)   // held, its session.json names another
	borrowed, borrowedDir := endedSession(t, root, end) // not held, its session.json names a held one
	_, recentDir := endedSession(t, root, time.Now())
	setMetaID(t, renamedDir, uuid.NewString())
	setMetaID(t, borrowedDir, held)

	p := RetentionPolicy{
		For:  func(string) time.Duration { return 24 * time.Hour },
		Held: func(id string) bool { return id == held || id == renamed },
	}
	deleted, errs := ExpireLocal(root, p, time.Now())

	if len(deleted) != 1 || deleted[0].ID != expired {
		t.Errorf("deleted %v, want only %s", deleted, expired)
	}
	for _, tc := range []struct {
		name, dir string
		kept      bool
	}{
		{"expired", expiredDir, false},
		{"held", heldDir, true},
		{"held, session.json naming another", renamedDir, true},
		{"session.json naming a held one", borrowedDir, true},
		{"recent", recentDir, true},
	} {
		_, err := os.Stat(tc.dir)
		if kept := err == nil; kept != tc.kept {
			t.Errorf("%s: kept = %v, want %v (%v)", tc.name, kept, tc.kept, err)
		}
	}
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	for _, id := range []string{renamed, borrowed} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, id) && strings.Contains(m, "tampered") }) {
			t.Errorf("no error names %s as possibly tampered with: %q", id, msgs)
		}
	}
	if len(errs) != 2 {
		t.Errorf("errors %q, want two", msgs)
	}
}
