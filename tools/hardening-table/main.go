// Command hardening-table writes SECURITY.md's table of hardening tests
// from the `go test -json` output of `make hardening`.
//
// Tests report the row they check with internal/hardening.Report; only
// reports of tests that passed count. Fuzz runs contribute the number of
// inputs each target executed. The table replaces the text between the
// markers hardening-table:start and hardening-table:end in the file named
// by -security.
//
//	go run ./tools/hardening-table -security SECURITY.md tests.json fuzz.json
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// rows are the classes of SECURITY-TESTS.md and sekisho's own fault cases,
// in the order of the table.
var rows = []struct{ id, class string }{
	{"1", "a key offer taken as proof"},
	{"2", "certificate `source-address` not enforced"},
	{"3", "a certificate signed by a certificate"},
	{"4", "over-broad Vault roles"},
	{"5", "certificate validity matrix"},
	{"6", "multi-step auth state mixed up"},
	{"7", "parser panics during auth"},
	{"8", "forwarding channels skipping access checks"},
	{"9", "the bastion serving its own files or shell"},
	{"10", "gaps during approval waits"},
	{"11", "stale policy"},
	{"12", "principal look-alikes"},
	{"13", "recordings readable without authorisation"},
	{"14", "recording bypass by channel form"},
	{"15", "file transfers unrecorded"},
	{"16", "agent, X11, streamlocal channels"},
	{"17", "target host key trusted on first use or mixed up"},
	{"18", "Terrapin"},
	{"19", "corrupted packets"},
	{"20", "stalled key exchange memory"},
	{"21", "pre-auth slowloris"},
	{"22", "channel-mux leaks and deadlocks"},
	{"23", "hostile target exhausting the bastion"},
	{"24", "brute force filling logs or the database"},
	{"25", "recordings lost or hidden after a crash"},
	{"26", "path traversal in recording IDs and names"},
	{"27", "escape sequences attacking the reviewer's terminal"},
	{"28", "XSS in the review UI"},
	{"29", "command, env and log injection"},
	{"30", "target-in-username parsing"},
	{"31", "residency check racing DNS"},
	{"32", "a limited transfer re-interpreted by the target"},
	{"33", "state shared by several nodes"},
	{"vault", "fault: Vault unreachable, slow, sealed, token revoked"},
	{"cert-lifetime", "fault: a certificate shorter than the session"},
	{"clock", "fault: clock skew"},
	{"disk", "fault: recording store full or read-only"},
	{"partition", "fault: network partitions, blackholed peers"},
	{"target-killed", "fault: the target killed mid-session"},
	{"kill", "fault: sekisho killed with SIGKILL mid-session"},
	{"proxy", "PROXY protocol input"},
	{"jump", "ProxyJump (ssh -J): the inner connection unrecorded or not held to the rules"},
	{"health", "fault: a balancer sending sessions to a node that cannot serve them"},
	{"audit", "audit events lost on their way to the SIEM"},
}

type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type report struct{ test, figure string }

type results struct {
	reports  map[string][]report    // row → reports, of tests that passed or not yet known
	status   map[string]string      // package/test → pass, fail, skip
	pending  map[string][]reportRef // package/test → reports awaiting the test's result
	fuzzed   map[string]int64       // fuzz target → inputs executed
	elapsed  map[string]float64     // package/test → seconds
	passed   int
	failed   []string
	fuzzing  map[string]bool // package/test keys that are fuzz runs, not tests
	raced    []string        // fuzz runs ended by Go's deadline race
	deadline map[string]bool // fuzz runs whose output says "context deadline exceeded"
	skipped  int
	start    time.Time
	finished time.Time
}

type reportRef struct {
	row string
	report
}

var (
	reportRe = regexp.MustCompile(hardening.Marker + ` row=(\S+) test=(\S+) figure=(.*)$`)
	fuzzRe   = regexp.MustCompile(`fuzz: elapsed: \S+, execs: (\d+) `)
)

func main() {
	security := flag.String("security", "SECURITY.md", "file whose table to replace")
	record := flag.String("record", "", "copy go test -json from standard input to this file, printing each test's result, then exit with 1 if a test failed")
	flag.Parse()
	if *record != "" {
		if err := recordRun(os.Stdin, *record, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "hardening-table: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: hardening-table -security SECURITY.md tests.json [fuzz.json ...]")
		os.Exit(2)
	}
	res := &results{
		reports: map[string][]report{}, status: map[string]string{},
		pending: map[string][]reportRef{}, fuzzed: map[string]int64{},
		elapsed: map[string]float64{}, fuzzing: map[string]bool{}, deadline: map[string]bool{},
	}
	for _, name := range flag.Args() {
		if err := res.readFile(name); err != nil {
			fmt.Fprintf(os.Stderr, "hardening-table: %v\n", err)
			os.Exit(1)
		}
	}
	if err := replaceTable(*security, res.table()); err != nil {
		fmt.Fprintf(os.Stderr, "hardening-table: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("hardening-table: %d tests passed, %d failed, %d skipped; %d rows with a report; %s updated\n",
		res.passed, len(res.failed), res.skipped, len(res.reports), *security)
	if len(res.failed) > 0 {
		fmt.Printf("failed: %s\n", strings.Join(res.failed, ", "))
	}
}

// recordRun copies a go test -json stream to name and prints the result
// line of every test and package, so a long run shows its progress.
func recordRun(in io.Reader, name string, progress io.Writer) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	failed := false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		b := sc.Bytes()
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
		var ev event
		if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &ev) != nil {
			fmt.Fprintf(progress, "%s\n", b) // build errors
			continue
		}
		if ev.Action == "fail" {
			failed = true
		}
		out := strings.TrimLeft(ev.Output, " ")
		if strings.HasPrefix(out, "--- ") && !strings.Contains(ev.Test, "/") ||
			strings.HasPrefix(out, "ok ") || strings.HasPrefix(out, "FAIL") || strings.HasPrefix(out, "panic:") {
			fmt.Fprint(progress, ev.Output)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if failed {
		return errors.New("a test failed; see " + name)
	}
	return nil
}

