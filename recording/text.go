package recording

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Text is what a session's recording holds as text, for search and for
// a reviewer's overview. Everything in it comes from the recording and is
// untrusted: it is plain text with control sequences removed, but whoever
// shows it must still escape it.
type Text struct {
	// Typed is what the technician typed on terminals, line by line, as
	// the line editor left it (backspace, ^U and ^W applied, escape
	// sequences such as arrow keys removed); input on channels without a
	// terminal when it is text; exec commands; and one line per file
	// transfer or sftp operation ("upload /etc/hosts (…)"), so that a
	// search for a path finds sftp sessions too. A line typed after a
	// prompt that asks for a password, passphrase, PIN, OTP, token or
	// secret is replaced by "[hidden input]".
	Typed string
	// Shown is terminal and exec output, with escape sequences (colours,
	// cursor movement, OSC links and titles, DCS strings) removed, carriage
	// returns as line ends, backspaces applied and blank lines left out.
	// Chunks that are not text (binary output, file data) are skipped, as
	// are sftp and port-forward channels.
	Shown string
	// Files counts file transfers (x-file events: sftp, scp, rsync).
	Files int
	// Commands counts exec commands and command lines entered on terminals
	// (and on shells without one), hidden input not included.
	Commands int
}

// TimelineEvent is one thing that happened in a session, for a reviewer
// to jump to in the player of its channel.
type TimelineEvent struct {
	Channel int       `json:"channel"` // 1-based, as Channels numbers them
	Time    float64   `json:"time"`    // seconds from the start of its channel (what a player of that channel seeks to)
	At      time.Time `json:"at"`      // wall clock
	// Kind is "command" (a typed line or exec), "file", "file-op",
	// "signal", "exit", "forward", "end", "subsystem", "parse-error", or
	// "moderator": a moderator of the session joined or left, held or
	// released the technician's input, said something or ended it.
	Kind string `json:"kind"`
	Text string `json:"text"` // one line, untrusted: control characters replaced, cut at 200 bytes
}

// MaxTimelineEvents bounds a timeline, so that a session of a million
// keystrokes cannot make a reviewer's page (or the server) unbounded.
// When a session has more, the timeline holds its first events (channels
// in order) and its last one is an "end" event saying it was cut.
const MaxTimelineEvents = 5000

// maxTimelineText bounds the text of a timeline event, in bytes.
const maxTimelineText = 200

// maxLineBytes bounds a line being reconstructed: a typed line keeps its
// first 4 KiB, an output line longer than that is split.
const maxLineBytes = 4 << 10

// SessionText extracts the typed and shown text of session id's recording
// under root, each bounded to max bytes (cut at a character boundary; 0
// or less: unbounded). The whole recording is read in bounded memory,
// whatever max is, so that Files and Commands count all of it. A channel
// whose last event was cut short (ErrTruncated) contributes what comes
// before; any other error reading the recording is returned.
func SessionText(root, id string, max int) (Text, error) {
	if max <= 0 {
		max = -1
	}
	x := &extractor{typed: textBuffer{max: max}, shown: textBuffer{max: max}}
	if err := x.run(root, id); err != nil {
		return Text{}, err
	}
	return Text{Typed: x.typed.b.String(), Shown: x.shown.b.String(), Files: x.files, Commands: x.commands}, nil
}

// Timeline returns what happened in session id's recording under root:
// command lines entered on terminals (at the moment Enter was pressed,
// as typed with backspace applied; hidden input as SessionText describes
// left out), exec commands, subsystems, file transfers and operations,
// signals, exit statuses, port forwards, channel ends and what the
// moderators of a moderated session did, ordered by wall clock. At is only as exact as a channel's start, which the
// recording keeps to the second; Time is exact within its channel. At
// most MaxTimelineEvents events are returned.
func Timeline(root, id string) ([]TimelineEvent, error) {
	x := &extractor{timeline: true}
	if err := x.run(root, id); err != nil {
		return nil, err
	}
	events, n := x.events, len(x.events)
	if x.cut {
		n-- // the marker of a cut stays last
	}
	slices.SortStableFunc(events[:n], func(a, b TimelineEvent) int { return a.At.Compare(b.At) })
	if events == nil {
		events = []TimelineEvent{}
	}
	return events, nil
}

