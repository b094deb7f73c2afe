package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// scoped returns f limited to p's residency scope.
func scoped(f broker.SessionFilter, p *person) broker.SessionFilter {
	if p.Residencies != nil {
		f.Residencies = p.Residencies
	}
	return f
}

// mayReview refuses a person who may not see sessions.
func mayReview(r *request) error {
	if !r.p.mayReview() {
		return errorf(http.StatusForbidden, "sessions and recordings are for reviewers and admins")
	}
	return nil
}

// visibleSession returns session id if p may do action on it. A session
// outside p's residency scope is not found, as one that does not exist:
// its existence is not revealed either; the broker audits why.
func (s *Server) visibleSession(r *request, id, action string) (broker.SessionRecord, error) {
	if err := mayReview(r); err != nil {
		return broker.SessionRecord{}, err
	}
	rec, err := s.cfg.Store.Session(r.Context(), id)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return broker.SessionRecord{}, &httpError{code: http.StatusNotFound, msg: "no session " + id}
	case err != nil:
		return broker.SessionRecord{}, err
	}
	if s.cfg.Broker.CheckScope(r.Context(), r.p.Name, action, "web", broker.SessionConcern(rec.ID, rec.Target, rec.Residency)) != nil {
		return broker.SessionRecord{}, &httpError{code: http.StatusNotFound, msg: "no session " + id, audited: true}
	}
	return rec, nil
}

// filterForm is the sessions list's filter, as the query string gives it.
type filterForm struct {
	Technician, Affiliate, Country, Target, Residency string
	CrossBorder, Files                                string // "", "yes", "no"
	From, To                                          string // dates, YYYY-MM-DD
	End, Q                                            string
	Page                                              int
}

// Query returns the filter as a query string, for paging links.
func (f filterForm) Query(page int) string {
	v := url.Values{}
	for k, x := range map[string]string{"technician": f.Technician, "affiliate": f.Affiliate, "country": f.Country,
		"target": f.Target, "residency": f.Residency, "cross_border": f.CrossBorder, "files": f.Files,
		"from": f.From, "to": f.To, "end": f.End, "q": f.Q} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	return v.Encode()
}

func yesNo(field, s string) (*bool, error) {
	switch s {
	case "":
		return nil, nil
	case "yes", "true":
		t := true
		return &t, nil
	case "no", "false":
		f := false
		return &f, nil
	}
	return nil, errorf(http.StatusBadRequest, "%s: %q is not yes or no", field, s)
}

func day(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, errorf(http.StatusBadRequest, "%s: %q is not a date such as 2026-11-26", field, s)
	}
	return t, nil
}

const pageSize = 50

// parseFilter reads the sessions filter from the query string.
func parseFilter(q url.Values) (filterForm, broker.SessionFilter, error) {
	ff := filterForm{Technician: q.Get("technician"), Affiliate: q.Get("affiliate"), Country: strings.ToUpper(q.Get("country")),
		Target: q.Get("target"), Residency: strings.ToUpper(q.Get("residency")), CrossBorder: q.Get("cross_border"),
		Files: q.Get("files"), From: q.Get("from"), To: q.Get("to"), End: q.Get("end"), Q: strings.TrimSpace(q.Get("q")), Page: 1}
	f := broker.SessionFilter{Technician: ff.Technician, Affiliate: ff.Affiliate, SourceCountry: ff.Country, Target: ff.Target,
		Residency: ff.Residency, EndReason: ff.End, Text: ff.Q, Limit: pageSize + 1}
	var err error
	if f.CrossBorder, err = yesNo("cross_border", ff.CrossBorder); err != nil {
		return ff, f, err
	}
	if f.HasFiles, err = yesNo("files", ff.Files); err != nil {
		return ff, f, err
	}
	if f.Since, err = day("from", ff.From); err != nil {
		return ff, f, err
	}
	if f.Until, err = day("to", ff.To); err != nil {
		return ff, f, err
	}
	if !f.Until.IsZero() {
		f.Until = f.Until.AddDate(0, 0, 1) // the whole day
	}
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 100000 {
			return ff, f, errorf(http.StatusBadRequest, "page: %q is not a page number", p)
		}
		ff.Page = n
	}
	f.Offset = (ff.Page - 1) * pageSize
	return ff, f, nil
}

