package main

import (
	"fmt"
	"io"
	"strings"
)

// The issue on recording throughput sets, for each of five measures,
// where sekisho stood before the work (the full `make bench` of
// 2026-11-26 in docs/BENCHMARKS.md), a floor it must reach and a goal.
// This run's value of each comes from the tables above it: the bars'
// rows, the throughput rows and the recording sizes.

// target is one row of the table of targets.
type target struct {
	What   string `json:"what"`
	Before string `json:"before"`
	Floor  string `json:"floor"`
	Goal   string `json:"goal"`
	// Got is this run's value as printed, Value the number judged (in
	// the unit of Floor and Goal).
	Got   string  `json:"this_run"`
	Value float64 `json:"value"`
	// Judged is false when the run did not measure it, or not where the
	// target is set (fewer sessions than 1,000); Note says why.
	Judged   bool   `json:"judged"`
	FloorMet bool   `json:"floor_met"`
	GoalMet  bool   `json:"goal_met"`
	Note     string `json:"note,omitempty"`
}

// judge sets FloorMet and GoalMet: at least floor and goal if higher is
// better, at most otherwise.
func (t *target) judge(v, floor, goal float64, higherIsBetter bool) {
	t.Value, t.Judged = v, true
	if higherIsBetter {
		t.FloorMet, t.GoalMet = v >= floor, v >= goal
	} else {
		t.FloorMet, t.GoalMet = v <= floor, v <= goal
	}
}

// computeTargets fills r.Targets from the parts that ran.
func (r *results) computeTargets() {
	if r.Setup == nil { // -cluster-only
		return
	}
	r.Targets = []target{r.throughputTarget(), r.cpuTarget(), r.diskTarget(), r.echoTarget(), r.memoryTarget()}
}

// throughputTarget: B/A of every throughput row (both directions, every
// cipher), each at least the floor.
func (r *results) throughputTarget() target {
	var ciphers []string
	for _, c := range r.Settings.Ciphers {
		ciphers = append(ciphers, shortCipher(c))
	}
	t := target{What: "download and upload, " + strings.Join(ciphers, " and ") + ", B/A against ssh -J",
		Before: "0.49–0.78 ×", Floor: "≥ 1.0 × each", Goal: "≥ 1.2 × each"}
	lo, hi := 0.0, 0.0
	for _, row := range r.Throughput {
		if row.RatioBA == 0 {
			t.Note = "not measured: " + row.Direction + " " + shortCipher(row.Cipher) + " failed on a path"
			return t
		}
		if lo == 0 || row.RatioBA < lo {
			lo = row.RatioBA
		}
		hi = max(hi, row.RatioBA)
	}
	if lo == 0 {
		t.Note = "not measured"
		return t
	}
	t.Got = fmt.Sprintf("%.2f–%.2f ×", lo, hi)
	t.judge(lo, 1.0, 1.2, true)
	return t
}

// cpuTarget: sekisho's CPU seconds per GiB of the aes128-gcm downloads.
func (r *results) cpuTarget() target {
	t := target{What: "sekisho CPU per GiB, aes128-gcm download", Before: "5.2 s", Floor: "≤ 2.6 s", Goal: "≤ 2 s"}
	for _, row := range r.Throughput {
		if row.Direction == "download" && shortCipher(row.Cipher) == "aes128-gcm" {
			if perGiB, _, ok := row.sekishoCPU(); ok {
				t.Got = fmt.Sprintf("%.1f s", perGiB)
				t.judge(perGiB, 2.6, 2, false)
				return t
			}
		}
	}
	t.Note = "not measured"
	return t
}

// diskTarget: bytes on disk per payload byte of the exact-bytes
// recordings, the worse of the downloads' and the uploads'.
func (r *results) diskTarget() target {
	t := target{What: "exact bytes on disk per byte (the worse of download and upload)", Before: "1.33", Floor: "≤ 1.02", Goal: "≤ 1.01"}
	worst := 0.0
	for _, rr := range r.Recording {
		if rr.Exact {
			worst = max(worst, rr.PerPayload)
		}
	}
	if worst == 0 {
		t.Note = "not measured"
		return t
	}
	t.Got = fmt.Sprintf("%.3f", worst)
	t.judge(worst, 1.02, 1.01, false)
	return t
}

// echoTarget: B − D echo p99 at 1,000 sessions with sekisho on a CPU of
// its own.
func (r *results) echoTarget() target {
	t := target{What: "added echo p99 at 1,000 sessions, sekisho on its own CPU", Before: "not measured", Floor: "≤ 5 ms", Goal: "≤ 2 ms"}
	pe := r.EchoPinned
	switch {
	case pe == nil:
		t.Note = "not measured: the run with sekisho on its own CPU did not run (-echo-pinned, -concurrency)"
		return t
	case pe.Skipped != "":
		t.Note = "not measured: " + pe.Skipped
		return t
	}
	row := barRow(pe.Rows)
	if row == nil || !row.complete() {
		t.Note = "not measured: not every session opened on both paths"
		return t
	}
	t.Got = fmt.Sprintf("%+.2f ms", row.AddedP99MS)
	if why := row.saturated(); why != "" {
		t.Note = "not judged: " + why
		return t
	}
	if row.Sessions != 1000 {
		t.Got += fmt.Sprintf(" at %d sessions", row.Sessions)
		t.Value, t.Note = row.AddedP99MS, "not judged: measured at fewer sessions than 1,000"
		return t
	}
	t.judge(row.AddedP99MS, 5, 2, false)
	return t
}

// memoryTarget: sekisho's RSS growth per session at 1,000 sessions (the
// run where all share the CPUs, as the bar on memory).
func (r *results) memoryTarget() target {
	t := target{What: "bastion memory per interactive session (RSS growth per session at 1,000 sessions)", Before: "183 KB", Floor: "≤ 150 KB", Goal: "≤ 100 KB"}
	row := barRow(r.Echo)
	if row == nil || row.Sekisho == nil || !row.complete() {
		t.Note = "not measured"
		return t
	}
	kb := row.Sekisho.RSS / 1e3
	t.Got = fmt.Sprintf("%.0f KB", kb)
	if row.Sessions != 1000 {
		t.Got += fmt.Sprintf(" at %d sessions", row.Sessions)
		t.Value, t.Note = kb, "not judged: measured at fewer sessions than 1,000"
		return t
	}
	t.judge(kb, 150, 100, false)
	return t
}

// printTargets writes the targets as the table, with this run's
// value and whether it reaches the floor and the goal.
func (r *results) printTargets(w io.Writer) {
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintf(w, "\nTargets (from the issue; KB = 1,000 bytes; before = the full `make bench` of 2026-11-26):\n\n")
	fmt.Fprintf(w, "| what | now (before) | floor | goal | this run | floor, goal |\n|---|--:|--:|--:|--:|---|\n")
	met := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "missed"
	}
	for _, t := range r.Targets {
		got, verdict := t.Got, "floor "+met(t.FloorMet)+", goal "+met(t.GoalMet)
		if got == "" {
			got = "—"
		}
		if !t.Judged {
			verdict = t.Note
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", t.What, t.Before, t.Floor, t.Goal, got, verdict)
	}
}
