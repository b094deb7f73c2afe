package web

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/sekisho/sekisho/broker"
)

// checkText applies broker.CheckText, the rule for text people type, and
// answers its refusal as a 400: the input was wrong.
func checkText(what, text string) error {
	if _, err := broker.CheckText(what, text); err != nil {
		var rf *broker.Refusal
		if errors.As(err, &rf) {
			return &httpError{code: http.StatusBadRequest, msg: rf.Msg}
		}
		return err
	}
	return nil
}

// requestRow is one access request with what the viewer may do with it.
type requestRow struct {
	broker.AccessRequest
	Status    string   `json:"status"`
	Approvers []string `json:"approvers,omitempty"`
	MayDecide bool     `json:"may_decide"`
	// MayApprove is MayDecide less those whose approver role the
	// identity provider's groups withheld at sign-in: they may still
	// deny as admins.
	MayApprove bool `json:"may_approve"`
}

// requestsAnswer lists pending and recent requests.
type requestsAnswer struct {
	Pending []requestRow `json:"pending"`
	Recent  []requestRow `json:"recent"`
}

func (s *Server) requestList(w http.ResponseWriter, r *request) (any, error) {
	all, err := s.cfg.Broker.Requests(r.Context(), broker.RequestFilter{Limit: 200, Viewer: r.p.Name})
	if err != nil {
		return nil, err
	}
	a := requestsAnswer{Pending: []requestRow{}, Recent: []requestRow{}}
	now := s.now()
	for _, req := range all {
		if !s.requestVisible(r.p, &req) {
			continue
		}
		row := requestRow{AccessRequest: req, Status: req.Status(now)}
		if req.State == broker.RequestPending && now.Before(req.Expires) {
			row.Approvers = s.cfg.Broker.Approvers(&req)
			row.MayDecide = req.Technician != r.p.Name && (r.p.Admin || containsName(row.Approvers, r.p.Name)) && !req.ApprovedBy(r.p.Name)
			row.MayApprove = row.MayDecide && !s.approverWithheld(r.p)
			a.Pending = append(a.Pending, row)
			continue
		}
		if len(a.Recent) < 50 {
			a.Recent = append(a.Recent, row)
		}
	}
	return a, nil
}

// requestVisible reports whether p sees request req, one within their
// scope (the broker lists only those): admins and reviewers see every
// request, an approver the requests they may decide or decided.
func (s *Server) requestVisible(p *person, req *broker.AccessRequest) bool {
	if p.Admin || p.Reviewer {
		return true
	}
	if req.ApprovedBy(p.Name) || req.DecidedBy == p.Name {
		return true
	}
	return req.State == broker.RequestPending && containsName(s.cfg.Broker.Approvers(req), p.Name)
}

// approverWithheld reports whether p is an approver by the config but
// not in this browser session, whose sign-in the identity provider's
// groups did not give that role.
func (s *Server) approverWithheld(p *person) bool {
	return !p.Approver && s.cfg.Broker.IsApprover(p.Name)
}

func containsName(list []string, name string) bool {
	for _, x := range list {
		if x == name {
			return true
		}
	}
	return false
}

// decide approves or denies a request, by the same rules as the SSH
// commands: the broker refuses self-approval, approvers outside the
// rule's groups or affiliate or outside their scope (review_residency),
// and decisions on requests no longer pending, and audits every refusal.
func (s *Server) decide(w http.ResponseWriter, r *request) (any, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return nil, errorf(http.StatusNotFound, "no request %q", r.PathValue("id"))
	}
	if !r.p.Approver && !r.p.Admin {
		return nil, errorf(http.StatusForbidden, "only approvers and admins decide access requests")
	}
	comment := strings.TrimSpace(r.PostFormValue("comment"))
	var req broker.AccessRequest
	switch r.PathValue("verb") {
	case "approve":
		if s.approverWithheld(r.p) {
			return nil, errorf(http.StatusForbidden, "your identity provider's groups did not make you an approver in this console when you signed in; ask to be added to an approver group and sign in again")
		}
		if comment != "" {
			if err := checkText("comment", comment); err != nil {
				return nil, err
			}
		}
		req, err = s.cfg.Broker.Approve(r.Context(), r.p.Name, id, comment)
	case "deny":
		if err := checkText("a reason for the denial", comment); err != nil {
			return nil, err
		}
		if !r.p.Admin && s.cfg.Broker.IsAdmin(r.p.Name) {
			// The broker lets an admin deny any request; one whose admin
			// role the identity provider withheld is an approver here,
			// and denies only what the rule lets them decide.
			pending, perr := s.cfg.Store.Request(r.Context(), id)
			if perr == nil && !containsName(s.cfg.Broker.Approvers(&pending), r.p.Name) {
				return nil, errorf(http.StatusForbidden, "your identity provider's groups did not make you an admin in this console when you signed in, and this request's rule does not let you decide it")
			}
		}
		req, err = s.cfg.Broker.Deny(r.Context(), r.p.Name, id, comment)
	default:
		return nil, errorf(http.StatusNotFound, "no action %q: approve or deny", r.PathValue("verb"))
	}
	var rf *broker.Refusal
	if errors.As(err, &rf) {
		// The broker has audited the refusal.
		if wantsJSON(r) {
			writeJSONError(w, http.StatusForbidden, rf.Msg)
			return nil, nil
		}
		w.WriteHeader(http.StatusForbidden)
		s.renderCSRF(w, r.Request, "error.html", r.p, r.csrf, map[string]any{"Code": http.StatusForbidden, "Message": rf.Msg})
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if wantsJSON(r) {
		return requestRow{AccessRequest: req, Status: req.Status(s.now())}, nil
	}
	http.Redirect(w, r.Request, "/requests", http.StatusSeeOther)
	return nil, nil
}