// sessionRow is one session in a list.
type sessionRow struct {
	broker.SessionRecord
	Snippet string `json:"snippet,omitempty"`
}

// sessionsAnswer is the sessions list.
type sessionsAnswer struct {
	Filter   filterForm   `json:"-"`
	Sessions []sessionRow `json:"sessions"`
	More     bool         `json:"more"`
	Page     int          `json:"page"`
	Scope    string       `json:"scope"`
}

func (s *Server) sessionList(w http.ResponseWriter, r *request) (any, error) {
	if err := mayReview(r); err != nil {
		return nil, err
	}
	ff, f, err := parseFilter(r.URL.Query())
	if err != nil {
		return nil, err
	}
	list, err := s.cfg.Store.Sessions(r.Context(), scoped(f, r.p))
	if err != nil {
		return nil, err
	}
	a := sessionsAnswer{Filter: ff, Page: ff.Page, Scope: r.p.Scope(), Sessions: []sessionRow{}}
	if len(list) > pageSize {
		a.More, list = true, list[:pageSize]
	}
	var snippets map[string]string
	if f.Text != "" && len(list) > 0 {
		ids := make([]string, len(list))
		for i, x := range list {
			ids[i] = x.ID
		}
		if snippets, err = s.cfg.Store.TextSnippets(r.Context(), f.Text, ids); err != nil {
			return nil, err
		}
	}
	for _, x := range list {
		a.Sessions = append(a.Sessions, sessionRow{SessionRecord: x, Snippet: snippets[x.ID]})
	}
	if f.Text != "" {
		// What reviewers search recordings for is audited like what
		// they replay.
		s.audit(r.Context(), broker.EventWebSearch, r.p.Name, "", broker.JSONDetail(map[string]any{"query": f.Text, "sessions": len(a.Sessions), "scope": r.p.Scope()}))
	}
	return a, nil
}

// trace is a session's decision trace as the register keeps it.
type trace struct {
	Inputs json.RawMessage    `json:"inputs"`
	Rules  []broker.TraceStep `json:"rules"`
	Grant  *broker.Grant      `json:"grant,omitempty"`
}

// sessionAnswer is everything about one session.
type sessionAnswer struct {
	Session   broker.SessionRecord      `json:"session"`
	Data      []string                  `json:"data"`
	Trace     trace                     `json:"trace"`
	Inputs    string                    `json:"-"`
	Request   *broker.AccessRequest     `json:"request,omitempty"`
	Integrity integrity                 `json:"integrity"`
	Channels  []channelInfo             `json:"channels"`
	Channel   int                       `json:"-"`
	Timeline  []recording.TimelineEvent `json:"timeline"`
	CanKill   bool                      `json:"can_kill"`
	// CanModerate: the person may moderate the session, live on this node.
	CanModerate bool `json:"can_moderate"`
}

// Selected returns the channel shown in the player.
func (a sessionAnswer) Selected() channelInfo {
	for _, c := range a.Channels {
		if c.N == a.Channel {
			return c
		}
	}
	return channelInfo{}
}

