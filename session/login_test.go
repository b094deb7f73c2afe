package session

import (
	"errors"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestParseLogin(t *testing.T) {
	tests := []struct {
		in         string
		tech, tgt  string
		wantErr    string
		wantNoTarg bool
	}{
		{in: "aiko+db-jp-01", tech: "aiko", tgt: "db-jp-01"},
		{in: "li%web-sg-01", tech: "li", tgt: "web-sg-01"},
		{in: "a.b_c-d+x.y_z", tech: "a.b_c-d", tgt: "x.y_z"},
		{in: "aiko", wantNoTarg: true, wantErr: "aiko+TARGET"},
		{in: "aiko+", wantErr: "empty target name"},
		{in: "+db", wantErr: "empty technician name"},
		{in: "Aiko+db", wantErr: `character 'A' at position 1`},
		{in: "aiko+db/../../etc", wantErr: `character '/'`},
		{in: "aiko+-db", wantErr: `character '-' at position 1`},
		{in: "aiko+db+x", wantErr: `character '+'`},
		{in: "aiko+db\x00", wantErr: `character '\x00'`},
		{in: "aiko+" + strings.Repeat("a", 64), wantErr: "at most 63"},
		{in: "ai ko+db", wantErr: `character ' '`},
		// Look-alikes, separators and encodings other tools split differently.
		{in: "\u0430iko+db", wantErr: "character"},   // Cyrillic а
		{in: "aiko+db\u200b", wantErr: "character"},  // zero-width space
		{in: "aiko+d\u0131", wantErr: "character"},   // dotless ı
		{in: "aiko+db ", wantErr: `character ' '`},   // trailing space
		{in: "aiko+db@x", wantErr: `character '@'`},  // what scp would split at
		{in: "aiko+db%x", wantErr: `character '%'`},  // two separators
		{in: "aiko%2bdb", tech: "aiko", tgt: "2bdb"}, // percent-encoding is not decoded: % is the other separator
		{in: "aiko+..", wantErr: "character"},        // not a name
		{in: "aiko+.", wantErr: "character"},         // nor this
		{in: "aiko+\xff", wantErr: "character"},      // invalid UTF-8
		{in: strings.Repeat("a", 65536) + "+db", wantErr: "at most 63"},
	}
	for _, tt := range tests {
		l, err := ParseLogin(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseLogin(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			if errors.Is(err, ErrNoTarget) != tt.wantNoTarg {
				t.Errorf("ParseLogin(%q): errors.Is(ErrNoTarget) = %v", tt.in, !tt.wantNoTarg)
			}
			continue
		}
		if err != nil || l.Technician != tt.tech || l.Target != tt.tgt {
			t.Errorf("ParseLogin(%q) = %+v, %v; want %s + %s", tt.in, l, err, tt.tech, tt.tgt)
		}
	}
	refused := 0
	for _, tt := range tests {
		if tt.wantErr != "" {
			refused++
		}
	}
	hardening.Report(t, "12", "login names with look-alikes (Cyrillic а, a zero-width space, dotless ı, a trailing space, upper case): all refused, names are lower-case ASCII only; %d of %d logins refused in all", refused, len(tests))
	hardening.Report(t, "30", "%d logins (a+b+c, a+, +b, a+b@x, a+b%%x, %%2b, .., NUL, invalid UTF-8, a 64 KiB name): %d refused with the offending character or length, %d split into technician and target, %%2b not decoded", len(tests), refused, len(tests)-refused)
}

func FuzzParseLogin(f *testing.F) {
	for _, s := range []string{"aiko+db-jp-01", "li%web", "x", "+", "a+b+c", "\xff+a", "a+../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLogin(s)
		if err != nil {
			return
		}
		for _, name := range []string{l.Technician, l.Target} {
			if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "/\\+% \x00") || strings.HasPrefix(name, ".") {
				t.Fatalf("ParseLogin(%q) accepted unsafe name %q", s, name)
			}
		}
		if l.Technician+"+"+l.Target != s && l.Technician+"%"+l.Target != s {
			t.Fatalf("ParseLogin(%q) = %+v does not reassemble", s, l)
		}
	})
}
