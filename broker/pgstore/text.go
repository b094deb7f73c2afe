package pgstore

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"

	"github.com/sekisho/sekisho/broker"
)

// The text index is one row per indexed session in session_text, with
// trigram (pg_trgm) GIN indexes on what was typed and shown: every word of
// a search is a case-insensitive substring match (ILIKE), punctuation
// included, as on SQLite's FTS5 trigram index.

// textCondition is the SQL condition on session_text that every word
// occurs in typed or shown text, adding its arguments to q.
func textCondition(q *query, words []string) string {
	var conds []string
	for _, w := range words {
		p := q.arg("%" + likeEscaper.Replace(w) + "%")
		conds = append(conds, `(typed ILIKE `+p+` OR shown ILIKE `+p+`)`)
	}
	return strings.Join(conds, " AND ")
}

// likeEscaper escapes LIKE's wildcards and its default escape character.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// IndexSessionText stores the searchable text of a session, replacing any
// earlier index of it in one statement: a search sees the old text or the
// new, never neither. Typed and Shown are each cut to
// broker.MaxIndexedText bytes. It returns broker.ErrNotFound if the
// session is not registered.
func (s *Store) IndexSessionText(ctx context.Context, id string, t broker.SessionText) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO session_text (id, files, commands, typed, shown)
		SELECT id, $2, $3, $4, $5 FROM sessions WHERE id=$1
		ON CONFLICT (id) DO UPDATE SET files=excluded.files, commands=excluded.commands, typed=excluded.typed, shown=excluded.shown`,
		text(id), t.Files, t.Commands, broker.ClipText(t.Typed, broker.MaxIndexedText), broker.ClipText(t.Shown, broker.MaxIndexedText))
	if err != nil {
		return fmt.Errorf("index text of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("index text of %s: %w", id, broker.ErrNotFound)
	}
	return nil
}

// SessionsToIndex returns up to limit sessions (all, if limit <= 0) that
// have ended in the register and have no text indexed, oldest first.
func (s *Store) SessionsToIndex(ctx context.Context, limit int) ([]string, error) {
	sql := `SELECT id FROM sessions s WHERE ended_at IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM session_text t WHERE t.id = s.id) ORDER BY started_at, id`
	if limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", limit)
	}
	rows, _ := s.pool.Query(ctx, sql)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("sessions to index: %w", err)
	}
	return out, nil
}

// TextSnippets returns, for each of ids whose indexed text matches search
// (as SessionFilter.Text reads it), a plain-text excerpt of at most
// broker.SnippetBytes around the first place its first word occurs, in
// what was typed if it occurs there, else in what was shown. The excerpt
// is the recording's text, untrusted: whoever shows it escapes it.
func (s *Store) TextSnippets(ctx context.Context, search string, ids []string) (map[string]string, error) {
	out := map[string]string{}
	words := broker.SearchWords(search)
	if len(words) == 0 || len(ids) == 0 {
		return out, nil
	}
	var q query
	q.arg(words[0])
	q.arg(texts(ids))
	cond := textCondition(&q, words)
	rows, _ := s.pool.Query(ctx, `SELECT id,
		CASE WHEN ti > 0 THEN substr(typed, greatest(1, ti-40), 121)
		     WHEN si > 0 THEN substr(shown, greatest(1, si-40), 121)
		     ELSE substr(shown, 1, 121) END,
		CASE WHEN ti > 0 THEN ti > 41 WHEN si > 0 THEN si > 41 ELSE false END
		FROM (SELECT id, typed, shown, strpos(lower(typed), lower($1)) AS ti, strpos(lower(shown), lower($1)) AS si
			FROM session_text WHERE id = ANY($2) AND `+cond+`) m`, q.args...)
	var (
		id, excerpt string
		before      bool // the excerpt does not start at the start
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &excerpt, &before}, func() error {
		e := excerpt
		if r := []rune(e); len(r) == 121 {
			e = strings.TrimRightFunc(string(r[:120]), unicode.IsSpace) + "…"
		}
		if before {
			e = "…" + e
		}
		out[id] = broker.PlainExcerpt(e, broker.SnippetBytes)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("text snippets: %w", err)
	}
	return out, nil
}
