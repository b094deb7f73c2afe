package sqlitestore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sekisho/sekisho/broker"
)

// FuzzTextQuery checks that no search a reviewer types is an FTS5 syntax
// error, and that a search for a word of the indexed text finds it.
func FuzzTextQuery(f *testing.F) {
	for _, q := range []string{"DROP TABLE", `"rm -rf"`, `a"b`, "NEAR(a b)", "x*", "-x", "(a OR b)", "col:x", "^x", "\x00", `"`, `""""`, "é"} {
		f.Add(q)
	}
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(f.TempDir(), "sekisho.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	if err := s.StartSession(ctx, record("s", "aiko", "db-jp-01", base)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, q string) {
		if err := s.IndexSessionText(ctx, "s", broker.SessionText{Typed: "echo " + q + "\n", Shown: q}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Sessions(ctx, broker.SessionFilter{Text: q})
		if err != nil {
			t.Fatalf("Sessions(Text: %q): %v", q, err)
		}
		if len(got) != 1 {
			t.Errorf("Sessions(Text: %q) found %d sessions in a text holding it", q, len(got))
		}
		if _, err := s.TextSnippets(ctx, q, []string{"s"}); err != nil {
			t.Fatalf("TextSnippets(%q): %v", q, err)
		}
	})
}
