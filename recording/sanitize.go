package recording

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sanitizer passes terminal output on to a reviewer's terminal with the
// control sequences that could attack the reviewer removed. Recorded
// output is untrusted: a technician or a target can print sequences that
// make the reviewer's terminal answer back (as if the reviewer typed),
// send input of its own accord (mouse, focus and paste reports), read or
// set the clipboard (OSC 52), change the window title (OSC 0/2, CSI t),
// query fonts (OSC 50), report settings (DECRQSS) or add links (OSC 8).
//
// Every OSC, DCS, APC, PM and SOS string is dropped whole, and so is the
// ENQ answer-back byte. CSI sequences pass only when they are known to
// draw: colours, cursor movement, scrolling, margins and screen editing.
// Everything else is dropped, so that a report request or an input mode
// this list has not heard of is dropped too: status and device reports
// (n, c, DECRQM, DECRQCRA, XTVERSION), window operations (t), keyboard
// protocols (CSI > … m, CSI … u with a marker), the DEC locator and
// sequences that do not parse as ECMA-48 says. Of the modes, set and
// reset (SM, RM, DECSET, DECRST, XTSAVE, XTRESTORE), only those that
// change the drawing or what keys send pass (cursor keys, cursor
// visibility, alternate screen, …); the modes that make the terminal
// send input by itself (mouse tracking, focus events, bracketed paste)
// may only be reset. A sequence that sets several modes is written with
// the allowed ones only. Sequences split across writes are handled.
//
// The output is UTF-8 for a UTF-8 terminal: the bytes 0x80-0xBF of a
// UTF-8 character are not C1 controls, while C1 controls, raw or UTF-8
// encoded (U+0080-U+009F), are. Switching the terminal's coding (ESC %)
// is dropped.
type Sanitizer struct {
	w     io.Writer
	state sanState
	csi   []byte // parameters and intermediates of the CSI being parsed
	u8    []byte // an incomplete UTF-8 character
	out   []byte
}

type sanState uint8

const (
	sGround sanState = iota
	sEsc
	sCSI
	sString    // OSC, DCS, APC, PM, SOS body: dropped
	sStringEsc // ESC seen inside a string: ST if followed by '\\'
)

// maxCSI bounds the parameters of one CSI sequence; a longer one is
// dropped whole.
const maxCSI = 64

// NewSanitizer returns a Sanitizer writing to w.
func NewSanitizer(w io.Writer) *Sanitizer { return &Sanitizer{w: w} }

