package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/sekisho/sekisho/broker"
)

// defaultReportPeriod is how far back a report goes without --since.
const defaultReportPeriod = 30 * 24 * time.Hour

// cmdReport dispatches `sekisho report KIND`.
func cmdReport(ctx context.Context, args []string) error {
	sub, rest := subcommand(args)
	switch sub {
	case "cross-border":
		return cmdReportCrossBorder(ctx, os.Stdout, rest, time.Now())
	case "":
		return usageError{msg: "report: give the report to make: cross-border"}
	}
	return usageError{msg: fmt.Sprintf("report: unknown report %q (the only one is cross-border)", sub)}
}

// cmdReportCrossBorder prints who from which foreign affiliate reached
// which targets in the period, approved by whom, from the state store.
func cmdReportCrossBorder(ctx context.Context, w io.Writer, args []string, now time.Time) error {
	var since, until, format, residency string
	cfg, fs, err := parseWithConfig("report cross-border", args, func(fs *flag.FlagSet) {
		fs.StringVar(&since, "since", "30d", "start of the period: a UTC date (2026-11-01), an RFC 3339 time, or an age (30d, 12h)")
		fs.StringVar(&until, "until", "", "end of the period: a UTC date (included), an RFC 3339 time (excluded) or an age; default now")
		fs.StringVar(&format, "format", "table", "table, csv or json")
		fs.StringVar(&residency, "residency", "", "only targets in these residencies, comma-separated (JP,SG); default all")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("report cross-border: unexpected argument %q; the period is given with --since and --until", fs.Arg(0))}
	}
	if format != "table" && format != "csv" && format != "json" {
		return usageError{msg: fmt.Sprintf("report cross-border: --format %q: use table, csv or json", format)}
	}
	from, to, err := reportPeriod(since, until, now)
	if err != nil {
		return usageError{msg: "report cross-border: " + err.Error()}
	}
	var scope []string
	if residency != "" {
		for _, z := range strings.Split(residency, ",") {
			if z = strings.ToUpper(strings.TrimSpace(z)); z != "" {
				scope = append(scope, z)
			}
		}
		if len(scope) == 0 {
			return usageError{msg: "report cross-border: --residency lists no residency; give country codes such as JP,SG or leave it out for all"}
		}
	}
	_, targets, _ := cfg.Domain()
	byName := map[string]*broker.Target{}
	known := map[string]bool{}
	for _, t := range targets {
		byName[t.Name] = t
		known[t.Residency] = true
	}
	for _, z := range scope {
		if !known[z] {
			// Past sessions may have had targets there; say so rather
			// than report nothing without a word.
			fmt.Fprintf(os.Stderr, "sekisho: note: no configured target resides in %s (residencies: %s)\n", z, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	report, err := broker.BuildCrossBorderReport(ctx, store, func(name string) (*broker.Target, bool) {
		t, ok := byName[name]
		return t, ok
	}, from, to, scope)
	if err != nil {
		return err
	}
	switch format {
	case "csv":
		return report.WriteCSV(w)
	case "json":
		if report.Rows == nil {
			report.Rows = []broker.CrossBorderRow{}
		}
		enc := json.NewEncoder(inertWriter{w})
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			broker.CrossBorderReport
			Daily []broker.DailyCount `json:"daily"`
		}{report, report.Daily()})
	}
	return writeCrossBorderTable(inertWriter{w}, report)
}

// writeCrossBorderTable prints the report for a terminal: a title, one line
// per session, and the counts. MODERATED is yes for a session whose rule
// asked for moderators.
func writeCrossBorderTable(w io.Writer, r broker.CrossBorderReport) error {
	scope := "all residencies"
	if r.Residencies != nil {
		scope = "residency " + strings.Join(r.Residencies, ", ")
	}
	fmt.Fprintf(w, "cross-border sessions from %s to %s (UTC, %s): %d\n\n",
		r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), scope, len(r.Rows))
	if len(r.Rows) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STARTED\tSESSION\tTECHNICIAN\tAFFILIATE\tFROM\tTARGET\tRESIDENCY\tDATA\tREQUEST\tAPPROVED BY\tENDED\tMODERATED\tREASON")
		for _, row := range r.Rows {
			from := row.SourceCountry
			if from == "" {
				from = "?"
			}
			request, approvers := "-", "-"
			if row.Request != 0 {
				request = strconv.FormatInt(row.Request, 10)
				approvers = strings.Join(row.ApprovedBy, ",")
			}
			ended := "live"
			if !row.Ended.IsZero() {
				ended = row.Ended.Format(time.RFC3339)
			}
			data := strings.Join(row.Data, ",")
			if data == "" {
				data = "-"
			}
			moderated := "no"
			if row.Moderated {
				moderated = "yes"
			}
			cells := []string{row.Started.Format(time.RFC3339), row.Session, row.Technician, row.Affiliate + " (" + row.AffiliateCountry + ")",
				from, row.Target, row.Residency, data, request, approvers, ended, moderated, row.Reason}
			for i, c := range cells {
				cells[i] = terminalCell(c)
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "by affiliate: %s\n", counts(r.ByAffiliate))
	fmt.Fprintf(w, "by residency: %s\n", counts(r.ByResidency))
	fmt.Fprintf(w, "without an access request: %d\n", r.Unapproved)
	_, err := fmt.Fprintf(w, "moderated: %d, unmoderated: %d\n", r.Moderated, r.Unmoderated)
	return err
}

// counts writes a count map as "a 3, b 1", by name.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, terminalCell(k)+" "+strconv.Itoa(m[k]))
	}
	return strings.Join(parts, ", ")
}

// terminalCell quotes text that holds anything but printable characters
// (control characters, tabs that would shift the columns, invisible
// formatting), so a technician's reason cannot rewrite a reviewer's
// terminal or table.
func terminalCell(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// reportPeriod turns --since and --until into [from, to). Each is a UTC
// date, an RFC 3339 time or an age before now (30d, 12h); a date given to
// --until is included whole. An empty --until is now.
func reportPeriod(since, until string, now time.Time) (from, to time.Time, err error) {
	from, _, err = reportTime(since, now)
	if err != nil {
		return from, to, fmt.Errorf("--since %q: %w", since, err)
	}
	to = now
	if until != "" {
		var date bool
		to, date, err = reportTime(until, now)
		if err != nil {
			return from, to, fmt.Errorf("--until %q: %w", until, err)
		}
		if date {
			to = to.AddDate(0, 0, 1)
		}
	}
	if !from.Before(to) {
		return from, to, fmt.Errorf("the period from %s to %s is empty; --since must come before --until",
			from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	return from.UTC(), to.UTC(), nil
}

// reportTime parses one end of a period; date reports whether s was a date.
func reportTime(s string, now time.Time) (t time.Time, date bool, err error) {
	if s == "" {
		return now.Add(-defaultReportPeriod), false, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, true, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, false, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), false, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), false, nil
	}
	return time.Time{}, false, fmt.Errorf("not a date (2026-11-01), an RFC 3339 time (2026-11-01T09:00:00Z) or an age (30d, 12h)")
}
