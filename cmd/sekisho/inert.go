package main

import (
	"fmt"
	"io"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// inertWriter passes JSON (or logfmt) text through with every invisible
// formatting character written as a \uXXXX escape: bidirectional
// overrides and isolates, zero-width characters, the byte order mark and
// the other Unicode "format" characters. encoding/json and log/slog
// already escape control characters but leave these raw, so a login
// name or a target's error text could reorder or hide what a reviewer
// reads in a terminal. Inside a JSON string the escape decodes to the
// same character, so the JSON stays valid and means the same; only its
// bytes become visible.
type inertWriter struct{ w io.Writer }

func (iw inertWriter) Write(p []byte) (int, error) {
	clean := true
	for i := 0; i < len(p); {
		if p[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if hidden(r) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return iw.w.Write(p)
	}
	out := make([]byte, 0, len(p)+32)
	for i := 0; i < len(p); {
		if p[i] < utf8.RuneSelf {
			out = append(out, p[i])
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if hidden(r) {
			if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
				out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2) // a surrogate pair, as JSON writes it
			} else {
				out = fmt.Appendf(out, `\u%04x`, r)
			}
		} else {
			out = append(out, p[i:i+size]...)
		}
		i += size
	}
	if _, err := iw.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// hidden reports whether r changes or hides text without being seen.
func hidden(r rune) bool {
	return unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029'
}
