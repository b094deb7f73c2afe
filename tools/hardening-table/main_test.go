package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `{"Time":"2026-11-26T09:00:00Z","Action":"run","Package":"p","Test":"TestA"}
{"Time":"2026-11-26T09:00:01Z","Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:10: hardening-report row=21 test=TestA figure=10,000 connections | all closed\n"}
{"Time":"2026-11-26T09:00:02Z","Action":"pass","Package":"p","Test":"TestA","Elapsed":2}
{"Time":"2026-11-26T09:00:02Z","Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:10: hardening-report row=19 test=TestB figure=bit flip\n"}
{"Time":"2026-11-26T09:00:03Z","Action":"fail","Package":"p","Test":"TestB","Elapsed":1}
{"Time":"2026-11-26T09:00:03Z","Action":"output","Package":"p","Test":"FuzzC","Output":"fuzz: elapsed: 3s, execs: 21915 (7305/sec), new interesting: 5 (total: 33)\n"}
{"Time":"2026-11-26T09:00:04Z","Action":"output","Package":"p","Test":"FuzzC","Output":"fuzz: elapsed: 6s, execs: 1234567 (7305/sec), new interesting: 5 (total: 33)\n"}
{"Time":"2026-11-26T09:00:05Z","Action":"pass","Package":"p","Test":"FuzzC","Elapsed":6}
{"Time":"2026-11-26T09:00:06Z","Action":"output","Package":"p","Test":"FuzzD","Output":"fuzz: elapsed: 3s, execs: 10 (3/sec), new interesting: 0 (total: 1)\n"}
{"Time":"2026-11-26T09:00:07Z","Action":"output","Package":"p","Test":"FuzzD","Output":"    context deadline exceeded\n"}
{"Time":"2026-11-26T09:00:07Z","Action":"fail","Package":"p","Test":"FuzzD","Elapsed":3}
`

func TestTableFromTestOutput(t *testing.T) {
	res := &results{
		reports: map[string][]report{}, status: map[string]string{},
		pending: map[string][]reportRef{}, fuzzed: map[string]int64{},
		elapsed: map[string]float64{}, fuzzing: map[string]bool{}, deadline: map[string]bool{},
	}
	if err := res.read(strings.NewReader("build output\n"+sample), "sample"); err != nil {
		t.Fatal(err)
	}
	table := res.table()
	for _, want := range []string{
		"| 21 | pre-auth slowloris | `TestA`: 10,000 connections \\| all closed |",
		"| 19 | corrupted packets | **no test in this run** |", // TestB failed: its report does not count
		"1 tests passed, 1 failed.",                            // fuzz runs are not counted as tests
		"The fuzz runs of FuzzD ended with Go 1.26's deadline race",
		"1,234,577 inputs over 2 targets: `FuzzC` 1,234,567, `FuzzD` 10.",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	doc := filepath.Join(t.TempDir(), "SECURITY.md")
	os.WriteFile(doc, []byte("intro\n"+startMarker+"\nold\n"+endMarker+"\nafter\n"), 0o644)
	if err := replaceTable(doc, "new\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(doc)
	if want := "intro\n" + startMarker + "\nnew\n" + endMarker + "\nafter\n"; string(got) != want {
		t.Errorf("replaced document:\n%s\nwant:\n%s", got, want)
	}
	if err := replaceTable(filepath.Join(t.TempDir(), "missing.md"), "x"); err == nil {
		t.Error("a missing document was not reported")
	}
}