// Events returns the timeline events of the selected channel.
func (a sessionAnswer) Events() []recording.TimelineEvent {
	var out []recording.TimelineEvent
	for _, e := range a.Timeline {
		if e.Channel == a.Channel {
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) sessionDetail(w http.ResponseWriter, r *request) (any, error) {
	rec, err := s.visibleSession(r, r.PathValue("id"), "view")
	if err != nil {
		return nil, err
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventWebView, Technician: r.p.Name, Target: rec.Target, Source: "web", Session: rec.ID})
	a := sessionAnswer{Session: rec, CanKill: r.p.Admin && !rec.Ended(), Channels: []channelInfo{}, Timeline: []recording.TimelineEvent{}}
	if !rec.Ended() {
		_, err := s.moderatedSession(r, rec.ID)
		a.CanModerate = err == nil
	}
	if tg, ok := s.cfg.Broker.Target(rec.Target); ok {
		a.Data = tg.Data
	}
	if rec.Trace != "" {
		if err := json.Unmarshal([]byte(rec.Trace), &a.Trace); err == nil {
			if b, err := json.MarshalIndent(a.Trace.Inputs, "", "  "); err == nil {
				a.Inputs = string(b)
			}
		}
	}
	if rec.Request != 0 {
		if req, err := s.cfg.Broker.Request(r.Context(), rec.Request); err == nil {
			a.Request = &req
		}
	}
	facts, err := s.recordingFacts(r.Context(), rec)
	if err != nil {
		return nil, err
	}
	a.Integrity, a.Channels, a.Timeline = facts.integrity, facts.channels, facts.timeline
	a.Channel = pickChannel(a.Channels, r.URL.Query().Get("channel"))
	return a, nil
}

// pickChannel returns the asked-for channel, or the first terminal one.
func pickChannel(chans []channelInfo, asked string) int {
	if n, err := strconv.Atoi(asked); err == nil && slices.ContainsFunc(chans, func(c channelInfo) bool { return c.N == n }) {
		return n
	}
	for _, c := range chans {
		if c.PTY {
			return c.N
		}
	}
	if len(chans) > 0 {
		return chans[0].N
	}
	return 0
}

// waitEnded waits until the register records session id as ended, for
// at most d: the page an admin comes back to after ending a session then
// shows it ended, with its reason.
func (s *Server) waitEnded(ctx context.Context, id string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if rec, err := s.cfg.Store.Session(ctx, id); err == nil && rec.Ended() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// live streams a live session's terminal to the player.
func (s *Server) live(w http.ResponseWriter, r *request) {
	rec, err := s.visibleSession(r, r.PathValue("id"), "watch")
	if err != nil {
		s.fail(w, r, true, err)
		return
	}
	watch, cols, rows, detail := s.liveSource(rec, r.p.Name)
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventSessionWatched, Technician: r.p.Name, Target: rec.Target, Source: "web", Session: rec.ID, Detail: detail})
	s.serveLive(w, r.Request, rec.ID, watch, cols, rows, func() bool {
		bs, ok, err := s.inForce(r.Context(), r.key)
		if err != nil {
			// Not known to be signed in: the view ends, the page
			// reconnects by itself.
			s.log.Warn("live view: the state store failed", "session", rec.ID, "err", err)
		}
		if !ok {
			return false
		}
		p, why, ok := s.checkSession(bs)
		if !ok || !p.mayReview() || !p.sees(rec.Residency) {
			if why == "" {
				why = "no longer a reviewer of " + rec.Residency
			}
			s.audit(context.Background(), broker.EventWebRefused, bs.Technician, rec.ID, "live view ended: "+why)
			return false
		}
		return true
	})
}

// kill ends a live session (admins), with a reason the technician sees.
func (s *Server) kill(w http.ResponseWriter, r *request) (any, error) {
	id := r.PathValue("id")
	rec, err := s.visibleSession(r, id, "kill")
	if err != nil {
		return nil, err
	}
	if !r.p.Admin {
		return nil, errorf(http.StatusForbidden, "only admins may end sessions")
	}
	why := strings.TrimSpace(r.PostFormValue("reason"))
	if why == "" {
		return nil, errorf(http.StatusBadRequest, "give a reason: the technician sees it")
	}
	if err := checkText("reason", why); err != nil {
		return nil, err
	}
	msg := "ended by " + r.p.Name + ": " + why
	if s.cfg.Live == nil || !s.cfg.Live.Kill(rec.ID, msg) {
		return nil, errorf(http.StatusConflict, "session %s is not live on this node (ended, or on another node)", rec.ID)
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventSessionKilled, Technician: r.p.Name, Target: rec.Target,
		Source: "web", Session: rec.ID, Detail: msg})
	ended := s.waitEnded(r.Context(), rec.ID, 3*time.Second)
	if wantsJSON(r) {
		return map[string]any{"session": rec.ID, "ended": ended}, nil
	}
	http.Redirect(w, r.Request, "/sessions/"+rec.ID, http.StatusSeeOther)
	return nil, nil
}
