package session

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
)

// moderators lets anyone but the technician (li) moderate.
type moderators struct{ Access }

func (moderators) MayModerate(m, t string, _ *broker.Target, _ broker.ModerationSpec) (bool, string) {
	return m != t, "a technician cannot moderate their own session"
}

func (moderators) ModerationWaiting(context.Context, broker.ModerationNotice) ([]string, []string) {
	return []string{"kenji"}, nil
}

// moderatedHarness serves a rule asking for one moderator with the grace
// given; its target reads each command's input and reports its end on
// eof.
func moderatedHarness(t *testing.T, grace time.Duration) (*harness, chan struct{}) {
	eof := make(chan struct{}, 4)
	d := &broker.Decision{Effect: broker.Allow, Login: "ops", Rule: "moderated",
		Moderation: &broker.ModerationSpec{From: []string{"approvers"}, Moderators: 1, Grace: grace}}
	h := newHarnessWith(t, d, func(c *Config) { c.Access = moderators{} }, func(ch ssh.Channel, r *ssh.Request) {
		replyAll(ch, r)
		if r.Type == "exec" {
			go func() { io.Copy(io.Discard, ch); eof <- struct{}{} }()
		}
	})
	return h, eof
}

// startModerated starts command on a new connection, seats kenji, and
// returns the channel once the session started.
func startModerated(t *testing.T, h *harness, command string) (ssh.Channel, *Moderator, *seat) {
	t.Helper()
	c := h.dial(t)
	t.Cleanup(func() { c.Close() })
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	go io.Copy(io.Discard, ch)
	go io.Copy(io.Discard, ch.Stderr())
	started := make(chan bool, 1)
	go func() {
		ok, _ := ch.SendRequest("exec", true, ssh.Marshal(stringRequest{command}))
		started <- ok
	}()
	var st *seat
	waitFor(t, "the session to wait for a moderator", func() bool {
		h.srv.seats.Range(func(_, v any) bool { st = v.(*seat); return false })
		return st != nil
	})
	m, err := h.srv.ModerateHere(st.id, "kenji", "test")
	if err != nil {
		t.Fatal(err)
	}
	if !<-started { // accepted at once, to wait with a word
		t.Fatalf("%s refused", command)
	}
	waitFor(t, "the session to start once watched", func() bool { return st.info().Started })
	return ch, m, st
}

// When the last moderator leaves, the input is held before Leave
// returns, not once a goroutine notices.
func TestInputHeldAtOnceWhenTheModeratorLeaves(t *testing.T) {
	h, _ := moderatedHarness(t, time.Minute)
	_, m, st := startModerated(t, h, "cat")
	if st.held.Load() {
		t.Fatal("input held while watched")
	}
	m.Leave()
	if !st.held.Load() {
		t.Errorf("input not held right after the last moderator left: %+v", st.info())
	}
	again, err := h.srv.ModerateHere(st.id, "kenji", "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.held.Load() {
		t.Error("input still held right after a moderator came back")
	}
	again.Leave()
}

// A transfer's bytes sent while the input is held wait; the session
// still ends when the grace period runs out, or when a moderator ends
// it while holding the input.
func TestHeldTransferEndsWithTheSession(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(m *Moderator)
		want string
	}{
		{"grace", func(m *Moderator) { m.Leave() }, "no moderator watched for 200ms"},
		{"ended while held", func(m *Moderator) {
			if err := m.Hold(true); err != nil {
				t.Fatal(err)
			}
		}, "ended by moderator kenji: wrong table"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := moderatedHarness(t, 200*time.Millisecond)
			ch, m, st := startModerated(t, h, "scp -t /tmp")
			c.end(m)
			waitFor(t, "the input to be held", st.held.Load)
			ch.Write([]byte("C0644 5 f\n"))
			if strings.HasPrefix(c.want, "ended") {
				if err := m.End("wrong table"); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the session to end", func() bool { return len(h.broker.endReasons()) == 1 })
			if got := h.broker.endReasons()[0]; !strings.Contains(got, c.want) {
				t.Errorf("ended with %q, want %q", got, c.want)
			}
		})
	}
}

// The end of the technician's input waits for the release too: a
// command reading it (read x; rm -rf …) does not go on meanwhile.
func TestEOFWaitsForTheRelease(t *testing.T) {
	h, eof := moderatedHarness(t, time.Minute)
	ch, m, _ := startModerated(t, h, "read x; rm -rf /data")
	if err := m.Hold(true); err != nil {
		t.Fatal(err)
	}
	ch.CloseWrite()
	select {
	case <-eof:
		t.Fatal("the technician's EOF reached the target while a moderator held the input")
	case <-time.After(500 * time.Millisecond): // a bounded look for what must not happen
	}
	if err := m.Hold(false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-eof:
	case <-time.After(10 * time.Second):
		t.Fatal("the EOF did not reach the target after the release")
	}
}

// A moderator who may no longer moderate (a reload, a lock) is refused
// an action.
func TestActionsRecheckTheModerator(t *testing.T) {
	h, _ := moderatedHarness(t, time.Minute)
	_, _, st := startModerated(t, h, "cat")
	m := h.srv.seat(st, "li", "test") // as if li had been allowed before a reload
	defer m.Leave()
	if err := m.Say("hello"); err == nil || !strings.Contains(err.Error(), "cannot moderate their own session") {
		t.Errorf("say by someone who may not moderate: %v", err)
	}
}

// What a moderator sends the technician is checked as every typed text
// is: nothing invisible that reorders or hides what the technician reads.
func TestModeratorTextIsChecked(t *testing.T) {
	h, _ := moderatedHarness(t, time.Minute)
	_, m, _ := startModerated(t, h, "cat")
	for text, want := range map[string]string{
		"   ":                          "give a line to send",
		"run \u202erm -rf /\u202c now": "U+202E",
		strings.Repeat("x", 501):       "too long",
	} {
		if err := m.Say(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("say %q: %v, want a refusal saying %q", text, err, want)
		}
	}
	if err := m.Say("check the backup first"); err != nil {
		t.Errorf("a plain line: %v", err)
	}
}