// extractor reads a recording's channels in order for SessionText or
// Timeline.
type extractor struct {
	typed, shown    textBuffer
	files, commands int

	timeline bool
	events   []TimelineEvent
	cut      bool // the timeline is full
}

func (x *extractor) run(root, id string) error {
	chans, err := Channels(root, id)
	if err != nil {
		return err
	}
	for i, ch := range chans {
		if err := x.channel(i+1, ch); err != nil {
			return err
		}
		if x.cut {
			break
		}
	}
	return nil
}

func (x *extractor) channel(n int, ch ChannelFile) error {
	cr, err := OpenChannel(ch)
	if err != nil {
		return err
	}
	defer cr.Close()
	h := cr.Header()
	c := &channelText{x: x, n: n, start: time.Unix(h.Timestamp, 0).UTC(), pty: h.PTY, kind: h.Kind}
	if h.Kind == "forward" {
		c.add(0, "forward", "to "+h.Command)
	}
	for !x.cut {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrTruncated) {
			c.add(c.last, "end", "the recording ends with a truncated event (its write failed; nothing after it was forwarded)")
			break
		}
		if err != nil {
			return err
		}
		c.event(e)
	}
	c.finish()
	return nil
}

// channelText is the state of one channel being read: the line the
// technician is typing, the output line being shown, and the escape
// sequences each is in the middle of.
type channelText struct {
	x     *extractor
	n     int
	start time.Time
	pty   bool
	kind  string
	last  float64 // time of the last event

	in, out           escapeFilter
	inCarry, outCarry []byte // an incomplete UTF-8 character at the end of a raw chunk
	errCarry          []byte

	typing     lineBuffer
	typingOn   bool // a line has begun
	typingHide bool // it began after a prompt for a secret
	showing    lineBuffer
	outCR      bool // a carriage return was shown: the line ends, unless a line feed follows
}

func (c *channelText) event(e Event) {
	c.last = e.Time
	t := e.Time
	switch e.Code {
	case "o":
		// On a terminal, output that is not UTF-8 is recorded with
		// U+FFFD (and again, exact, as x-o-bytes): binary, skipped.
		if !strings.ContainsRune(e.Data, utf8.RuneError) {
			c.output(e.Data)
		}
	case "i":
		if !strings.ContainsRune(e.Data, utf8.RuneError) {
			c.input(t, e.Data)
		}
	case "x-stdout", "x-stderr", "x-stdin":
		if c.kind == "subsystem" || c.kind == "forward" {
			return // sftp packets and tunnelled bytes: not typed or shown
		}
		if e.Code != "x-stdin" && c.x.shown.full() {
			// The output of a channel without a terminal serves only the
			// shown text (input is hidden after a prompt on terminals
			// alone): once that is full, a gigabyte of output is not read.
			return
		}
		b, err := e.Bytes()
		if err != nil {
			return
		}
		switch e.Code {
		case "x-stdout":
			if s, ok := rawText(&c.outCarry, b); ok {
				c.output(s)
			}
		case "x-stderr":
			if s, ok := rawText(&c.errCarry, b); ok {
				c.output(s)
			}
		default:
			if s, ok := rawText(&c.inCarry, b); ok {
				c.input(t, s)
			}
		}
	case "x-exec":
		c.x.commands++
		c.x.typed.write(typedText(e.Data) + "\n")
		c.add(t, "command", e.Data)
	case "x-subsystem":
		c.add(t, "subsystem", e.Data)
	case "x-file", "x-file-op":
		text := fileText(e.Code, e.Data)
		c.x.typed.write(typedText(text) + "\n")
		if e.Code == "x-file" {
			c.x.files++
			c.add(t, "file", text)
		} else {
			c.add(t, "file-op", text)
		}
	case "x-file-parse-error":
		c.add(t, "parse-error", fileText(e.Code, e.Data))
	case "x-sftp-refused":
		c.add(t, "file-op", "sftp request refused: "+e.Data)
	case "x-signal":
		c.add(t, "signal", "signal "+e.Data)
	case "x-break":
		c.add(t, "signal", "break")
	case "x-exit-status":
		c.add(t, "exit", "exit status "+e.Data)
	case "x-exit-signal":
		c.add(t, "exit", "killed by signal "+e.Data)
	case "x-start-refused":
		c.add(t, "end", "refused to start: "+e.Data)
	case "x-forward-failed":
		c.add(t, "forward", "failed: "+e.Data)
	case "x-close":
		c.add(t, "end", closeText(c.kind, e.Data))
	case "x-moderator":
		c.add(t, "moderator", e.Data)
	default:
		if req, ok := strings.CutPrefix(e.Code, "x-malformed-"); ok {
			c.add(t, "parse-error", "malformed "+word(req)+" request: "+e.Data)
		}
	}
}

