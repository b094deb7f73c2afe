package recording

import (
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendJSONString appends p as a JSON string to dst, as json.Marshal
// would write string(p) but without escaping <, > and & for HTML (a
// recording is not a web page, and every escape costs 6 bytes on disk)
// and without allocating. Invalid UTF-8 becomes U+FFFD, byte by byte, as
// with json.Marshal (written as UTF-8, not escaped); U+2028 and U+2029
// stay escaped.
func appendJSONString(dst, p []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(p); {
		b := p[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, p[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, p[start:i]...)
			dst = append(dst, "\uFFFD"...) // as UTF-8: 3 bytes, not a 6-byte escape
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, p[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, p[start:]...)
	return append(dst, '"')
}
