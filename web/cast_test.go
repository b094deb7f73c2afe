package web

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestCopyCastStopsAtTheLimitWithANote(t *testing.T) {
	var in strings.Builder
	in.WriteString(`{"version":2,"width":80,"height":24}` + "\n")
	for i := range 1000 {
		b, _ := json.Marshal([]any{float64(i) / 10, "o", strings.Repeat("x", 1000)})
		in.Write(b)
		in.WriteByte('\n')
	}
	for _, tc := range []struct {
		limit      int
		events     int
		lastBefore string
	}{{limit: 1 << 30, events: 1000}, {limit: 50_000, events: 49, lastBefore: "4.8"}} {
		var out bytes.Buffer
		if err := copyCast(&out, strings.NewReader(in.String()), tc.limit); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		var ev []any
		for i, l := range lines {
			if err := json.Unmarshal([]byte(l), &ev); i > 0 && err != nil {
				t.Fatalf("limit %d: line %d is not JSON: %q", tc.limit, i, l)
			}
		}
		if tc.lastBefore == "" {
			if len(lines) != 1001 || out.String() != in.String() {
				t.Errorf("limit %d: %d lines, want the cast unchanged", tc.limit, len(lines))
			}
			continue
		}
		if len(lines) != tc.events+2 || out.Len() > tc.limit+300 {
			t.Errorf("limit %d: %d lines, %d bytes; want header, %d events and a note", tc.limit, len(lines), out.Len(), tc.events)
		}
		note := lines[len(lines)-1]
		if !strings.HasPrefix(note, "["+tc.lastBefore+", \"o\"") || !strings.Contains(note, "sekisho export show all of it") {
			t.Errorf("limit %d: last line %q; want a note at %s", tc.limit, note, tc.lastBefore)
		}
	}
}
