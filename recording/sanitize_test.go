package recording

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// sanitize runs in through a fresh Sanitizer as one Write per chunk and
// returns everything it wrote.
func sanitize(t testing.TB, chunks ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	s := NewSanitizer(&out)
	for _, c := range chunks {
		n, err := s.Write(c)
		if err != nil {
			t.Fatalf("Write(%q): %v", c, err)
		}
		if n != len(c) {
			t.Fatalf("Write(%q) = %d, want %d", c, n, len(c))
		}
	}
	return out.Bytes()
}

var longParams = strings.Repeat("1;", 40) // 80 parameter bytes, over maxCSI

var sanitizeCases = []struct {
	name, in, want string
}{
	// Passed unchanged.
	{"plain text", "hello, world\r\n$ ls -l\r\n", "hello, world\r\n$ ls -l\r\n"},
	{"tabs backspace bell", "a\tb\bc\x07d", "a\tb\bc\x07d"},
	{"SGR colours", "\x1b[31mred\x1b[0m \x1b[1;38;5;208mbold\x1b[m", "\x1b[31mred\x1b[0m \x1b[1;38;5;208mbold\x1b[m"},
	{"cursor moves", "\x1b[2;5Hx\x1b[A\x1b[10C\x1b[K\x1b[2J\x1b[?25l\x1b[?1049h", "\x1b[2;5Hx\x1b[A\x1b[10C\x1b[K\x1b[2J\x1b[?25l\x1b[?1049h"},
	{"two-byte escapes", "\x1b(B\x1b7\x1b8\x1b=\x1bM", "\x1b(B\x1b7\x1b8\x1b=\x1bM"},
	{"UTF-8 text", "café Ûber ś 東京 日本語 ✓ 😀", "café Ûber ś 東京 日本語 ✓ 😀"},
	{"UTF-8 before escape", "東\x1b[31m東\x1b[0m", "東\x1b[31m東\x1b[0m"},
	{"CSI with exactly maxCSI parameter bytes", "a\x1b[" + strings.Repeat("1", 64) + "mb", "a\x1b[" + strings.Repeat("1", 64) + "mb"},
	{"harmless controls inside CSI", "\x1b[3\r1m", "\r\x1b[31m"},
	{"CSI ! p soft reset", "a\x1b[!pb", "a\x1b[!pb"},
	{"doubled ESC", "\x1b\x1b[31mx", "\x1b[31mx"},
	{"C1 CSI SGR normalised to 7 bit", "a\x9b31mb", "a\x1b[31mb"},

	// Removed, surrounding text kept.
	{"OSC 52 clipboard BEL", "a\x1b]52;c;aGVsbG8=\x07b", "ab"},
	{"OSC 52 clipboard ST", "a\x1b]52;c;aGVsbG8=\x1b\\b", "ab"},
	{"OSC 52 clipboard query", "a\x1b]52;c;?\x07b", "ab"},
	{"OSC 0 title", "a\x1b]0;pwned\x07b", "ab"},
	{"OSC 2 title ST", "a\x1b]2;pwned\x1b\\b", "ab"},
	{"OSC 50 font query", "a\x1b]50;?\x07b", "ab"},
	{"OSC 8 hyperlink", "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\ here", "click here"},
	{"OSC with ESC ESC before ST", "a\x1b]0;x\x1b\x1b\\b", "ab"},
	{"OSC with UTF-8 title", "a\x1b]0;日本 title\x07b", "ab"},
	{"DCS DECRQSS", "a\x1bP$qm\x1b\\b", "ab"},
	{"APC", "a\x1b_payload\x1b\\b", "ab"},
	{"PM", "a\x1b^payload\x1b\\b", "ab"},
	{"SOS", "a\x1bXpayload\x1b\\b", "ab"},
	{"CSI 21t title report", "a\x1b[21tb", "ab"},
	{"CSI 14t size report", "a\x1b[14tb", "ab"},
	{"CSI 18t size report", "a\x1b[18tb", "ab"},
	{"CSI 8t resize", "a\x1b[8;100;300tb", "ab"},
	{"CSI 6n DSR", "a\x1b[6nb", "ab"},
	{"CSI 5n DSR", "a\x1b[5nb", "ab"},
	{"CSI ?6n DECXCPR", "a\x1b[?6nb", "ab"},
	{"CSI c DA", "a\x1b[cb", "ab"},
	{"CSI 0c DA", "a\x1b[0cb", "ab"},
	{"CSI >c DA2", "a\x1b[>cb", "ab"},
	{"CSI =c DA3", "a\x1b[=cb", "ab"},
	{"DECRQM", "a\x1b[?25$pb", "ab"},
	{"ANSI DECRQM", "a\x1b[4$pb", "ab"},
	{"DECREQTPARM", "a\x1b[0xb", "ab"},
	{"ENQ", "a\x05b", "ab"},
	{"ESC Z DECID", "a\x1bZb", "ab"},
	{"over-long CSI", "a\x1b[" + longParams + "mb", "ab"},
	{"over-long CSI with 65 parameter bytes", "a\x1b[" + strings.Repeat("1", 65) + "mb", "ab"},
	{"over-long CSI then SGR", "a\x1b[" + longParams + "Hb\x1b[1m", "ab\x1b[1m"},
	{"C1 CSI DSR", "a\x9b6nb", "ab"},
	{"C1 CSI DA", "a\x9bcb", "ab"},
	{"C1 OSC 52 C1 ST", "a\x9d52;c;aGVsbG8=\x9cb", "ab"},
	{"C1 OSC 0 BEL", "a\x9d0;pwned\x07b", "ab"},
	{"C1 OSC 7-bit ST", "a\x9d0;pwned\x1b\\b", "ab"},
	{"C1 DCS", "a\x90$qm\x9cb", "ab"},
	{"C1 APC PM SOS", "a\x9fx\x9cb\x9ex\x9cc\x98x\x9cd", "abcd"},
	{"C1 DECID", "a\x9ab", "ab"},
	{"ESC then C1 CSI", "a\x1b\x9b6nb", "ab"},
	{"UTF-8 encoded C1 CSI", "a\xc2\x9b6nb", "ab"},
	{"UTF-8 encoded C1 OSC", "a\xc2\x9d52;c;?\xc2\x9cb", "ab"},
	{"UTF-8 encoded C1 DECID", "a\xc2\x9ab", "ab"},
	{"UTF-8 encoded C1 CSI SGR", "a\xc2\x9b31mb", "a\x1b[31mb"},
	{"unterminated OSC swallows the rest", "a\x1b]52;c;AAAA rest", "a"},
	{"CAN cancels OSC", "a\x1b]0;t\x18b", "ab"},
	{"SUB cancels OSC after ESC", "a\x1b]0;t\x1b\x1ab", "ab"},
	{"CAN cancels CSI", "a\x1b[6\x18nb", "anb"},
	{"C1 ends CSI", "a\x1b[3\x9b6nb", "ab"},
	{"ESC % coding switch", "a\x1b%@b\x1b%Gc", "a@bGc"},
	{"incomplete UTF-8 dropped", "a\xe6\x9db", "ab"},
	{"invalid UTF-8 continuation is a C1 control", "a\xe0\x9b6nb", "ab"},
	{"stray non-C1 byte passes", "a\xa9\xffb", "a\xa9\xffb"},
	{"incomplete UTF-8 at the end", "a\xe6\x9d", "a"},
	{"UTF-8 character after ESC", "a\x1b東b", "a東b"},
	{"UTF-8 containing 0x9c inside OSC", "a\x1b]0;本\x07b", "ab"},
	{"everything at once", "$ \x1b]0;t\x07cat f\x05\r\n\x1b[6n\x1b[31mok\x1b[0m\x1bZ\x9b>c\x1bP$qm\x1b\\.", "$ cat f\r\n\x1b[31mok\x1b[0m."},
}