// output adds shown text.
func (c *channelText) output(s string) {
	for _, r := range s {
		if !c.out.pass(r) {
			continue
		}
		if c.outCR {
			c.outCR = false
			c.endShown()
			if r == '\n' {
				continue
			}
		}
		switch {
		case r == '\n':
			c.endShown()
		case r == '\r':
			c.outCR = true
		case r == '\b':
			c.showing.backspace()
		case r == '\t' || !isControl(r):
			if !c.showing.fits(r) {
				c.endShown()
			}
			c.showing.add(r)
		}
	}
}

func (c *channelText) endShown() {
	if len(c.showing.b) > 0 {
		c.x.shown.write(string(c.showing.b) + "\n")
	}
	c.showing.reset()
}

// input adds typed text, as a line editor reads it.
func (c *channelText) input(t float64, s string) {
	for _, r := range s {
		if !c.in.pass(r) {
			continue
		}
		switch {
		case r == '\r' || r == '\n':
			c.endTyped(t, true)
		case r == 0x7f || r == '\b':
			c.typing.backspace()
		case r == 0x15: // ^U
			c.typing.reset()
		case r == 0x17: // ^W
			c.typing.deleteWord()
		case r == 0x03: // ^C: the line is abandoned, not entered
			c.endTyped(t, false)
		case r == '\t' || !isControl(r):
			if !c.typingOn {
				c.typingOn = true
				c.typingHide = c.pty && c.promptAsksSecret()
			}
			c.typing.add(r)
		}
	}
}

// endTyped ends the line being typed; entered is false for a line
// abandoned (^C) or left unfinished at the end of the channel.
func (c *channelText) endTyped(t float64, entered bool) {
	line, hide := string(c.typing.b), c.typingHide
	c.typing.reset()
	c.typingOn, c.typingHide = false, false
	if strings.TrimSpace(line) == "" {
		return
	}
	if hide {
		c.x.typed.write("[hidden input]\n")
		return
	}
	c.x.typed.write(line + "\n")
	if entered && (c.pty || c.kind == "shell") {
		c.x.commands++
		c.add(t, "command", line)
	}
}

// promptAsksSecret reports whether the output line the technician is
// typing after is a prompt for a secret: it ends with ':' and names one.
// What is typed there the terminal does not echo, but the recording has
// it; it must not spread into a search index or a timeline.
func (c *channelText) promptAsksSecret() bool {
	if c.outCR {
		return false
	}
	p := strings.ToLower(strings.TrimSpace(string(c.showing.b)))
	if !strings.HasSuffix(p, ":") {
		return false
	}
	for _, w := range []string{"password", "passphrase", "passcode", "pin", "otp", "one-time", "verification code", "token", "secret"} {
		if strings.Contains(p, w) {
			return true
		}
	}
	return false
}

// finish ends the lines left open at the end of the channel.
func (c *channelText) finish() {
	c.endShown()
	c.endTyped(c.last, false)
}

