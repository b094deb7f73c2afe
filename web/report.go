package web

import (
	"net/http"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// reportAnswer is the cross-border report of a period.
type reportAnswer struct {
	broker.CrossBorderReport
	FromDay, ToDay string `json:"-"` // the form's dates; To is inclusive
}

// maxReportPeriod bounds a report's period in the console: a year of
// sessions is read and rendered at once.
const maxReportPeriod = 366 * 24 * time.Hour

// reportPeriod reads from and to (dates, to inclusive) from the query;
// the default is the last 30 days up to today.
func (s *Server) reportPeriod(r *request) (from, to time.Time, fromDay, toDay string, err error) {
	now := s.now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	fromDay, toDay = r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if fromDay == "" {
		fromDay = today.AddDate(0, 0, -29).Format("2006-01-02")
	}
	if toDay == "" {
		toDay = today.Format("2006-01-02")
	}
	if from, err = day("from", fromDay); err != nil {
		return
	}
	if to, err = day("to", toDay); err != nil {
		return
	}
	to = to.AddDate(0, 0, 1)
	switch {
	case !from.Before(to):
		err = errorf(http.StatusBadRequest, "the period from %s to %s is empty: the start must not come after the end", fromDay, toDay)
	case to.Sub(from) > maxReportPeriod:
		err = errorf(http.StatusBadRequest, "the period from %s to %s is longer than a year: ask for a year at a time (sekisho report cross-border has no limit)", fromDay, toDay)
	}
	return
}

func (s *Server) crossBorder(w http.ResponseWriter, r *request) (any, error) {
	if !r.p.mayReview() {
		return nil, errorf(http.StatusForbidden, "reports are for reviewers and admins")
	}
	from, to, fromDay, toDay, err := s.reportPeriod(r)
	if err != nil {
		return nil, err
	}
	rep, err := broker.BuildCrossBorderReport(r.Context(), s.cfg.Store, s.cfg.Broker.Target, from, to, r.p.Residencies)
	if err != nil {
		return nil, err
	}
	if rep.Rows == nil {
		rep.Rows = []broker.CrossBorderRow{}
	}
	return reportAnswer{CrossBorderReport: rep, FromDay: fromDay, ToDay: toDay}, nil
}

// crossBorderCSV downloads the report as CSV.
func (s *Server) crossBorderCSV(w http.ResponseWriter, r *request) {
	a, err := s.crossBorder(w, r)
	if err != nil {
		s.fail(w, r, false, err)
		return
	}
	ra := a.(reportAnswer)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="sekisho-cross-border-`+ra.FromDay+`-to-`+ra.ToDay+`.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	s.audit(r.Context(), broker.EventWebReport, r.p.Name, "", broker.JSONDetail(map[string]any{"report": "cross-border", "from": ra.FromDay, "to": ra.ToDay, "rows": len(ra.Rows)}))
	if err := ra.WriteCSV(w); err != nil {
		s.log.Warn("web: report download failed", "err", err)
	}
}
