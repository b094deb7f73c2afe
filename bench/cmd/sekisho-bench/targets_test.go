package main

import (
	"strings"
	"testing"
	"time"
)

// The targets are read from the tables the run printed: the throughput
// rows, B's CPU time, the exact-bytes recordings and the echo test rows.
func TestComputeTargets(t *testing.T) {
	tput := func(dirn, cipher string, a, b float64, cpuS float64) *throughputRow {
		return &throughputRow{Direction: dirn, Cipher: cipher, RatioBA: b / a, Paths: map[path]*transferSet{
			pathB: {Runs: []transfer{{Bytes: 1 << 30, Wall: 1e9, SekishoCPU: time.Duration(cpuS * float64(time.Second))}}},
		}}
	}
	echo := func(n int, addedP99, rss float64) *echoRow {
		ok := latencySummary{summary: summary{N: 10}}
		return &echoRow{Sessions: n, AddedP99MS: addedP99, Sekisho: &perSession{RSS: rss}, Paths: map[path]*echoPath{
			pathB: {Opened: n, LatencyMS: ok}, pathD: {Opened: n, LatencyMS: ok},
		}}
	}
	r := &results{
		Setup:    map[path]*setupResult{},
		Settings: settings{Ciphers: []string{"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"}},
		Throughput: []*throughputRow{
			tput("download", "aes128-gcm@openssh.com", 400, 500, 2.4),
			tput("download", "chacha20-poly1305@openssh.com", 250, 260, 3),
			tput("upload", "aes128-gcm@openssh.com", 270, 300, 3),
			tput("upload", "chacha20-poly1305@openssh.com", 200, 210, 3),
		},
		Recording: []recordingRow{
			{Channel: "pty", PerPayload: 1.5},
			{Channel: "download", PerPayload: 1.004, Exact: true},
			{Channel: "upload", PerPayload: 1.015, Exact: true},
		},
		Echo:       []*echoRow{echo(100, 1, 90e3), echo(1000, 400, 140e3)},
		EchoPinned: &pinnedEcho{Rows: []*echoRow{echo(100, 0.5, 0), echo(1000, 1.5, 0)}},
	}
	r.computeTargets()
	want := []struct {
		got             string
		floor, goal     bool
		judged          bool
		value, tolerant float64
	}{
		{"1.04–1.25 ×", true, false, true, 1.04, 0.01},
		{"2.4 s", true, false, true, 2.4, 0.01},
		{"1.015", true, false, true, 1.015, 0.001},
		{"+1.50 ms", true, true, true, 1.5, 0},
		{"140 KB", true, false, true, 140, 0},
	}
	if len(r.Targets) != len(want) {
		t.Fatalf("%d targets, want %d", len(r.Targets), len(want))
	}
	for i, w := range want {
		g := r.Targets[i]
		if g.Got != w.got || g.FloorMet != w.floor || g.GoalMet != w.goal || g.Judged != w.judged || g.Value < w.value-w.tolerant || g.Value > w.value+w.tolerant {
			t.Errorf("%s: got %q (value %v, judged %v, floor %v, goal %v), want %q (%v, %v, %v, %v)",
				g.What, g.Got, g.Value, g.Judged, g.FloorMet, g.GoalMet, w.got, w.value, w.judged, w.floor, w.goal)
		}
	}

	// Fewer sessions than 1,000: the value is shown, not judged.
	r.Echo = r.Echo[:1]
	r.EchoPinned.Rows = r.EchoPinned.Rows[:1]
	r.computeTargets()
	for _, g := range r.Targets[3:] {
		if g.Judged || g.FloorMet || g.Note == "" {
			t.Errorf("%s at 100 sessions: judged %v, floor met %v, note %q; want not judged, with a note", g.What, g.Judged, g.FloorMet, g.Note)
		}
	}

	// A direct reference that waited for a CPU (p99 1.7 s): B − D is
	// negative and says nothing of sekisho; not judged, nor the bar.
	sat := echo(1000, -1134, 0)
	sat.Paths[pathD].LatencyMS.P99 = 1708
	r.EchoPinned = &pinnedEcho{Rows: []*echoRow{sat}}
	r.computeTargets()
	if g := r.Targets[3]; g.Judged || g.FloorMet || !strings.Contains(g.Note, "saturated") {
		t.Errorf("saturated reference: judged %v, floor met %v, note %q", g.Judged, g.FloorMet, g.Note)
	}
	if b := echoBar("pinned", sat); b.Met || !b.NotJudged {
		t.Errorf("saturated reference: bar met %v, not judged %v", b.Met, b.NotJudged)
	}

	// One CPU: the pinned run is skipped and says so.
	r.EchoPinned = &pinnedEcho{Skipped: "one CPU"}
	r.computeTargets()
	if g := r.Targets[3]; g.Judged || g.Note != "not measured: one CPU" {
		t.Errorf("pinned run skipped: judged %v, note %q", g.Judged, g.Note)
	}
}
