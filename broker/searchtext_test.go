package broker

import "testing"

func TestPlainExcerpt(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"a\r\n\tb  c", 200, "a b c"},
		{"\n\nlead and trail\n", 200, "lead and trail"},
		{"bidi\u202Eoverride\x1b[31m", 200, "bidi override [31m"},
		{"abcdef ghij", 8, "abcde…"},
		{"abc ééé", 9, "abc é…"},
		{"abc ééé", 8, "abc…"}, // "é" is not split
		{"bad\xffbyte", 200, "bad\uFFFDbyte"},
	}
	for _, tc := range tests {
		if got := PlainExcerpt(tc.in, tc.max); got != tc.want || len(got) > tc.max {
			t.Errorf("PlainExcerpt(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestClipText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // "é" is not split
		{"a\x00b", 10, "ab"},
		{"a\xffb", 10, "a\uFFFDb"},
	}
	for _, tc := range tests {
		if got := ClipText(tc.in, tc.max); got != tc.want {
			t.Errorf("ClipText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestSearchWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"  rm   -rf ", []string{"rm", "-rf"}},
		{`"drop table"`, []string{"drop table"}},
		{`""`, nil},
		{`"  "`, nil},
		{`"open`, []string{`"open`}},
		{"a\x00b \xff", []string{"ab", "\uFFFD"}},
		{"", nil},
	}
	for _, tc := range tests {
		got := SearchWords(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("SearchWords(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("SearchWords(%q) = %q, want %q", tc.in, got, tc.want)
			}
		}
	}
}
