package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sekisho/sekisho/broker"
)

// The text index is an FTS5 table with the trigram tokenizer. Reviewers
// search for fragments of paths and commands (`shadow`, `etc/shad`,
// `rm -rf`, `DROP TABLE`); a word tokenizer such as unicode61 splits
// `/etc/shadow` into `etc` and `shadow` and cannot find `etc/shad` or
// `hado` at all, while trigram makes every phrase a case-insensitive
// substring search, punctuation included. Its costs: the index is about
// three times the text, and a phrase shorter than three characters cannot
// use it, so such words are matched with LIKE on the rows the longer
// words left (or on every indexed row, when all the words are short).
//
// session_text holds one row per indexed session; its n is the rowid of
// the session's row in session_fts, stable across VACUUM because it is
// an INTEGER PRIMARY KEY.
const textSchema = `
CREATE TABLE IF NOT EXISTS session_text (
	n        INTEGER PRIMARY KEY AUTOINCREMENT,
	id       TEXT NOT NULL UNIQUE,
	files    INTEGER NOT NULL,
	commands INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS session_fts USING fts5(typed, shown, tokenize='trigram');
`

// MaxIndexedText is broker.MaxIndexedText.
const MaxIndexedText = broker.MaxIndexedText

// snippetBytes bounds an excerpt of TextSnippets.
const snippetBytes = broker.SnippetBytes