// add appends a timeline event, unless the timeline is not wanted or
// full; the last place of a full timeline says it was cut.
func (c *channelText) add(t float64, kind, text string) {
	x := c.x
	if !x.timeline || x.cut {
		return
	}
	if math.IsNaN(t) || t < 0 || t > 1e9 {
		t = 0
	}
	e := TimelineEvent{Channel: c.n, Time: t, At: c.start.Add(time.Duration(t * float64(time.Second))), Kind: kind, Text: timelineText(text)}
	if len(x.events) == MaxTimelineEvents-1 {
		e.Kind, e.Text = "end", fmt.Sprintf("timeline cut at %d events: the recording has more", MaxTimelineEvents)
		x.cut = true
	}
	x.events = append(x.events, e)
}

// escapeFilter follows ECMA-48 escape sequences through a stream of
// characters: pass reports whether a character is outside any sequence.
// CSI sequences end at their final byte, OSC, DCS, SOS, PM and APC
// strings at ST or BEL (so an OSC 8 link keeps its text and drops its
// URL), SS2/SS3 after one character; C1 controls count as their ESC
// forms.
type escapeFilter struct{ state uint8 }

const (
	fGround uint8 = iota
	fEsc
	fEscIntermediate
	fSingleShift
	fCSI
	fString
	fStringEsc
)

func (f *escapeFilter) pass(r rune) bool {
	switch f.state {
	case fGround:
		switch {
		case r == 0x1b:
			f.state = fEsc
		case r == 0x9b:
			f.state = fCSI
		case r == 0x90 || r == 0x98 || r == 0x9d || r == 0x9e || r == 0x9f:
			f.state = fString
		case r == 0x8e || r == 0x8f:
			f.state = fSingleShift
		case r >= 0x80 && r < 0xa0:
		default:
			return true
		}
	case fEsc:
		switch {
		case r == '[':
			f.state = fCSI
		case r == ']' || r == 'P' || r == 'X' || r == '^' || r == '_':
			f.state = fString
		case r == 'N' || r == 'O':
			f.state = fSingleShift
		case r == 0x1b:
		case r >= 0x20 && r <= 0x2f:
			f.state = fEscIntermediate
		default:
			f.state = fGround
		}
	case fEscIntermediate:
		if r < 0x20 || r > 0x2f {
			f.state = fGround
		}
	case fSingleShift:
		f.state = fGround
	case fCSI:
		switch {
		case r >= 0x40 && r <= 0x7e, r == 0x18, r == 0x1a: // final byte, CAN, SUB
			f.state = fGround
		case r == 0x1b:
			f.state = fEsc
		}
	case fString:
		switch r {
		case 0x07, 0x9c, 0x18, 0x1a: // BEL, ST, CAN, SUB
			f.state = fGround
		case 0x1b:
			f.state = fStringEsc
		}
	case fStringEsc:
		switch r {
		case '\\':
			f.state = fGround
		case 0x1b:
		default:
			f.state = fString
		}
	}
	return false
}

// lineBuffer is a line being reconstructed, at most maxLineBytes.
type lineBuffer struct{ b []byte }

func (l *lineBuffer) fits(r rune) bool { return len(l.b)+utf8.RuneLen(r) <= maxLineBytes }

func (l *lineBuffer) add(r rune) {
	if l.fits(r) {
		l.b = utf8.AppendRune(l.b, r)
	}
}

func (l *lineBuffer) backspace() {
	_, n := utf8.DecodeLastRune(l.b)
	l.b = l.b[:len(l.b)-n]
}

// deleteWord removes the last word and the blanks after it, as ^W does.
func (l *lineBuffer) deleteWord() {
	l.b = bytes.TrimRight(l.b, " \t")
	l.b = l.b[:bytes.LastIndexAny(l.b, " \t")+1]
}

func (l *lineBuffer) reset() { l.b = l.b[:0] }

// textBuffer collects text up to max bytes (max < 0: unbounded), cut at
// a character boundary.
type textBuffer struct {
	b   strings.Builder
	max int
}

// full reports whether nothing more can be written.
func (t *textBuffer) full() bool { return t.max >= 0 && t.b.Len() >= t.max }

