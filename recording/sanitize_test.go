package recording

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sekisho/sekisho/internal/hardening"
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
	{"editing and scrolling", "\x1b[5@\x1b[2P\x1b[3L\x1b[M\x1b[4X\x1b[2S\x1b[T\x1b[3b\x1b[Z\x1b[2I\x1b[5G\x1b[5`\x1b[3d\x1b[2E\x1b[F\x1b[1;5f\x1b[a\x1b[e\x1b[3g", "\x1b[5@\x1b[2P\x1b[3L\x1b[M\x1b[4X\x1b[2S\x1b[T\x1b[3b\x1b[Z\x1b[2I\x1b[5G\x1b[5`\x1b[3d\x1b[2E\x1b[F\x1b[1;5f\x1b[a\x1b[e\x1b[3g"},
	{"margins save restore", "\x1b[2;23r\x1b[s\x1b[u\x1b[?69h\x1b[5;70s", "\x1b[2;23r\x1b[s\x1b[u\x1b[?69h\x1b[5;70s"},
	{"SGR with subparameters", "\x1b[38:2::255:0:0m\x1b[4:3m", "\x1b[38:2::255:0:0m\x1b[4:3m"},
	{"cursor style, LEDs, SL SR, DECSCA", "\x1b[2 q\x1b[ q\x1b[1q\x1b[2 @\x1b[ A\x1b[1\"q", "\x1b[2 q\x1b[ q\x1b[1q\x1b[2 @\x1b[ A\x1b[1\"q"},
	{"selective erase", "\x1b[?2J\x1b[?K", "\x1b[?2J\x1b[?K"},
	{"display private modes", "\x1b[?1h\x1b[?7h\x1b[?12;25h\x1b[?47h\x1b[?1047h\x1b[?1048h\x1b[?2026h\x1b[?1034h\x1b[?66h\x1b[?5l", "\x1b[?1h\x1b[?7h\x1b[?12;25h\x1b[?47h\x1b[?1047h\x1b[?1048h\x1b[?2026h\x1b[?1034h\x1b[?66h\x1b[?5l"},
	{"input modes reset", "\x1b[?1000l\x1b[?1006;1000l\x1b[?1004l\x1b[?2004l\x1b[?9l", "\x1b[?1000l\x1b[?1006;1000l\x1b[?1004l\x1b[?2004l\x1b[?9l"},
	{"save and restore modes", "\x1b[?1049;25s\x1b[?1049;25r", "\x1b[?1049;25s\x1b[?1049;25r"},
	{"insert mode", "\x1b[4hx\x1b[4l", "\x1b[4hx\x1b[4l"},

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
	{"DECRQM with several modes", "a\x1b[?1;2004$pb", "ab"},
	{"DECRQTSR DECRQPSR", "a\x1b[1$ub\x1b[2$wc", "abc"},
	{"XTVERSION", "a\x1b[>0qb\x1b[>qc", "abc"},
	{"DECRQCRA checksum", "a\x1b[1;1;1;1;24;80*yb", "ab"},
	{"DECRQDE", "a\x1b[\"vb", "ab"},
	{"DECSR secure reset", "a\x1b[7+pb", "ab"},
	{"DECRQUPSS", "a\x1b[&ub", "ab"},
	{"DECRQKT", "a\x1b[1,wb", "ab"},
	{"DECSCL conformance level", "a\x1b[61;1\"pb", "ab"},
	{"DECTST", "a\x1b[4;1yb", "ab"},
	{"XTREPORTCOLORS XTREPORTSGR", "a\x1b[#Rb\x1b[1;1;2;2#|c", "abc"},
	{"XTSMGRAPHICS query", "a\x1b[?1;1;0Sb", "ab"},
	{"XTQMODKEYS", "a\x1b[?4mb", "ab"},
	{"XTMODKEYS", "a\x1b[>4;2mb\x1b[>4nc", "abc"},
	{"kitty keyboard", "a\x1b[?ub\x1b[>1uc\x1b[=1;1ud\x1b[<ue", "abcde"},
	{"DEC locator", "a\x1b[1;1'zb\x1b[1'{c\x1b['|d\x1b[1;1;1;1'we", "abcde"},
	{"media copy", "a\x1b[5ib\x1b[?5ic", "abc"},
	{"keyboard action mode locks the keyboard", "a\x1b[2hb", "ab"},
	{"ANSI.SYS key redefinition", "a\x1b[65;66pb", "ab"},
	{"X10 mouse", "a\x1b[?9hb", "ab"},
	{"mouse tracking", "a\x1b[?1000hb\x1b[?1001hc\x1b[?1002hd\x1b[?1003he", "abcde"},
	{"mouse encodings", "a\x1b[?1005hb\x1b[?1006hc\x1b[?1015hd\x1b[?1016he", "abcde"},
	{"mouse as ncurses sets it", "a\x1b[?1006;1000hb", "ab"},
	{"focus events", "a\x1b[?1004hb", "ab"},
	{"bracketed paste", "a\x1b[?2004hb", "ab"},
	{"alternate scroll", "a\x1b[?1007hb", "ab"},
	{"colour scheme and resize reports", "a\x1b[?2031hb\x1b[?2048hc", "abc"},
	{"win32 input mode", "a\x1b[?9001hb", "ab"},
	{"VT52 mode", "a\x1b[?2lb", "ab"},
	{"mouse among display modes", "a\x1b[?1049;1000;25hb", "a\x1b[?1049;25hb"},
	{"mouse mode with leading zeros", "a\x1b[?001000hb\x1b[?0025hc", "ab\x1b[?25hc"},
	{"mouse mode wrapping 32 bits", "a\x1b[?4294968296hb", "ab"},
	{"mouse mode with a subparameter", "a\x1b[?1000:1hb", "ab"},
	{"empty mode parameters", "a\x1b[?hb\x1b[?;25;hc", "ab\x1b[?25hc"},
	{"private marker after parameters", "a\x1b[1;?1000hb", "ab"},
	{"parameter after intermediate", "a\x1b[? 1000hb\x1b[2 1qc", "abc"},
	{"private marker twice", "a\x1b[??1000hb", "ab"},
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
	hardening.Report(t, "27", "%d hostile outputs (OSC title and clipboard, DCS, APC, report requests, input modes, C1 controls raw and UTF-8 encoded, CAN/SUB cancels, broken UTF-8): each sanitised to exactly the expected bytes", len(sanitizeCases))
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
	checkSanitizedCSI(t, in, out)
	// The output only grows when an 8-bit CSI (one byte) is rewritten as
	// ESC [ (two bytes).
	if max := len(in) + bytes.Count(in, []byte{0x9b}); len(out) > max {
		t.Fatalf("output of %q is %d bytes, more than %d: %q", in, len(out), max, out)
	}
}