// IndexSessionText stores the searchable text of a session, replacing any
// earlier index of it, in one transaction: a search sees the old text or
// the new, never neither. Typed and Shown are each cut to MaxIndexedText
// bytes (at a character boundary; invalid UTF-8 is replaced). It returns
// broker.ErrNotFound if the session is not registered, so that the index
// never holds text no register entry answers for.
//
// A recording that cannot be read should still be indexed, with an empty
// SessionText, or SessionsToIndex returns it again forever.
func (s *Store) IndexSessionText(ctx context.Context, id string, t broker.SessionText) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	defer tx.Rollback()
	// A write first, so that the transaction takes the write lock at once
	// and waits for it (busy_timeout) instead of failing on an upgrade.
	if _, err := tx.ExecContext(ctx, `DELETE FROM session_fts WHERE rowid IN (SELECT n FROM session_text WHERE id=?)`, id); err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM session_text WHERE id=?`, id); err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO session_text (id, files, commands) SELECT id, ?, ? FROM sessions WHERE id=?`,
		t.Files, t.Commands, id)
	if err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return fmt.Errorf("index text of %s: %w", id, broker.ErrNotFound)
	}
	n, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO session_fts (rowid, typed, shown) VALUES (?,?,?)`,
		n, clipText(t.Typed, MaxIndexedText), clipText(t.Shown, MaxIndexedText)); err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	return nil
}

// SessionsToIndex returns up to limit sessions (all, if limit <= 0) that
// have ended in the register and have no text indexed, oldest first, so
// that an indexer catching up works through the backlog in order. A live
// session is never returned: its recording is still growing.
func (s *Store) SessionsToIndex(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sessions
		WHERE ended_at IS NOT NULL AND id NOT IN (SELECT id FROM session_text)
		ORDER BY started_at, id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sessions to index: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sessions to index: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sessions to index: %w", err)
	}
	return out, nil
}

// TextSnippets returns, for each of ids whose indexed text matches query
// (as SessionFilter.Text reads it), a plain-text excerpt of at most 200
// bytes around a match, with runs of white space and control characters
// made one space. Sessions that do not match, or are not indexed, have no
// entry. The excerpt is the recording's text, untrusted: whoever shows it
// escapes it.
func (s *Store) TextSnippets(ctx context.Context, query string, ids []string) (map[string]string, error) {
	out := map[string]string{}
	q := parseTextQuery(query)
	if q.empty() {
		return out, nil
	}
	const batch = 500 // well under SQLite's limit on bound parameters
	for len(ids) > 0 {
		part := ids[:min(batch, len(ids))]
		ids = ids[len(part):]
		if err := s.snippets(ctx, q, part, out); err != nil {
			return nil, fmt.Errorf("text snippets: %w", err)
		}
	}
	return out, nil
}

// snippets adds to out the excerpts of those of ids that match q. The
// excerpt is cut around the first place the query's first word occurs,
// in what was typed if it occurs there, else in what was shown: instr
// and lower are a plain scan, cheap even on megabytes of text, where
// FTS5's snippet() tokenizes every match of every row. lower() folds
// ASCII only (and keeps character positions, which substr counts in), so
// a word that matched only through Unicode case folding is not found
// that way; those rows, if any, get snippet() instead.
func (s *Store) snippets(ctx context.Context, q textQuery, ids []string, out map[string]string) error {
	cond, cargs := q.condition()
	first := q.short
	if len(q.phrases) > 0 {
		first = q.phrases
	}
	args := append([]any{first[0], first[0]}, cargs...)
	for _, id := range ids {
		args = append(args, id)
	}
	in := `(?` + strings.Repeat(",?", len(ids)-1) + `)`
	rows, err := s.db.QueryContext(ctx, `SELECT id,
		CASE WHEN ti > 0 THEN substr(typed, max(1, ti-40), 121)
		     WHEN si > 0 THEN substr(shown, max(1, si-40), 121) END,
		CASE WHEN ti > 0 THEN ti > 41 ELSE si > 41 END
		FROM (SELECT session_text.id AS id, session_fts.typed AS typed, session_fts.shown AS shown,
			instr(lower(session_fts.typed), lower(?)) AS ti, instr(lower(session_fts.shown), lower(?)) AS si
			FROM session_fts JOIN session_text ON session_text.n=session_fts.rowid
			WHERE `+cond+` AND session_text.id IN `+in+`)`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var folded []any // ids that matched only through Unicode case folding
	for rows.Next() {
		var (
			id     string
			text   sql.NullString
			before bool // the excerpt does not start at the start
		)
		if err := rows.Scan(&id, &text, &before); err != nil {
			return err
		}
		if !text.Valid {
			folded = append(folded, id)
			continue
		}
		excerpt := text.String
		if r := []rune(excerpt); len(r) == 121 {
			excerpt = strings.TrimRightFunc(string(r[:120]), unicode.IsSpace) + "…"
		}
		if before {
			excerpt = "…" + excerpt
		}
		out[id] = plainExcerpt(excerpt, snippetBytes)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if len(folded) == 0 || q.match() == "" {
		return nil
	}
	// snippet() of what was typed holds the mark only if something typed
	// matched; FTS5 otherwise returns the start of the column.
	rows, err = s.db.QueryContext(ctx, `SELECT session_text.id,
		snippet(session_fts, 0, '`+markStart+`', '', '…', 64), snippet(session_fts, 1, '', '', '…', 64)
		FROM session_fts JOIN session_text ON session_text.n=session_fts.rowid
		WHERE `+cond+` AND session_text.id IN (?`+strings.Repeat(",?", len(folded)-1)+`)`, append(cargs, folded...)...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, typed, shown string
		if err := rows.Scan(&id, &typed, &shown); err != nil {
			return err
		}
		text := shown
		if strings.Contains(typed, markStart) {
			text = strings.ReplaceAll(typed, markStart, "")
		}
		out[id] = plainExcerpt(text, snippetBytes)
	}
	return rows.Err()
}

// markStart marks where a match starts in a typed snippet(). It is a
// control character, which plainExcerpt would turn into a space anyway.
const markStart = "\x01"

// textQuery is a reviewer's search, made safe: every word is searched for
// literally, never read as FTS5 syntax.
type textQuery struct {
	phrases []string // of three or more characters: searched with FTS5
	short   []string // of one or two: searched with LIKE
}

// parseTextQuery reads q as whitespace-separated words that must all
// occur, or, when q is in double quotes, as one phrase.
func parseTextQuery(q string) textQuery {
	words := broker.SearchWords(q)
	var t textQuery
	for _, w := range words {
		if utf8.RuneCountInString(w) >= 3 {
			t.phrases = append(t.phrases, w)
		} else {
			t.short = append(t.short, w)
		}
	}
	return t
}

func (t textQuery) empty() bool { return len(t.phrases) == 0 && len(t.short) == 0 }

// match is the FTS5 expression of the long words: each a string, its
// double quotes doubled, so that nothing in it is an operator; "" when
// there are none.
func (t textQuery) match() string {
	quoted := make([]string, len(t.phrases))
	for i, p := range t.phrases {
		quoted[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(quoted, " AND ")
}

// condition is the SQL condition on session_fts of the whole query, with
// its arguments. It must not be called on an empty query.
func (t textQuery) condition() (string, []any) {
	var (
		conds []string
		args  []any
	)
	if m := t.match(); m != "" {
		conds = append(conds, "session_fts MATCH ?")
		args = append(args, m)
	}
	for _, w := range t.short {
		conds = append(conds, `(session_fts.typed LIKE ? ESCAPE '\' OR session_fts.shown LIKE ? ESCAPE '\')`)
		p := "%" + likeEscaper.Replace(w) + "%"
		args = append(args, p, p)
	}
	return strings.Join(conds, " AND "), args
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

func clipText(s string, max int) string { return broker.ClipText(s, max) }

func plainExcerpt(s string, max int) string { return broker.PlainExcerpt(s, max) }
