package web

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// locksAnswer lists the locks in force, and what may be locked.
type locksAnswer struct {
	Locks       []lockRow `json:"locks"`
	Affiliates  []string  `json:"affiliates"`
	Technicians []string  `json:"technicians"`
	Targets     []string  `json:"targets"`
}

// lockRow is a lock with whether the viewer may remove it.
type lockRow struct {
	broker.Lock
	MayRemove bool `json:"may_remove"`
}

func (s *Server) lockList(w http.ResponseWriter, r *request) (any, error) {
	if !r.p.mayReview() {
		return nil, errorf(http.StatusForbidden, "locks are for reviewers and admins")
	}
	locks, err := s.cfg.Store.Locks(r.Context(), s.now())
	if err != nil {
		return nil, err
	}
	// A person limited to residencies does not see the locks of targets
	// outside them; locks on affiliates and technicians stop them on
	// every target and are shown to everyone, but only an admin whose
	// scope is every residency adds or removes them. The directory is
	// what the admin may lock.
	a := locksAnswer{Locks: []lockRow{}, Affiliates: []string{}, Technicians: []string{}, Targets: []string{}}
	for _, l := range locks {
		in := r.p.sees(s.cfg.Broker.LockConcern(l.Kind, l.Name).Residency)
		if l.Kind == broker.LockTarget && !in {
			continue
		}
		a.Locks = append(a.Locks, lockRow{Lock: l, MayRemove: r.p.Admin && in})
	}
	if r.p.Admin {
		affiliates, technicians, targets := s.cfg.Broker.Directory()
		if r.p.sees("") {
			a.Affiliates, a.Technicians = affiliates, technicians
		}
		for _, name := range targets {
			if r.p.sees(s.cfg.Broker.LockConcern(broker.LockTarget, name).Residency) {
				a.Targets = append(a.Targets, name)
			}
		}
	}
	return a, nil
}

// addLock stops an affiliate, a technician or a target (admins). Running
// servers on the same state store pick it up within a second, as they do
// a lock from `sekisho lock`: new sessions are refused, live ones end,
// and the technicians see the reason.
func (s *Server) addLock(w http.ResponseWriter, r *request) (any, error) {
	if !r.p.Admin {
		return nil, errorf(http.StatusForbidden, "only admins may lock")
	}
	kind, name := r.PostFormValue("kind"), strings.TrimSpace(r.PostFormValue("name"))
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	affiliates, technicians, targets := s.cfg.Broker.Directory()
	var known []string
	switch kind {
	case broker.LockAffiliate:
		known = affiliates
	case broker.LockTechnician:
		known = technicians
	case broker.LockTarget:
		known = targets
	default:
		return nil, errorf(http.StatusBadRequest, "kind: %q is not affiliate, technician or target", kind)
	}
	if !slices.Contains(known, name) {
		return nil, errorf(http.StatusBadRequest, "no %s called %q is configured", kind, name)
	}
	if err := checkText("reason (the technicians whose sessions end see it)", reason); err != nil {
		return nil, err
	}
	if err := s.checkScope(r, "lock", s.cfg.Broker.LockConcern(kind, name)); err != nil {
		return nil, err
	}
	l := broker.Lock{Kind: kind, Name: name, Reason: reason, By: r.p.Name, Created: s.now().UTC()}
	if d := strings.TrimSpace(r.PostFormValue("for")); d != "" {
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return nil, errorf(http.StatusBadRequest, "for: %q is not a positive duration such as 2h or 30m", d)
		}
		l.Expires = l.Created.Add(dur)
	}
	l, err := s.cfg.Store.AddLock(r.Context(), l)
	if err != nil {
		return nil, err
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventLockAdded, Technician: r.p.Name, Source: "web", Detail: broker.JSONDetail(l)})
	if wantsJSON(r) {
		return l, nil
	}
	http.Redirect(w, r.Request, "/locks", http.StatusSeeOther)
	return nil, nil
}

// removeLock lifts a lock (admins).
func (s *Server) removeLock(w http.ResponseWriter, r *request) (any, error) {
	if !r.p.Admin {
		return nil, errorf(http.StatusForbidden, "only admins may remove locks")
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, errorf(http.StatusNotFound, "no lock %q", r.PathValue("id"))
	}
	// DELETE has no form body in Go: its reason comes in the query.
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if r.Method == http.MethodDelete {
		reason = strings.TrimSpace(r.URL.Query().Get("reason"))
	}
	if err := checkText("reason", reason); err != nil {
		return nil, err
	}
	locks, err := s.cfg.Store.Locks(r.Context(), s.now())
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(locks, func(l broker.Lock) bool { return l.ID == id })
	if i < 0 {
		return nil, errorf(http.StatusNotFound, "no lock %d in force", id)
	}
	if err := s.checkScope(r, "unlock", s.cfg.Broker.LockConcern(locks[i].Kind, locks[i].Name)); err != nil {
		return nil, err
	}
	if err := s.cfg.Store.RemoveLock(r.Context(), id); errors.Is(err, broker.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "no lock %d in force", id)
	} else if err != nil {
		return nil, err
	}
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventLockRemoved, Technician: r.p.Name, Source: "web",
		Detail: broker.JSONDetail(map[string]any{"id": id, "reason": reason})})
	if wantsJSON(r) {
		return map[string]any{"id": id, "removed": true}, nil
	}
	http.Redirect(w, r.Request, "/locks", http.StatusSeeOther)
	return nil, nil
}

// checkScope refuses, as the broker's scope check says (and audits), an
// action outside the person's scope: 403 with why.
func (s *Server) checkScope(r *request, action string, c broker.Concern) error {
	err := s.cfg.Broker.CheckScope(r.Context(), r.p.Name, action, "web", c)
	var rf *broker.Refusal
	if errors.As(err, &rf) {
		return &httpError{code: http.StatusForbidden, msg: rf.Msg, audited: true}
	}
	return err
}
