package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sekisho/sekisho/broker"
)

// indexedStore has three ended sessions, two of them indexed, and one live.
func indexedStore(t *testing.T, e env) store {
	t.Helper()
	ctx := context.Background()
	s := e.open(t)
	for i, id := range []string{"db", "web", "plain", "live"} {
		r := record(id, "aiko", "db-jp-01", e.base.Add(time.Duration(i)*time.Minute))
		if err := s.StartSession(ctx, r); err != nil {
			t.Fatal(err)
		}
		if id != "live" {
			if err := s.EndSession(ctx, id, broker.SessionEnd{At: r.StartedAt.Add(time.Minute), Reason: "logout"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	texts := map[string]broker.SessionText{
		"db": {
			Typed: "ls -l /etc/shadow\npsql -c 'DROP TABLE customers;'\n",
			Shown: "-rw-r----- 1 root shadow 1234 Mar  1 18:00 /etc/shadow\nDROP TABLE\n",
			Files: 1, Commands: 2,
		},
		"web": {
			Typed: "sudo systemctl restart nginx\nrm -rf /var/cache/nginx/*\n",
			Shown: "Job for nginx.service failed because the control process exited with error code (a \"quoted\" word).\n" +
				strings.Repeat("filler line of output ", 30) + "ÉCOLE ok\n",
			Commands: 2,
		},
	}
	for id, tx := range texts {
		if err := s.IndexSessionText(ctx, id, tx); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestTextSearch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := indexedStore(t, e)
		tests := []struct {
			query string
			want  []string
		}{
			{"DROP TABLE", []string{"db"}},          // typed and shown, two words
			{`"drop table"`, []string{"db"}},        // a phrase, any case
			{`"table drop"`, nil},                   // a phrase keeps its order
			{"shadow", []string{"db"}},              // a substring of a path
			{"etc/shad", []string{"db"}},            // across punctuation
			{"/etc/shadow", []string{"db"}},         // the whole path
			{"rm -rf", []string{"web"}},             // "rm" is short: LIKE
			{`"rm -rf"`, []string{"web"}},           // as one phrase
			{"control process", []string{"web"}},    // only in the output
			{"nginx shadow", nil},                   // words are ANDed
			{"école", []string{"web"}},              // Unicode case folding
			{"ls", []string{"db"}},                  // only short words
			{"-l", []string{"db"}},                  // a short word with an operator
			{"%", nil},                              // a LIKE wildcard is literal
			{"_", nil},                              // so is this one
			{`\`, nil},                              // and the escape character
			{"nginx/*", []string{"web"}},            // '*' is literal
			{`"quoted"`, []string{"web"}},           // a quoted word
			{`a "quoted" word`, []string{"web"}},    // quotes inside words
			{`"unterminated`, nil},                  // a lone quote is literal
			{"(nginx OR shadow)", nil},              // parentheses and OR are literal
			{"nginx OR shadow", nil},                // "OR" is a word that must occur
			{"NEAR(nginx shadow)", nil},             // NEAR is not an operator
			{"-nginx", nil},                         // nor is a leading minus
			{"nginx -shadow", nil},                  // nor is a minus in the middle
			{"^sudo", nil},                          // nor a caret
			{"col:nginx", nil},                      // nor a column filter
			{"typed:nginx shown:nginx", nil},        // nor one that names a column
			{`"" "" ""`, nil},                       // doubled quotes are literal
			{"   ", []string{"plain", "web", "db"}}, // blank: no filter
			{`""`, []string{"plain", "web", "db"}},  // an empty phrase: no filter
			{"\xff\xfe", nil},                       // invalid UTF-8 is searched as U+FFFD
			{"nginx\x00", []string{"web"}},          // NULs are dropped, as from the index
			{"nothing like this", nil},              // no match
		}
		for _, tc := range tests {
			t.Run(tc.query, func(t *testing.T) {
				got, err := s.Sessions(ctx, broker.SessionFilter{Text: tc.query, Live: false, Until: e.base.Add(3 * time.Minute)})
				if err != nil {
					t.Fatalf("Sessions(Text: %q): %v", tc.query, err)
				}
				var gotIDs []string
				for _, r := range got {
					gotIDs = append(gotIDs, r.ID)
				}
				if !reflect.DeepEqual(gotIDs, tc.want) {
					t.Errorf("Sessions(Text: %q) = %v, want %v", tc.query, gotIDs, tc.want)
				}
				snippets, err := s.TextSnippets(ctx, tc.query, []string{"db", "web", "plain"})
				if err != nil {
					t.Fatalf("TextSnippets(%q): %v", tc.query, err)
				}
				// A snippet for every match of a search that filters.
				if len(broker.SearchWords(tc.query)) > 0 {
					var with []string
					for _, id := range []string{"plain", "web", "db"} {
						if _, ok := snippets[id]; ok {
							with = append(with, id)
						}
					}
					if !reflect.DeepEqual(with, tc.want) {
						t.Errorf("TextSnippets(%q) for %v, want for %v", tc.query, with, tc.want)
					}
				}
			})
		}
	})
}

func TestTextSnippets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := indexedStore(t, e)
		tests := []struct {
			query string
			ids   []string
			want  map[string]string
		}{
			{"shadow", []string{"db", "web", "plain", "nope"}, map[string]string{
				"db": "ls -l /etc/shadow psql -c 'DROP TABLE customers;'",
			}},
			{"SHADOW", []string{"db"}, map[string]string{ // ASCII case ignored
				"db": "ls -l /etc/shadow psql -c 'DROP TABLE customers;'",
			}},
			{"nginx", []string{"web"}, map[string]string{
				"web": "sudo systemctl restart nginx rm -rf /var/cache/nginx/*",
			}},
			{"école", []string{"web"}, map[string]string{
				"web": "…ne of output filler line of output filler line of output ÉCOLE ok",
			}},
			{"ls", []string{"db", "web"}, map[string]string{
				"db": "ls -l /etc/shadow psql -c 'DROP TABLE customers;'",
			}},
			{"control process", []string{"web"}, map[string]string{ // only shown matches
				"web": "…ob for nginx.service failed because the control process exited with error code (a \"quoted\" word). filler line of output…",
			}},
			{"shadow", manyIDs("db"), map[string]string{ // more than SQLite binds at once
				"db": "ls -l /etc/shadow psql -c 'DROP TABLE customers;'",
			}},
			{"shadow", []string{"web"}, map[string]string{}},
			{"shadow", nil, map[string]string{}},
			{"", []string{"db"}, map[string]string{}},
		}
		// What PostgreSQL gives instead: its lower() folds Unicode, so it
		// cuts 40 characters before a match found by Unicode case folding
		// as before any other, where SQLite's lower() folds ASCII only and
		// SQLite takes FTS5's snippet() of such a match.
		postgres := map[string]map[string]string{
			"école": {"web": "…er line of output filler line of output ÉCOLE ok"},
		}
		for _, tc := range tests {
			got, err := s.TextSnippets(ctx, tc.query, tc.ids)
			if err != nil {
				t.Fatalf("TextSnippets(%q, %v): %v", tc.query, tc.ids, err)
			}
			want := tc.want
			if pg, ok := postgres[tc.query]; ok && e.name == "postgres" {
				want = pg
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("TextSnippets(%q, %v) =\n %q\nwant\n %q", tc.query, tc.ids, got, want)
			}
		}
	})
}

// manyIDs is 1,200 session IDs not registered, with id last.
func manyIDs(id string) []string {
	var out []string
	for i := range 1200 {
		out = append(out, fmt.Sprintf("nope-%d", i))
	}
	return append(out, id)
}

func TestIndexSessionText(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := indexedStore(t, e)

		// Only ended sessions not indexed yet, oldest first.
		got, err := s.SessionsToIndex(ctx, 0)
		if err != nil || !reflect.DeepEqual(got, []string{"plain"}) {
			t.Errorf("SessionsToIndex = %v, %v; want [plain]", got, err)
		}
		if err := s.EndSession(ctx, "live", broker.SessionEnd{At: e.base.Add(time.Hour), Reason: "logout"}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.SessionsToIndex(ctx, 0); !reflect.DeepEqual(got, []string{"plain", "live"}) {
			t.Errorf("SessionsToIndex = %v, want [plain live]", got)
		}
		if got, _ := s.SessionsToIndex(ctx, 1); !reflect.DeepEqual(got, []string{"plain"}) {
			t.Errorf("SessionsToIndex(1) = %v, want [plain]", got)
		}

		// Indexing again replaces the text: the old words are gone.
		if err := s.IndexSessionText(ctx, "db", broker.SessionText{Typed: "uptime\n", Commands: 1}); err != nil {
			t.Fatal(err)
		}
		for query, want := range map[string]int{"shadow": 0, "uptime": 1} {
			got, err := s.Sessions(ctx, broker.SessionFilter{Text: query})
			if err != nil || len(got) != want {
				t.Errorf("after reindexing, Text %q found %d sessions (%v), want %d", query, len(got), err, want)
			}
		}
		yes := true
		if got, _ := s.Sessions(ctx, broker.SessionFilter{HasFiles: &yes}); len(got) != 0 {
			t.Errorf("after reindexing without files, HasFiles found %v", ids(got))
		}

		if err := s.IndexSessionText(ctx, "nope", broker.SessionText{Typed: "x"}); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("IndexSessionText(unregistered) = %v, want ErrNotFound", err)
		}
		if got, _ := s.SessionsToIndex(ctx, 0); !reflect.DeepEqual(got, []string{"plain", "live"}) {
			t.Errorf("SessionsToIndex = %v after a failed index, want [plain live]", got)
		}
	})
}

func TestIndexedTextIsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		if err := s.StartSession(ctx, record("big", "aiko", "db-jp-01", e.base)); err != nil {
			t.Fatal(err)
		}
		// "é" is two bytes and the limit is even: the odd prefix puts a
		// character across the limit, which must not be split.
		typed := "x" + strings.Repeat("é", broker.MaxIndexedText/2) + "beyondthelimit"
		if err := s.IndexSessionText(ctx, "big", broker.SessionText{Typed: typed, Shown: "within the limit"}); err != nil {
			t.Fatal(err)
		}
		stored := e.typed(t, "big")
		if len(stored) != broker.MaxIndexedText-1 || !utf8.ValidString(stored) || stored != typed[:broker.MaxIndexedText-1] {
			t.Errorf("stored %d bytes (valid UTF-8: %v), want the first %d", len(stored), utf8.ValidString(stored), broker.MaxIndexedText-1)
		}
		for query, want := range map[string]int{"beyondthelimit": 0, "within the limit": 1} {
			if got, _ := s.Sessions(ctx, broker.SessionFilter{Text: query}); len(got) != want {
				t.Errorf("Text %q found %d sessions, want %d", query, len(got), want)
			}
		}
	})
}