func (r *results) readFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return r.read(f, name)
}

func (r *results) read(in io.Reader, name string) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 || b[0] != '{' {
			continue // build output and the like
		}
		var ev event
		if err := json.Unmarshal(b, &ev); err != nil {
			return fmt.Errorf("%s:%d: not a go test -json event: %v", name, line, err)
		}
		if !ev.Time.IsZero() {
			if r.start.IsZero() || ev.Time.Before(r.start) {
				r.start = ev.Time
			}
			if ev.Time.After(r.finished) {
				r.finished = ev.Time
			}
		}
		key := ev.Package + "/" + ev.Test
		switch ev.Action {
		case "output":
			if m := reportRe.FindStringSubmatch(strings.TrimRight(ev.Output, "\n")); m != nil && ev.Test != "" {
				r.pending[key] = append(r.pending[key], reportRef{m[1], report{m[2], m[3]}})
			}
			if m := fuzzRe.FindStringSubmatch(ev.Output); m != nil && ev.Test != "" {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				r.fuzzed[ev.Test] = max(r.fuzzed[ev.Test], n)
				r.fuzzing[key] = true
			}
			if strings.TrimSpace(ev.Output) == "context deadline exceeded" {
				r.deadline[key] = true
			}
		case "pass", "fail", "skip":
			if ev.Test == "" {
				continue
			}
			r.status[key] = ev.Action
			r.elapsed[key] = ev.Elapsed
			top := !strings.Contains(ev.Test, "/")
			if r.fuzzing[key] {
				// A fuzz run, not a test. make hardening stops before the
				// table if one wrote a failing input; one that failed
				// without is Go 1.26's deadline race (go.dev/issue/75804).
				if ev.Action == "fail" && r.deadline[key] && top {
					r.raced = append(r.raced, ev.Test)
				} else if ev.Action == "fail" && top {
					r.failed = append(r.failed, ev.Test)
				}
				continue
			}
			switch ev.Action {
			case "pass":
				if top {
					r.passed++
				}
				for _, rep := range r.pending[key] {
					r.reports[rep.row] = append(r.reports[rep.row], rep.report)
				}
			case "fail":
				if top {
					r.failed = append(r.failed, ev.Test)
				}
			case "skip":
				if top {
					r.skipped++
				}
			}
			delete(r.pending, key)
		}
	}
	return sc.Err()
}

func (r *results) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Generated by `make hardening` on %s (%s of tests and fuzzing); %d tests passed, %d failed.",
		r.finished.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.start).Round(time.Second), r.passed, len(r.failed))
	if len(r.raced) > 0 {
		fmt.Fprintf(&b, " The fuzz runs of %s ended with Go 1.26's deadline race (go.dev/issue/75804) and wrote no failing input.", strings.Join(r.raced, ", "))
	}
	b.WriteString("\n\n")
	b.WriteString("| # | class | tests that passed, with what they measured |\n|--:|---|---|\n")
	known := map[string]bool{}
	for _, row := range rows {
		known[row.id] = true
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row.id, row.class, cell(r.reports[row.id]))
	}
	var other []string
	for id := range r.reports {
		if !known[id] {
			other = append(other, id)
		}
	}
	sort.Strings(other)
	for _, id := range other {
		fmt.Fprintf(&b, "| %s | (not a known row) | %s |\n", id, cell(r.reports[id]))
	}
	if len(r.fuzzed) > 0 {
		var names []string
		var total int64
		for name, n := range r.fuzzed {
			names = append(names, name)
			total += n
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "\nFuzzing in the same run: %s inputs over %d targets:", thousands(total), len(names))
		for i, name := range names {
			sep := ","
			if i == len(names)-1 {
				sep = "."
			}
			fmt.Fprintf(&b, " `%s` %s%s", name, thousands(r.fuzzed[name]), sep)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func cell(reps []report) string {
	if len(reps) == 0 {
		return "**no test in this run**"
	}
	sort.SliceStable(reps, func(i, j int) bool { return reps[i].test < reps[j].test })
	var parts []string
	for _, rep := range reps {
		fig := strings.ReplaceAll(rep.figure, "|", `\|`)
		parts = append(parts, fmt.Sprintf("`%s`: %s", rep.test, fig))
	}
	return strings.Join(parts, "<br>")
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

const (
	startMarker = "<!-- hardening-table:start -->"
	endMarker   = "<!-- hardening-table:end -->"
)

func replaceTable(name, table string) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte(startMarker))
	j := bytes.Index(b, []byte(endMarker))
	if i < 0 || j < i {
		return errors.New(name + ": no " + startMarker + " … " + endMarker + " section to replace")
	}
	var out bytes.Buffer
	out.Write(b[:i+len(startMarker)])
	out.WriteString("\n")
	out.WriteString(table)
	out.Write(b[j:])
	return os.WriteFile(name, out.Bytes(), 0o644)
}
