package recording

import (
	"io"
	"unicode/utf8"
)

// Sanitizer passes terminal output on to a reviewer's terminal with the
// control sequences that could attack the reviewer removed. Recorded
// output is untrusted: a technician or a target can print sequences that
// make the reviewer's terminal answer back (as if the reviewer typed),
// read or set the clipboard (OSC 52), change the window title (OSC 0/2,
// CSI t), query fonts (OSC 50), report settings (DECRQSS) or add links
// (OSC 8).
//
// Colours, cursor movement and screen editing (CSI sequences other than
// the reporting ones) pass. Every OSC, DCS, APC, PM and SOS string is
// dropped whole, as are the CSI sequences that report or manipulate the
// window (final byte 't'), report status (n), report device attributes
// (c), request modes (p with '$'), and the ENQ answer-back byte.
// Sequences split across writes are handled.
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
			if s.csiAllowed(b) {
				s.out = append(s.out, 0x1b, '[')
				s.out = append(s.out, s.csi...)
				s.out = append(s.out, b)
			}
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

func (s *Sanitizer) csiAllowed(final byte) bool {
	for _, c := range s.csi {
		if c == '$' { // DECRQM and other requests
			return false
		}
	}
	switch final {
	case 't', 'n', 'c', 'x': // window ops and reports, DSR, DA, DECREQTPARM
		return false
	}
	return len(s.csi) <= maxCSI
}