func TestSanitizer(t *testing.T) {
	for _, tc := range sanitizeCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sanitize(t, []byte(tc.in)); string(got) != tc.want {
				t.Errorf("Sanitize(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestSanitizerSplit feeds every case in two writes at every split point,
// in three writes at every pair of split points, and byte by byte.
func TestSanitizerSplit(t *testing.T) {
	for _, tc := range sanitizeCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			for i := 0; i <= len(in); i++ {
				if got := sanitize(t, in[:i], in[i:]); string(got) != tc.want {
					t.Fatalf("split at %d: got %q, want %q", i, got, tc.want)
				}
				for j := i; j <= len(in); j++ {
					if got := sanitize(t, in[:i], in[i:j], in[j:]); string(got) != tc.want {
						t.Fatalf("split at %d and %d: got %q, want %q", i, j, got, tc.want)
					}
				}
			}
			var chunks [][]byte
			for i := range in {
				chunks = append(chunks, in[i:i+1])
			}
			if got := sanitize(t, chunks...); string(got) != tc.want {
				t.Fatalf("byte by byte: got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSanitizerWriteError checks that an error of the underlying writer is
// returned.
func TestSanitizerWriteError(t *testing.T) {
	s := NewSanitizer(errWriter{})
	if n, err := s.Write([]byte("x")); err != errTest || n != 0 {
		t.Fatalf("Write = %d, %v; want 0, %v", n, err, errTest)
	}
	// Nothing to write: the writer is not called.
	if n, err := s.Write([]byte("\x1b]0;t\x07")); err != nil || n != 6 {
		t.Fatalf("Write of a dropped sequence = %d, %v; want 6, nil", n, err)
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errTest }

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("test write error")

// checkSanitized asserts the safety properties of sanitized output.
func checkSanitized(t testing.TB, in, out []byte) {
	t.Helper()
	if bytes.IndexByte(out, 0x05) >= 0 {
		t.Fatalf("output of %q contains ENQ: %q", in, out)
	}
	for _, c := range []byte{']', 'P', '_', '^', 'X', 'Z'} {
		if bytes.Contains(out, []byte{0x1b, c}) {
			t.Fatalf("output of %q contains ESC %q: %q", in, c, out)
		}
	}
	// No C1 control, neither as a raw byte nor UTF-8 encoded (U+0080 to
	// U+009F). Bytes 0x80-0xBF are allowed only inside a valid UTF-8
	// character: 東 is E6 9D B1.
	for i := 0; i < len(out); {
		r, n := utf8.DecodeRune(out[i:])
		if n == 1 && out[i] >= 0x80 && out[i] <= 0x9f {
			t.Fatalf("output of %q contains C1 byte %#x at %d: %q", in, out[i], i, out)
		}
		if r >= 0x80 && r <= 0x9f {
			t.Fatalf("output of %q contains UTF-8 encoded C1 %U at %d: %q", in, r, i, out)
		}
		i += n
	}
	// The output only grows when an 8-bit CSI (one byte) is rewritten as
	// ESC [ (two bytes).
	if max := len(in) + bytes.Count(in, []byte{0x9b}); len(out) > max {
		t.Fatalf("output of %q is %d bytes, more than %d: %q", in, len(out), max, out)
	}
}

func FuzzSanitizer(f *testing.F) {
	for _, tc := range sanitizeCases {
		f.Add([]byte(tc.in), uint(len(tc.in)/2))
	}
	f.Add([]byte("\x1b[?1;2$p\x1b[>0;1c\x1b]4;1;?\x07\x1b]10;?\x1b\\"), uint(3))
	f.Add([]byte("\xe6\x9d\x1b]0;x\x07\xc2\xe6\x9d\xb1\xf0\x9f\x98\x80\xf0\x9f"), uint(7))
	f.Add([]byte("\x1b[\x9b\x1b\x1b]\x9d\x07\x9c\x05\x90\x1bP\x1b\\\x1bZ"), uint(5))
	f.Fuzz(func(t *testing.T, in []byte, split uint) {
		out := sanitize(t, in)
		checkSanitized(t, in, out)
		i := int(split % uint(len(in)+1))
		if got := sanitize(t, in[:i], in[i:]); !bytes.Equal(got, out) {
			t.Fatalf("%q split at %d: got %q, one write gave %q", in, i, got, out)
		}
		// Sanitized output passes unchanged: nothing left in it is
		// something the Sanitizer would act on.
		if again := sanitize(t, out); !bytes.Equal(again, out) {
			t.Fatalf("sanitizing %q again gave %q, want it unchanged (input %q)", out, again, in)
		}
	})
}
