package session

import (
	"reflect"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"requests", []string{"requests"}, false},
		{"  approve   42  ", []string{"approve", "42"}, false},
		{`deny 42 --reason "not now, freeze"`, []string{"deny", "42", "--reason", "not now, freeze"}, false},
		{`deny 42 --reason 'it''s late'`, []string{"deny", "42", "--reason", "its late"}, false},
		{`deny 42 --reason it\'s\ late`, []string{"deny", "42", "--reason", "it's late"}, false},
		{`request db "" x`, []string{"request", "db", "", "x"}, false},
		{`deny "unterminated`, nil, true},
		{"", nil, false},
	} {
		got, err := splitCommand(c.in)
		if (err != nil) != c.err || !reflect.DeepEqual(got, c.want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q (error %v)", c.in, got, err, c.want, c.err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	// ssh joins the words of a remote command with spaces, so a reason
	// quoted on the technician's side arrives as several words.
	f, err := parseFlags([]string{"db-jp-01", "--reason", "INC-4711", "disk", "full", "--duration", "1h"})
	if err != nil || !reflect.DeepEqual(f.args, []string{"db-jp-01"}) || f.get("reason") != "INC-4711 disk full" || f.get("duration") != "1h" {
		t.Fatalf("got %+v, %v", f, err)
	}
	f, err = parseFlags([]string{"--all", "--json"})
	if err != nil || !f.has("all") || !f.has("json") || len(f.args) != 0 {
		t.Fatalf("bool flags: %+v, %v", f, err)
	}
	if f, err = parseFlags([]string{"--comment=ok", "7"}); err != nil || f.get("comment") != "ok" || f.args[0] != "7" {
		t.Fatalf("--name=value: %+v, %v", f, err)
	}
	if err := f.allow("reason"); err == nil {
		t.Error("allow accepted an unknown flag")
	}
	for _, bad := range [][]string{{"--reason"}, {"--reason", "a", "--reason", "b"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{`deny 42 --reason "a b"`, `'x'\y"z"`, `\`, `"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitCommand(s)
		if err != nil {
			return
		}
		if _, err := parseFlags(words); err != nil {
			return
		}
	})
}
