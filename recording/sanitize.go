package recording

import "io"

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
type Sanitizer struct {
	w     io.Writer
	state sanState
	csi   []byte // parameters and intermediates of the CSI being parsed
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
		s.step(b)
	}
	if len(s.out) > 0 {
		if _, err := s.w.Write(s.out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

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
				if b != 'Z' {
					s.out = append(s.out, 0x1b, b)
				}
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
			if len(s.csi) < maxCSI {
				s.csi = append(s.csi, b)
			} else {
				s.csi = append(s.csi[:0], '!') // poison: dropped at the final byte
			}
		case b == 0x1b:
			s.state = sEsc
		default:
			// Control bytes inside CSI are executed by terminals; keep
			// the harmless ones, drop the sequence otherwise.
			if b == '\r' || b == '\n' || b == '\b' || b == '\t' {
				s.out = append(s.out, b)
			}
		}
	case sString:
		switch b {
		case 0x07, 0x9c: // BEL or C1 ST ends it
			s.state = sGround
		case 0x1b:
			s.state = sStringEsc
		}
	case sStringEsc:
		if b == '\\' {
			s.state = sGround
		} else if b != 0x1b {
			s.state = sString
		}
	}
}

func (s *Sanitizer) csiAllowed(final byte) bool {
	if len(s.csi) > 0 && s.csi[0] == '!' && len(s.csi) == 1 {
		return false
	}
	for _, c := range s.csi {
		if c == '$' { // DECRQM and other requests
			return false
		}
	}
	switch final {
	case 't', 'n', 'c', 'x': // window ops and reports, DSR, DA, DECREQTPARM
		return false
	}
	return len(s.csi) < maxCSI
}
