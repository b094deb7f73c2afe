package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// Moderation seats moderators at the sessions of this node whose rules
// ask for them (session.Server). Every error it returns is a refusal,
// worded for the person refused.
type Moderation interface {
	// Moderated lists the sessions of this node that name may moderate.
	Moderated(name string) []broker.ModeratedSession
	// Moderate seats name at session id (audited), until Leave.
	Moderate(id, name string) (ModeratorSeat, error)
	// Seated is name's place at session id while they watch it.
	Seated(id, name string) (ModeratorSeat, error)
}

// ModeratorSeat is one moderator's place at a session.
type ModeratorSeat interface {
	Leave()
	Session() broker.ModeratedSession
	Say(text string) error
	Hold(hold bool) error
	End(reason string) error
	// Watch shows the session's terminal once it has started, from its
	// start, until it ends or ctx is done.
	Watch(ctx context.Context, w io.Writer, opt recording.WatchOptions) error
}

// moderatedSession returns the session id that the person may moderate
// on this node.
func (s *Server) moderatedSession(r *request, id string) (broker.ModeratedSession, error) {
	if s.cfg.Moderation != nil {
		for _, m := range s.cfg.Moderation.Moderated(r.p.Name) {
			if m.ID == id {
				return m, nil
			}
		}
	}
	return broker.ModeratedSession{}, errorf(http.StatusNotFound,
		"no session %s that you may moderate waits or runs on this node (it ended, another node serves it, or you may not moderate it)", id)
}

// moderateAnswer is the moderation page's data.
type moderateAnswer struct {
	Session broker.ModeratedSession `json:"session"`
}

// moderation shows a session the person may moderate: its page has the
// live view (which seats them) and the controls.
func (s *Server) moderation(w http.ResponseWriter, r *request) (any, error) {
	m, err := s.moderatedSession(r, r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return moderateAnswer{Session: m}, nil
}

// moderateLive seats the person as a moderator of the session for as
// long as its live view streams, and ends the stream once they may no
// longer moderate (a lock, a rule change, signed out).
func (s *Server) moderateLive(w http.ResponseWriter, r *request) {
	id := r.PathValue("id")
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		// Taking a seat starts the session: only the console's own page
		// may, not a link or a page of another site.
		s.fail(w, r, true, errorf(http.StatusForbidden, "a moderator's seat is taken from the console's moderation page"))
		return
	}
	if s.cfg.Moderation == nil {
		s.fail(w, r, true, errorf(http.StatusNotFound, "this node has no moderated sessions"))
		return
	}
	seat, err := s.cfg.Moderation.Moderate(id, r.p.Name)
	if err != nil {
		writeJSONError(w, http.StatusForbidden, err.Error()) // audited by Moderate
		return
	}
	defer seat.Leave()
	watch := func(ctx context.Context, out io.Writer, opt recording.WatchOptions) error {
		if opt.Resize != nil {
			// The stream begins now: the session may wait for more
			// moderators.
			if err := opt.Resize(80, 24); err != nil {
				return err
			}
		}
		if m := seat.Session(); !m.Started {
			fmt.Fprintf(out, "[sekisho: you watch; the session starts once %d moderator(s) do]\r\n", m.Needed)
		}
		return seat.Watch(ctx, out, opt)
	}
	s.serveLive(w, r.Request, id, watch, 80, 24, func() bool {
		bs, ok, err := s.inForce(r.Context(), r.key)
		if err != nil {
			s.log.Warn("moderation: the state store failed", "session", id, "err", err)
		}
		if !ok {
			return false
		}
		if _, why, ok := s.checkSession(bs); !ok {
			s.audit(context.Background(), broker.EventWebRefused, bs.Technician, id, "moderation ended: "+why)
			return false
		}
		// Whether they may still moderate is checked where the seat is,
		// every second, by the seat's own watch.
		return true
	})
}

// moderate carries out a seated moderator's control: say (text), hold,
// release, end (reason).
func (s *Server) moderate(w http.ResponseWriter, r *request) (any, error) {
	id := r.PathValue("id")
	if s.cfg.Moderation == nil {
		return nil, errorf(http.StatusNotFound, "this node has no moderated sessions")
	}
	seat, err := s.cfg.Moderation.Seated(id, r.p.Name)
	if err != nil {
		return nil, errorf(http.StatusConflict, "%s", err)
	}
	var done string
	switch verb := r.PathValue("verb"); verb {
	case "say":
		err, done = seat.Say(r.PostFormValue("text")), "sent"
	case "hold":
		err, done = seat.Hold(true), "the technician's input is held"
	case "release":
		err, done = seat.Hold(false), "the technician's input goes through"
	case "end":
		err, done = seat.End(r.PostFormValue("reason")), "the session is ended"
	default:
		return nil, errorf(http.StatusNotFound, "%q is not a moderator's action: say, hold, release or end", verb)
	}
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, err
		}
		return nil, errorf(http.StatusConflict, "%s", strings.TrimSpace(err.Error())) // refused, and audited
	}
	if wantsJSON(r) {
		return map[string]any{"done": done, "session": seat.Session()}, nil
	}
	http.Redirect(w, r.Request, "/sessions/"+id+"/moderate", http.StatusSeeOther)
	return nil, nil
}

// moderationState is the session's moderation now, for the page to
// follow.
func (s *Server) moderationState(w http.ResponseWriter, r *request) (any, error) {
	m, err := s.moderatedSession(r, r.PathValue("id"))
	var he *httpError
	if errors.As(err, &he) && r.Header.Get("X-Sekisho-Poll") != "" {
		// The page following a session that ended: not a refusal.
		he.audited = true
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
