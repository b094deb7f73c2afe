#!/usr/bin/env bash
# fuzz-one.sh PKG TARGET FUZZTIME [JSON-RECORD]: runs one fuzz target.
#
# A failing input the fuzzer writes to PKG/testdata/fuzz/TARGET fails the
# run. A run that ends with an error but writes no input is Go 1.26's
# fuzz coordinator racing its own -fuzztime deadline ("context deadline
# exceeded", go.dev/issue/75804, fixed in Go 1.27): reported, not a
# finding.
set -uo pipefail
pkg=$1 target=$2 fuzztime=$3 record=${4:-}
go=${GO:-go}
dir=$pkg/testdata/fuzz/$target
before=$(ls "$dir" 2>/dev/null | wc -l)
echo "fuzz $pkg:$target for $fuzztime"
if [ -n "$record" ]; then
	"$go" test -run=NONE -fuzz="^$target\$" -fuzztime="$fuzztime" -json "./$pkg/" 2>&1 |
		"$go" run ./tools/hardening-table -record "$record"
else
	"$go" test -run=NONE -fuzz="^$target\$" -fuzztime="$fuzztime" "./$pkg/"
fi
status=$?
[ $status -eq 0 ] && exit 0
after=$(ls "$dir" 2>/dev/null | wc -l)
if [ "$after" -gt "$before" ]; then
	echo "fuzz $pkg:$target: a failing input was written to $dir; it is a regression case once fixed" >&2
	exit 1
fi
echo "fuzz $pkg:$target: ended with an error but wrote no failing input: Go's fuzz deadline race (go.dev/issue/75804), not a finding" >&2
exit 0
