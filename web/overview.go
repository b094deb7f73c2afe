package web

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sekisho/sekisho/broker"
)

// overviewAnswer is the overview: live sessions, pending requests, and the
// cross-border sessions of the last 30 days.
type overviewAnswer struct {
	Live    []broker.SessionRecord `json:"live"`
	Pending []requestRow           `json:"pending"`
	Daily   []broker.DailyCount    `json:"cross_border_daily"`
	Chart   *chart                 `json:"-"`
	Scope   string                 `json:"scope"`
	// Moderation are the sessions of this node the person may moderate.
	Moderation []broker.ModeratedSession `json:"moderation"`
}

// chartDays is how far back the overview's chart goes.
const chartDays = 30

func (s *Server) overview(w http.ResponseWriter, r *request) (any, error) {
	return s.overviewOf(w, r, true)
}

// overviewLive is the overview's live sessions and pending requests,
// which its page refreshes every few seconds, without the chart.
func (s *Server) overviewLive(w http.ResponseWriter, r *request) (any, error) {
	return s.overviewOf(w, r, false)
}

func (s *Server) overviewOf(w http.ResponseWriter, r *request, withChart bool) (any, error) {
	a := overviewAnswer{Live: []broker.SessionRecord{}, Pending: []requestRow{}, Daily: []broker.DailyCount{}, Scope: r.p.Scope(),
		Moderation: []broker.ModeratedSession{}}
	if s.cfg.Moderation != nil {
		if m := s.cfg.Moderation.Moderated(r.p.Name); m != nil {
			a.Moderation = m
		}
	}
	if r.p.Approver || r.p.Admin || r.p.Reviewer {
		rl, err := s.requestList(w, r)
		if err != nil {
			return nil, err
		}
		a.Pending = rl.(requestsAnswer).Pending
	}
	if !r.p.mayReview() {
		return a, nil
	}
	live, err := s.cfg.Store.Sessions(r.Context(), scoped(broker.SessionFilter{Live: true, Limit: 500}, r.p))
	if err != nil {
		return nil, err
	}
	if live != nil {
		a.Live = live
	}
	if !withChart {
		return a, nil
	}
	now := s.now().UTC()
	to := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
	from := to.AddDate(0, 0, -chartDays)
	rep, err := broker.BuildCrossBorderReport(r.Context(), s.cfg.Store, s.cfg.Broker.Target, from, to, r.p.Residencies)
	if err != nil {
		return nil, err
	}
	a.Daily = rep.Daily()
	a.Chart = newChart(a.Daily, from, chartDays)
	return a, nil
}

// me answers who is signed in, with which roles and scope.
func (s *Server) me(w http.ResponseWriter, r *request) (any, error) {
	return map[string]any{"technician": r.p.Name, "admin": r.p.Admin, "approver": r.p.Approver, "reviewer": r.p.Reviewer,
		"residencies": r.p.Residencies, "csrf_token": r.csrf, "via": r.p.via()}, nil
}

// chart is a stacked bar chart of cross-border sessions per day, one
// colour per affiliate and residency, drawn as SVG on the server: no
// script, and nothing from the data is markup.
type chart struct {
	Width, Height int
	Bars          []bar
	Ticks         []tick
	Legend        []legendItem
	Max           int
	Total         int
}

type bar struct {
	X, Y, W, H int
	Fill       string
	Title      string
}

type tick struct {
	X, Y  int
	Label string
}

type legendItem struct {
	Fill, Label string
}

var palette = []string{"#c0392b", "#2471a3", "#d68910", "#229954", "#7d3c98", "#17a589", "#ba4a00", "#5d6d7e"}

func newChart(daily []broker.DailyCount, from time.Time, days int) *chart {
	const (
		w, h       = 900, 220
		left, foot = 40, 30
		top        = 10
	)
	c := &chart{Width: w, Height: h}
	type series struct{ affiliate, residency string }
	var keys []series
	perDay := map[int]map[series]int{}
	for _, d := range daily {
		k := series{d.Affiliate, d.Residency}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		i := int(d.Day.Sub(from).Hours() / 24)
		if i < 0 || i >= days {
			continue
		}
		if perDay[i] == nil {
			perDay[i] = map[series]int{}
		}
		perDay[i][k] += d.Sessions
		c.Total += d.Sessions
	}
	slices.SortFunc(keys, func(a, b series) int {
		return strings.Compare(a.affiliate+"\x00"+a.residency, b.affiliate+"\x00"+b.residency)
	})
	colour := map[series]string{}
	for i, k := range keys {
		colour[k] = palette[i%len(palette)]
		c.Legend = append(c.Legend, legendItem{Fill: colour[k], Label: k.affiliate + " → " + k.residency})
	}
	for _, m := range perDay {
		n := 0
		for _, v := range m {
			n += v
		}
		c.Max = max(c.Max, n)
	}
	if c.Max == 0 {
		c.Max = 1
	}
	plotH := h - top - foot
	slot := (w - left) / days
	for i := range days {
		x := left + i*slot
		y := h - foot
		for _, k := range keys {
			n := perDay[i][k]
			if n == 0 {
				continue
			}
			bh := n * plotH / c.Max
			y -= bh
			c.Bars = append(c.Bars, bar{X: x + 2, Y: y, W: slot - 4, H: bh, Fill: colour[k],
				Title: fmt.Sprintf("%s: %d from %s to %s", from.AddDate(0, 0, i).Format("2006-01-02"), n, k.affiliate, k.residency)})
		}
		if i%5 == 0 || i == days-1 {
			c.Ticks = append(c.Ticks, tick{X: x + slot/2, Y: h - 10, Label: from.AddDate(0, 0, i).Format("01-02")})
		}
	}
	return c
}