// checkSanitizedCSI asserts that no CSI sequence in sanitized output
// asks the terminal for a report or makes it send input.
func checkSanitizedCSI(t testing.TB, in, out []byte) {
	t.Helper()
	for rest := out; ; {
		i := bytes.Index(rest, []byte("\x1b["))
		if i < 0 {
			return
		}
		rest = rest[i+2:]
		// A CSI is written whole: parameters and intermediates, then the
		// final byte.
		n := 0
		for n < len(rest) && rest[n] >= 0x20 && rest[n] <= 0x3f {
			n++
		}
		if n == len(rest) || rest[n] < 0x40 || rest[n] > 0x7e {
			t.Fatalf("output of %q has an unfinished CSI: %q", in, out)
		}
		body, final := rest[:n], rest[n]
		seq := "\x1b[" + string(body) + string(final)
		if strings.ContainsAny(string(body), "<=>$*'#+&,") {
			t.Fatalf("output of %q holds %q: a report request or keyboard protocol", in, seq)
		}
		if strings.IndexByte("tncxyip", final) >= 0 && !bytes.ContainsAny(body, " !\"") {
			t.Fatalf("output of %q holds %q: a report request", in, seq)
		}
		if len(body) > 0 && body[0] == '?' && final == 'h' {
			for m := range strings.SplitSeq(string(body[1:]), ";") {
				switch strings.TrimLeft(m, "0") {
				case "9", "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1015", "1016", "2004":
					t.Fatalf("output of %q holds %q: an input mode set", in, seq)
				}
			}
		}
		if len(body) > 0 && body[0] == '?' && strings.IndexByte("Sm", final) >= 0 {
			t.Fatalf("output of %q holds %q: a report request", in, seq)
		}
		rest = rest[n+1:]
	}
}

func FuzzSanitizer(f *testing.F) {
	for _, tc := range sanitizeCases {
		f.Add([]byte(tc.in), uint(len(tc.in)/2))
	}
	f.Add([]byte("\x1b[?1;2$p\x1b[>0;1c\x1b]4;1;?\x07\x1b]10;?\x1b\\"), uint(3))
	f.Add([]byte("\xe6\x9d\x1b]0;x\x07\xc2\xe6\x9d\xb1\xf0\x9f\x98\x80\xf0\x9f"), uint(7))
	f.Add([]byte("\x1b[\x9b\x1b\x1b]\x9d\x07\x9c\x05\x90\x1bP\x1b\\\x1bZ"), uint(5))
	f.Add([]byte("\x1b[?1049;1000;2004;25h\x1b[>0q\x9b?1006h\xc2\x9b1;1;1;1;1;1*y"), uint(9))
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