// Write filters p and writes the result. It reports len(p) on success.
func (s *Sanitizer) Write(p []byte) (int, error) {
	s.out = s.out[:0]
	for _, b := range p {
		s.decode(b)
	}
	if len(s.out) > 0 {
		if _, err := s.w.Write(s.out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// decode assembles UTF-8 characters, so that their continuation bytes are
// not taken for C1 controls, and hands on bytes and characters. An
// incomplete or invalid character is dropped.
func (s *Sanitizer) decode(b byte) {
	if len(s.u8) > 0 {
		if b >= 0x80 && b <= 0xbf {
			s.u8 = append(s.u8, b)
			if !utf8.FullRune(s.u8) {
				return
			}
			if r, n := utf8.DecodeRune(s.u8); n == len(s.u8) {
				c := s.u8
				s.u8 = s.u8[:0]
				if r < 0xa0 {
					s.step(byte(r)) // U+0080-U+009F: a C1 control
				} else {
					s.char(c)
				}
				return
			}
		}
		s.u8 = s.u8[:0]
		if b >= 0x80 && b <= 0xbf {
			s.step(b)
			return
		}
	}
	if b >= 0xc2 && b <= 0xf4 {
		s.u8 = append(s.u8, b)
		return
	}
	s.step(b)
}

// char handles a whole multi-byte UTF-8 character.
func (s *Sanitizer) char(c []byte) {
	switch s.state {
	case sGround, sEsc:
		s.out = append(s.out, c...)
		s.state = sGround
	case sStringEsc:
		s.state = sString
	}
}

// step handles one byte: ASCII, a C1 control, or a stray byte 0xa0-0xff.
func (s *Sanitizer) step(b byte) {
	switch s.state {
	case sGround:
		switch {
		case b == 0x1b:
			s.state = sEsc
		case b == 0x05: // ENQ: answer-back
		case b == 0x9b: // C1 CSI
			s.state, s.csi = sCSI, s.csi[:0]
		case b == 0x9d || b == 0x90 || b == 0x9f || b == 0x9e || b == 0x98: // C1 OSC DCS APC PM SOS
			s.state = sString
		case b >= 0x80 && b <= 0x9f: // other C1 controls, DECID (0x9a) among them
		default:
			s.out = append(s.out, b)
		}
	case sEsc:
		switch b {
		case '[':
			s.state, s.csi = sCSI, s.csi[:0]
		case ']', 'P', '_', '^', 'X':
			s.state = sString
		case 0x1b:
			// stay: a doubled ESC
		default:
			if b >= 0x20 && b < 0x7f {
				// A two-byte escape (charset selection, keypad mode, …).
				// ESC Z (DECID) makes the terminal answer: drop it.
				// ESC % switches the terminal's coding: drop it.
				if b != 'Z' && b != '%' {
					s.out = append(s.out, 0x1b, b)
				}
			} else if b >= 0x80 {
				s.state = sGround
				s.step(b) // ESC is dropped, a C1 control acts
				return
			}
			s.state = sGround
		}
	case sCSI:
		switch {
		case b >= 0x40 && b <= 0x7e: // final byte
			s.out = s.appendCSI(s.out, b)
			s.state = sGround
		case b >= 0x20 && b <= 0x3f:
			if len(s.csi) <= maxCSI {
				s.csi = append(s.csi, b) // one more than maxCSI marks it over-long
			}
		case b == 0x1b:
			s.state = sEsc
		case b >= 0x80 && b <= 0x9f: // a C1 control ends it
			s.state = sGround
			s.step(b)
		case b == 0x18 || b == 0x1a: // CAN, SUB cancel it
			s.state = sGround
		default:
			// Control bytes inside CSI are executed by terminals; keep
			// the harmless ones, drop the sequence otherwise.
			if b == '\r' || b == '\n' || b == '\b' || b == '\t' {
				s.out = append(s.out, b)
			}
		}
	case sString:
		switch b {
		case 0x07, 0x9c, 0x18, 0x1a: // BEL or C1 ST ends it, CAN or SUB cancels it
			s.state = sGround
		case 0x1b:
			s.state = sStringEsc
		}
	case sStringEsc:
		if b == '\\' || b == 0x18 || b == 0x1a {
			s.state = sGround
		} else if b != 0x1b {
			s.state = sString
		}
	}
}

// appendCSI appends to out what passes of the CSI sequence parsed, with
// parameters and intermediates s.csi and final byte final.
func (s *Sanitizer) appendCSI(out []byte, final byte) []byte {
	if len(s.csi) > maxCSI {
		return out
	}
	// ECMA-48: an optional private marker (0x3C-0x3F), parameters
	// (0x30-0x3B), then intermediates (0x20-0x2F). Terminals ignore a
	// sequence that does not parse so, or read it their own way: drop it.
	var marker byte
	body := s.csi
	if len(body) > 0 && body[0] >= 0x3c {
		marker, body = body[0], body[1:]
	}
	n := 0
	for n < len(body) && body[n] >= 0x30 && body[n] <= 0x3b {
		n++
	}
	params, inter := body[:n], body[n:]
	for _, c := range inter {
		if c > 0x2f {
			return out
		}
	}
	switch {
	case marker == 0 && len(inter) == 0:
		switch final {
		case 'h', 'l': // SM, RM
			return appendModes(out, 0, params, final, ansiMode)
		}
		if strings.IndexByte(drawingFinals, final) < 0 {
			return out
		}
	case marker == '?' && len(inter) == 0:
		switch final {
		case 'h': // DECSET
			return appendModes(out, marker, params, final, drawingMode)
		case 'l', 's', 'r': // DECRST, XTSAVE, XTRESTORE
			return appendModes(out, marker, params, final, func(m int) bool { return drawingMode(m) || inputMode(m) })
		case 'J', 'K': // DECSED, DECSEL: selective erase
		default:
			return out
		}
	case marker == 0 && len(inter) == 1:
		switch string(inter[0]) + string(final) {
		case " q", " @", " A", "!p", "\"q": // DECSCUSR, SL, SR, DECSTR, DECSCA
		default:
			return out
		}
	default:
		return out
	}
	out = append(out, 0x1b, '[')
	out = append(out, s.csi...)
	return append(out, final)
}

// drawingFinals are the final bytes of the CSI sequences without marker
// or intermediate that pass: SGR, cursor movement, scrolling, margins,
// tab stops, saving the cursor and editing. Left out are, among others,
// n (DSR), c (DA), t (window operations), x (DECREQTPARM), y (DECTST), i
// (media copy) and p (key redefinition in ANSI.SYS).
const drawingFinals = "@ABCDEFGHIJKLMPSTXZ^`abdefgjkmqrsu"

// ansiMode reports whether the ANSI mode m may be set and reset: IRM
// (insert) and LNM (new line). KAM (2) would lock the reviewer's
// keyboard.
func ansiMode(m int) bool { return m == 4 || m == 20 }

// drawingMode reports whether the DEC private mode m may be set and
// reset: it changes how the screen is drawn or what keys send, not
// whether the terminal sends anything by itself. Unknown modes are left
// out, as terminals keep adding input modes (2031 and 2048 report theme
// changes and resizes, 9001 changes key reports on Windows). So is 2
// (DECANM): resetting it enters VT52 mode, where escape sequences read
// differently from what this Sanitizer parses.
func drawingMode(m int) bool {
	switch m {
	case 1, // DECCKM: cursor keys
		4,    // DECSCLM: smooth scroll
		5,    // DECSCNM: reverse video
		6,    // DECOM: origin mode
		7,    // DECAWM: autowrap
		8,    // DECARM: autorepeat
		12,   // cursor blink
		25,   // DECTCEM: cursor visible
		45,   // reverse wraparound
		47,   // alternate screen
		66,   // DECNKM: keypad
		67,   // DECBKM: backarrow key
		69,   // DECLRMM: left and right margins
		95,   // DECNCSM: no clear on column change
		1034, // eight-bit meta
		1036, // meta sends escape
		1039, // alt sends escape
		1047, // alternate screen
		1048, // save cursor
		1049, // alternate screen, saving the cursor
		2026: // synchronized output
		return true
	}
	return false
}

// inputMode reports whether the DEC private mode m makes the terminal
// send input when set: mouse tracking and its encodings, focus events,
// alternate scroll (the wheel sends cursor keys) and bracketed paste.
// They may be reset, not set.
func inputMode(m int) bool {
	switch m {
	case 9, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1015, 1016, 2004:
		return true
	}
	return false
}

// appendModes appends the mode sequence with marker, parameters params
// and final byte final, holding only the modes that keep allows, written
// in decimal; or nothing if it holds none. A parameter that is not a
// plain number (empty, a subparameter, too long to be a mode, which a
// terminal could read modulo some power of two) is left out.
func appendModes(out []byte, marker byte, params []byte, final byte, keep func(int) bool) []byte {
	start := len(out)
	for p := range bytes.SplitSeq(params, []byte{';'}) {
		m, ok := modeNumber(p)
		if !ok || !keep(m) {
			continue
		}
		if len(out) == start {
			out = append(out, 0x1b, '[')
			if marker != 0 {
				out = append(out, marker)
			}
		} else {
			out = append(out, ';')
		}
		out = strconv.AppendInt(out, int64(m), 10)
	}
	if len(out) == start {
		return out
	}
	return append(out, final)
}

// modeNumber returns the value of a mode parameter of digits only, and
// whether it has one below 100000.
func modeNumber(p []byte) (int, bool) {
	if len(p) == 0 {
		return 0, false
	}
	m := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, false
		}
		if m = m*10 + int(c-'0'); m >= 100000 {
			return 0, false
		}
	}
	return m, true
}
