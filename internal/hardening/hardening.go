// Package hardening ties tests to the rows of SECURITY.md's table of
// hardening tests.
//
// A test calls Report with the row it checks (a number from the attack
// classes, or a fault name such as "vault") and the figure it measured.
// tools/hardening-table reads `go test -json` output, keeps the reports of
// tests that passed, and writes the table. Tests that take long call Long
// first: they run under `make hardening`, not under `make test`.
package hardening

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Marker starts every report line in a test's output.
const Marker = "hardening-report"

// EnvLong is set by `make hardening` to run the long tests.
const EnvLong = "SEKISHO_HARDENING"

// Report records that the calling test checks row and what it measured.
// The figure should say what was thrown at sekisho and what came out,
// e.g. "10,000 banner-only connections from 200 sources: all closed at the
// deadline; 20 logins meanwhile, slowest 0.4 s".
func Report(t testing.TB, row, format string, args ...any) {
	t.Helper()
	figure := fmt.Sprintf(format, args...)
	figure = strings.Join(strings.Fields(figure), " ")
	t.Logf("%s row=%s test=%s figure=%s", Marker, row, t.Name(), figure)
}

// Long skips the calling test unless `make hardening` runs it.
func Long(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvLong) == "" {
		t.Skipf("long hardening test: run with make hardening (%s=1)", EnvLong)
	}
}
