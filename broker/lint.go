package broker

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Finding is one warning about a rule set.
type Finding struct {
	Rule    string `json:"rule,omitempty"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	if f.Rule == "" {
		return f.Message
	}
	return "rule " + f.Rule + ": " + f.Message
}

// scenario is one request the linter tries.
type scenario struct {
	req  Request
	desc string
}

// lintHours are the local hours (in each target's zone) at which rules are
// tried, on every day of a week, so that conditions on now are exercised.
var lintHours = []int{0, 3, 6, 8, 9, 10, 12, 13, 15, 17, 18, 20, 22}

// scenarios returns, for every technician and target, requests from the
// affiliate's country, from the target's residency and from an unknown
// place, at several hours.
func scenarios(techs []*Technician, targets []*Target, networks []*Network) []scenario {
	var out []scenario
	var days []time.Time
	for d := 0; d < 7; d++ {
		days = append(days, time.Date(2026, 11, 30+d, 0, 0, 0, 0, time.UTC)) // Monday to Sunday
	}
	type place struct{ country, network string }
	for _, tech := range techs {
		for _, tg := range targets {
			loc := time.UTC
			if l, err := time.LoadLocation(tg.Zone); err == nil && tg.Zone != "" {
				loc = l
			}
			places := []place{{tech.Affiliate.Country, ""}, {tg.Residency, ""}, {"", ""}}
			for _, n := range networks {
				places = append(places, place{n.Country, n.Name})
			}
			for _, src := range slices.Compact(places) {
				for _, day := range days {
					for _, h := range lintHours {
						now := time.Date(day.Year(), day.Month(), day.Day(), h, 0, 0, 0, loc)
						where := src.country
						switch {
						case src.network != "":
							where = "network " + src.network + " (" + src.country + ")"
						case where == "":
							where = "an unknown country"
						}
						out = append(out, scenario{
							req: Request{Technician: tech, Target: tg, Source: "192.0.2.1:22", SourceCountry: src.country,
								SourceNetwork: src.network, Now: now},
							desc: fmt.Sprintf("%s to %s from %s at %s", tech.Name, tg.Name, where, now.Format("Mon 15:04 MST")),
						})
					}
				}
			}
		}
	}
	return out
}

var (
	utcTimeRe  = regexp.MustCompile(`now\.get(FullYear|Month|Date|DayOfMonth|DayOfWeek|DayOfYear|Hours|Minutes)\(\s*\)`)
	labelRefRe = regexp.MustCompile(`target\.labels(?:\[\s*["']([^"']+)["']\s*\]|\.([A-Za-z_][A-Za-z0-9_]*))`)
	dataRefRe  = regexp.MustCompile(`["']([^"']+)["']\s+in\s+target\.data`)
)

// Lint tries the rules against every configured technician and target and
// reports: rules that never match, allow or approval rules that never
// decide because an earlier one always matches first, labels and data
// classes that no target carries, and any way personal data ("pii") is
// allowed across borders without approval. It samples sources and times
// (see scenarios), so it finds problems but cannot prove their absence.
func (p *Policy) Lint(techs []*Technician, targets []*Target, networks []*Network) []Finding {
	var findings []Finding
	scen := scenarios(techs, targets, networks)
	for _, r := range p.Rules {
		if utcTimeRe.MatchString(r.When) {
			findings = append(findings, Finding{Rule: r.Name,
				Message: "reads now without a time zone, which is UTC; write e.g. now.getHours(target.zone)"})
		}
	}

	matched := make([][]bool, len(p.Rules)) // rule × scenario
	for i := range p.Rules {
		matched[i] = make([]bool, len(scen))
	}
	piiAcross := map[string]string{} // rule → example
	for j, sc := range scen {
		in := sc.req.inputs()
		for i := range p.Rules {
			ok, _ := p.Rules[i].evaluate(sc.req, in)
			matched[i][j] = ok
		}
		d := p.Decide(sc.req)
		if d.Allowed() && d.CrossBorder() && sc.req.Target.Holds("pii") {
			if _, seen := piiAcross[d.Rule]; !seen {
				piiAcross[d.Rule] = sc.desc
			}
		}
	}

	for i, r := range p.Rules {
		if !slices.Contains(matched[i], true) {
			findings = append(findings, Finding{Rule: r.Name, Message: "never matches any configured technician and target"})
			continue
		}
		if r.Effect == Deny {
			continue
		}
		// Does an earlier allow or approval rule match wherever this one does?
		for k := 0; k < i; k++ {
			if p.Rules[k].Effect == Deny {
				continue
			}
			shadowed := true
			for j := range scen {
				if matched[i][j] && !matched[k][j] {
					shadowed = false
					break
				}
			}
			if shadowed {
				findings = append(findings, Finding{Rule: r.Name,
					Message: fmt.Sprintf("never decides: the earlier rule %s matches wherever it does", p.Rules[k].Name)})
				break
			}
		}
	}

	labels, data := map[string]bool{}, map[string]bool{}
	for _, tg := range targets {
		for k := range tg.Labels {
			labels[k] = true
		}
		for _, d := range tg.Data {
			data[d] = true
		}
	}
	for _, r := range p.Rules {
		var unknownLabels, unknownData []string
		for k := range r.Match.Labels {
			if !labels[k] {
				unknownLabels = append(unknownLabels, k)
			}
		}
		for _, m := range labelRefRe.FindAllStringSubmatch(r.When, -1) {
			if k := m[1] + m[2]; !labels[k] && !slices.Contains(unknownLabels, k) {
				unknownLabels = append(unknownLabels, k)
			}
		}
		for _, c := range r.Match.Data {
			if !data[c] {
				unknownData = append(unknownData, c)
			}
		}
		for _, m := range dataRefRe.FindAllStringSubmatch(r.When, -1) {
			if !data[m[1]] && !slices.Contains(unknownData, m[1]) {
				unknownData = append(unknownData, m[1])
			}
		}
		sort.Strings(unknownLabels)
		sort.Strings(unknownData)
		if len(unknownLabels) > 0 {
			findings = append(findings, Finding{Rule: r.Name, Message: "no target carries the label(s) " + strings.Join(unknownLabels, ", ")})
		}
		if len(unknownData) > 0 {
			findings = append(findings, Finding{Rule: r.Name, Message: "no target holds the data class(es) " + strings.Join(unknownData, ", ")})
		}
	}

	var rules []string
	for r := range piiAcross {
		rules = append(rules, r)
	}
	sort.Strings(rules)
	for _, r := range rules {
		findings = append(findings, Finding{Rule: r,
			Message: "allows personal data (pii) across borders without approval, e.g. " + piiAcross[r]})
	}
	return findings
}
