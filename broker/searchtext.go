package broker

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIndexedText is how much of a session's typed text, and separately of
// its shown text, a store's text index keeps: the first 2 MiB of each. A
// search does not see past it; the recording itself keeps everything.
const MaxIndexedText = 2 << 20

// SnippetBytes bounds an excerpt of a store's TextSnippets.
const SnippetBytes = 200

// SearchWords reads a reviewer's search (SessionFilter.Text) as the words
// that must all occur: whitespace-separated words, or, when the search is
// in double quotes, one phrase. Invalid UTF-8 is replaced and NULs are
// dropped (no index holds them). Every backend reads a search this way.
func SearchWords(q string) []string {
	q = strings.TrimSpace(strings.ReplaceAll(strings.ToValidUTF8(q, "\uFFFD"), "\x00", ""))
	if len(q) >= 2 && q[0] == '"' && q[len(q)-1] == '"' {
		if p := q[1 : len(q)-1]; strings.TrimSpace(p) != "" {
			return []string{p}
		}
		return nil
	}
	return strings.Fields(q)
}

// ClipText makes s valid UTF-8 without NULs and cuts it to at most max
// bytes at a character boundary.
func ClipText(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// PlainExcerpt makes runs of white space, control and format characters
// (among them bidirectional overrides, which could reorder what a reviewer
// reads) one space and cuts the result to at most max bytes, ending it
// with "…" if cut.
func PlainExcerpt(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) <= max {
		return out
	}
	const ellipsis = "…"
	return strings.TrimRight(ClipText(out, max-len(ellipsis)), " ") + ellipsis
}
