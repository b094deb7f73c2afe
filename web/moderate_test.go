package web_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
	"github.com/sekisho/sekisho/web"
)

const moderated = "5a7c1e2d-0b4f-4d1e-9c3a-2e8f6d4b1a03"

// moderation has one session waiting for moderators, which kenji may
// moderate and whose input a moderator already holds.
type moderation struct{ seated atomic.Int32 }

func (m *moderation) Moderated(name string) []broker.ModeratedSession {
	if name != "kenji" {
		return nil
	}
	return []broker.ModeratedSession{{ID: moderated, Technician: "li", Target: "db-jp-01", Rule: "pii", Needed: 1}}
}

func (m *moderation) Moderate(id, name string) (web.ModeratorSeat, error) {
	m.seated.Add(1)
	return seat{}, nil
}

func (m *moderation) Seated(id, name string) (web.ModeratorSeat, error) {
	if id != moderated {
		return nil, errors.New("not moderated on this node")
	}
	return seat{}, nil
}

type seat struct{}

func (seat) Leave()                           {}
func (seat) Session() broker.ModeratedSession { return broker.ModeratedSession{ID: moderated} }
func (seat) Say(string) error                 { return nil }
func (seat) Hold(bool) error                  { return errors.New("the input is already held by aya") }
func (seat) End(string) error                 { return nil }
func (seat) Watch(context.Context, io.Writer, recording.WatchOptions) error {
	return nil
}

// A seat, which starts the session, is taken only from the console's own
// page; a refused action is answered 409 and audited; the page's poll of
// a session that has ended is not a refusal, a look at one you may not
// moderate is.
func TestModerationSeatAndActions(t *testing.T) {
	mod := &moderation{}
	f := newFixtureWith(t, "", func(c *web.Config) { c.Moderation = mod })
	b := f.signIn(t, "kenji")

	if resp, _ := b.do("GET", "/api/sessions/"+moderated+"/moderate/live", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}); resp.StatusCode != http.StatusForbidden || mod.seated.Load() != 0 {
		t.Errorf("a seat from another site: HTTP %d, %d seats taken; want 403 and none", resp.StatusCode, mod.seated.Load())
	}
	if resp, _ := b.do("GET", "/api/sessions/"+moderated+"/moderate/live", nil, map[string]string{"Sec-Fetch-Site": "same-origin"}); resp.StatusCode != http.StatusOK || mod.seated.Load() != 1 {
		t.Errorf("a seat from the console's page: HTTP %d, %d seats taken; want 200 and one", resp.StatusCode, mod.seated.Load())
	}

	resp, body := b.do("POST", "/api/sessions/"+moderated+"/moderate/hold", url.Values{}, map[string]string{"X-CSRF-Token": b.csrf})
	if resp.StatusCode != http.StatusConflict || !audited(t, f.store, broker.EventWebRefused, "the input is already held by aya") {
		t.Errorf("a refused hold: HTTP %d %s; want 409, audited", resp.StatusCode, body)
	}
	if resp, _ := b.do("POST", "/api/sessions/"+moderated+"/moderate/say", url.Values{"text": {"hello"}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an action without the CSRF token: HTTP %d, want 403", resp.StatusCode)
	}

	const ended = "9d3e2f1a-4b5c-4d6e-8f7a-1b2c3d4e5f06"
	if resp, _ := b.do("GET", "/api/sessions/"+ended+"/moderate", nil, map[string]string{"X-Sekisho-Poll": "1"}); resp.StatusCode != http.StatusNotFound || audited(t, f.store, broker.EventWebRefused, ended) {
		t.Errorf("the page's poll of an ended session: HTTP %d, audited %v; want 404, not audited", resp.StatusCode, audited(t, f.store, broker.EventWebRefused, ended))
	}
	if resp, _ := b.do("GET", "/api/sessions/"+ended+"/moderate", nil, nil); resp.StatusCode != http.StatusNotFound || !audited(t, f.store, broker.EventWebRefused, ended) {
		t.Errorf("a look at a session kenji may not moderate: HTTP %d; want 404, audited", resp.StatusCode)
	}
}