func (t *textBuffer) write(s string) {
	if t.max >= 0 {
		room := t.max - t.b.Len()
		if room <= 0 {
			return
		}
		if len(s) > room {
			for room > 0 && !utf8.RuneStart(s[room]) {
				room--
			}
			s = s[:room]
		}
	}
	t.b.WriteString(s)
}

// rawText returns the exact bytes b of a channel without a terminal as
// text, holding back a character split across chunks in carry, or false
// for a chunk that is not text (not UTF-8, or with NULs).
func rawText(carry *[]byte, b []byte) (string, bool) {
	if len(*carry) > 0 {
		b = append(append([]byte(nil), *carry...), b...)
		*carry = (*carry)[:0]
	}
	if cut := incompleteTail(b); cut > 0 {
		*carry = append(*carry, b[len(b)-cut:]...)
		b = b[:len(b)-cut]
	}
	if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		*carry = (*carry)[:0]
		return "", false
	}
	return string(b), true
}

// isControl reports C0 and C1 controls and DEL.
func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r < 0xa0) }

// typedText is s for Typed: valid UTF-8 without controls other than tab
// and line feed.
func typedText(s string) string {
	return strings.Map(func(r rune) rune {
		if r != '\t' && r != '\n' && isControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// timelineText makes s one line of at most maxTimelineText bytes: white
// space controls become spaces, other controls and format characters
// (bidirectional overrides among them) U+FFFD, and a cut ends with "…".
func timelineText(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return ' '
		case isControl(r) || unicode.Is(unicode.Cf, r):
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= maxTimelineText {
		return s
	}
	const ellipsis = "…"
	cut := maxTimelineText - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// fileText describes an x-file, x-file-op or x-file-parse-error event in
// one line: "upload /etc/hosts (220 bytes, sha256 0123456789abcdef…) via
// sftp". Data that is not the JSON expected is given as it is.
func fileText(code, data string) string {
	var d fileEventData
	if json.Unmarshal([]byte(data), &d) != nil {
		return word(code) + " " + data
	}
	var b strings.Builder
	switch code {
	case "x-file":
		b.WriteString(word(d.Direction))
		if d.Path != "" || len(d.Paths) == 0 {
			b.WriteString(" " + d.Path)
		}
		for i, p := range d.Paths {
			if i == 4 {
				fmt.Fprintf(&b, " and %d more", len(d.Paths)-i)
				break
			}
			b.WriteString(" " + p)
		}
		if d.Name != "" {
			b.WriteString(" as " + d.Name)
		}
		var about []string
		if d.Size != nil {
			about = append(about, fmt.Sprintf("%d bytes", *d.Size))
		}
		if sum := word(d.SHA256); sum != "" {
			about = append(about, "sha256 "+sum[:min(len(sum), 16)]+"…")
		}
		if d.HashNote != "" {
			about = append(about, d.HashNote)
		}
		if d.PathTruncated {
			about = append(about, "path cut")
		}
		if len(about) > 0 {
			b.WriteString(" (" + strings.Join(about, ", ") + ")")
		}
	case "x-file-op":
		b.WriteString(word(d.Op) + " " + d.Path)
		if d.To != "" {
			b.WriteString(" -> " + d.To)
		}
		if d.PathTruncated {
			b.WriteString(" (path cut)")
		}
	default:
		b.WriteString("transfers no longer followed: " + d.Error)
	}
	if p := word(d.Protocol); p != "" {
		b.WriteString(" via " + p)
	}
	return b.String()
}

// closeText describes an x-close event: a channel closed, or a port
// forward with its byte counts.
func closeText(kind, data string) string {
	var counts struct {
		Destination string `json:"destination"`
		BytesIn     int64  `json:"bytes_in"`
		BytesOut    int64  `json:"bytes_out"`
	}
	if kind != "forward" || json.Unmarshal([]byte(data), &counts) != nil {
		return "channel closed"
	}
	return fmt.Sprintf("forward to %s closed: %d bytes in, %d bytes out", counts.Destination, counts.BytesIn, counts.BytesOut)
}
