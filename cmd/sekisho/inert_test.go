package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestInertWriterKeepsJSONAndHidesNothing(t *testing.T) {
	hostile := "root\u202e\u2066txt.exe\u200b\ufeff\u2028 \U000e0041 日本 \x1b[2J\r\nfake\x00"
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(inertWriter{&buf}, nil))
	log.Info("authentication failed", "user", hostile)
	enc := json.NewEncoder(inertWriter{&buf})
	enc.Encode(map[string]string{"detail": hostile})

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines written, want 2 (a newline in a value split a line):\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		for i, r := range line {
			if r < 0x20 || r == 0x7f || hidden(r) || r == utf8.RuneError {
				t.Errorf("raw %U at byte %d of %q", r, i, line)
			}
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("not JSON any more: %v\n%s", err, line)
		}
		got, _ := v["user"].(string)
		if got == "" {
			got, _ = v["detail"].(string)
		}
		if want := strings.ToValidUTF8(hostile, "\ufffd"); got != want {
			t.Errorf("decoded %q, want the original %q", got, want)
		}
		if !strings.Contains(line, "日本") {
			t.Errorf("printable non-ASCII text was escaped: %s", line)
		}
	}
}
