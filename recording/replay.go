package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ReplayOptions controls terminal replay.
type ReplayOptions struct {
	// Speed multiplies playback speed; 0 means 1. Instant plays without
	// waiting.
	Speed   float64
	Instant bool
	// MaxIdle caps each pause; 0 means 2 seconds.
	MaxIdle time.Duration
	// Channel limits replay to one channel (1-based); 0 replays all.
	Channel int
	// From starts each channel's replay at this time of its recording, the
	// time that WriteEvents lists. The place is found through the seek
	// index (see index.go), so starting late in a large recording does not
	// read what comes before. On a terminal channel the output of the
	// last 256 to 512 KiB of recording before From is written at once
	// first, to draw the screen as it was; nothing else before From is
	// shown.
	From time.Duration
	// EventsInline shows, besides output, the technician's input and
	// every recorded event as marker lines. Without it, markers show only
	// file transfers and operations, refusals, exit statuses and what
	// moderators did.
	EventsInline bool
}

// maxFastForward bounds the fast-forward output held back until the
// channel is known to go on past From; the index keeps it far smaller.
const maxFastForward = 8 << 20

// Replay writes the recorded output of session id to w in time, through a
// Sanitizer, so that nothing recorded can act on the reviewer's terminal.
// Events other than output are shown as marker lines of their own, their
// untrusted text quoted (see ReplayOptions.EventsInline).
func Replay(ctx context.Context, w io.Writer, root, id string, opt ReplayOptions) error {
	chans, err := Channels(root, id)
	if err != nil {
		return err
	}
	if len(chans) == 0 {
		return ErrNoChannels
	}
	if opt.Speed <= 0 {
		opt.Speed = 1
	}
	if opt.MaxIdle <= 0 {
		opt.MaxIdle = 2 * time.Second
	}
	opt.From = max(opt.From, 0)
	for i, ch := range chans {
		if opt.Channel != 0 && opt.Channel != i+1 {
			continue
		}
		if err := replayChannel(ctx, w, ch, opt); err != nil {
			return err
		}
	}
	return nil
}

func replayChannel(ctx context.Context, w io.Writer, ch ChannelFile, opt ReplayOptions) error {
	cr, err := OpenChannel(ch)
	if err != nil {
		return err
	}
	defer cr.Close()
	f := cr.src.(*os.File)
	h := cr.Header()
	from := ""
	if opt.From > 0 {
		from = ", from " + opt.From.String()
	}
	if _, err := fmt.Fprintf(w, "\r\n\x1b[7m sekisho replay: channel %d, %s%s \x1b[0m\r\n", h.Channel, banner(h), from); err != nil {
		return err
	}
	if opt.From > 0 {
		off, err := seekOffset(f, ch.Path, cr.off, opt.From.Seconds())
		if err != nil {
			return fmt.Errorf("%s: seek: %w", ch.Name, err)
		}
		if err := cr.seek(off); err != nil {
			return err
		}
	}
	// A fresh Sanitizer per channel: a sequence left open at the end of
	// one channel must not swallow the next.
	p := &player{ctx: ctx, w: w, san: NewSanitizer(w), opt: opt, pty: h.PTY, from: opt.From.Seconds(), playing: opt.From == 0}
	for {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrTruncated) {
			if err := p.flushInput(); err != nil {
				return err
			}
			return p.marker(fmt.Sprintf("sekisho replay: channel %d ends with a truncated event (its write failed; nothing after it was forwarded)", h.Channel))
		}
		if err != nil {
			return err
		}
		if err := p.event(ch.Name, e); err != nil {
			return err
		}
	}
	if err := p.flushInput(); err != nil {
		return err
	}
	if !p.playing {
		return p.marker(fmt.Sprintf("sekisho replay: channel %d has nothing at or after %s", h.Channel, opt.From))
	}
	return nil
}

// player replays the events of one channel.
type player struct {
	ctx     context.Context
	w       io.Writer
	san     *Sanitizer
	opt     ReplayOptions
	pty     bool
	from    float64 // seconds
	playing bool    // From is reached
	last    float64 // the time of the last event shown
	ff      []byte  // terminal output before From, held back
	input   inputMarker
}

// event shows e, or keeps it for the fast-forward while From is not
// reached.
func (p *player) event(name string, e Event) error {
	if !p.playing {
		if e.Time < p.from {
			if p.pty && e.Code == "o" {
				p.ff = append(p.ff, e.Data...)
				if len(p.ff) > maxFastForward {
					if _, err := p.san.Write(p.ff); err != nil {
						return err
					}
					p.ff = p.ff[:0]
				}
			}
			return nil
		}
		p.playing, p.last = true, p.from
		if len(p.ff) > 0 {
			if _, err := p.san.Write(p.ff); err != nil {
				return err
			}
			p.ff = nil
		}
	}
	var out []byte
	switch e.Code {
	case "o":
		out = []byte(e.Data)
	case "x-stdout", "x-stderr":
		b, err := e.Bytes()
		if err != nil {
			return fmt.Errorf("%s: bad %s event at %.3fs: %w", name, e.Code, e.Time, err)
		}
		out = printable(b)
	case "i", "x-stdin":
		if !p.opt.EventsInline {
			return nil
		}
		b, err := e.Bytes()
		if err != nil {
			return fmt.Errorf("%s: bad %s event at %.3fs: %w", name, e.Code, e.Time, err)
		}
		if err := p.wait(e.Time); err != nil {
			return err
		}
		if p.input.add(b) {
			return p.flushInput()
		}
		return nil
	default:
		text, ok := markerFor(e, p.opt.EventsInline)
		if !ok {
			return nil
		}
		if err := p.wait(e.Time); err != nil {
			return err
		}
		if err := p.flushInput(); err != nil {
			return err
		}
		return p.marker(text)
	}
	if err := p.wait(e.Time); err != nil {
		return err
	}
	if p.input.binary {
		// Binary input is not echoed: show it before what answers it.
		if err := p.flushInput(); err != nil {
			return err
		}
	}
	_, err := p.san.Write(out)
	return err
}

// wait pauses until the time of an event at t, as scaled and capped.
func (p *player) wait(t float64) error {
	defer func() { p.last = t }()
	if p.opt.Instant {
		return nil
	}
	d := time.Duration((t - p.last) / p.opt.Speed * float64(time.Second))
	d = min(d, p.opt.MaxIdle)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.ctx.Done():
		return p.ctx.Err()
	case <-timer.C:
		return nil
	}
}

// marker writes text, which must be safe, as a line of its own. It does
// not pass through the Sanitizer, so a sequence that recorded output left
// open cannot swallow it; the Sanitizer holds such a sequence back until
// it is complete, so the terminal is not inside one.
func (p *player) marker(text string) error {
	_, err := io.WriteString(p.w, "\r\n\x1b[7m "+text+" \x1b[0m\r\n")
	return err
}

// flushInput shows the input gathered, if any.
func (p *player) flushInput() error {
	text, ok := p.input.take()
	if !ok {
		return nil
	}
	return p.marker(text)
}

// banner describes a channel in one line, with the untrusted command
// quoted so it cannot carry control characters.
func banner(h Header) string {
	switch h.Kind {
	case "shell":
		return fmt.Sprintf("shell %dx%d", h.Width, h.Height)
	default:
		return fmt.Sprintf("%s %s", h.Kind, strconv.Quote(h.Command))
	}
}

// printable returns b for display when it is text, or a note of its size
// when it is binary (file transfer data, for example).
func printable(b []byte) []byte {
	if utf8.Valid(b) && !bytes.ContainsRune(b, 0) {
		return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return fmt.Appendf(nil, "[%d bytes of binary data]\r\n", len(b))
}

// WriteEvents writes every event of session id to w, one per line, with
// data quoted: what was typed and what was shown, for review and search.
func WriteEvents(w io.Writer, root, id string) error {
	chans, err := Channels(root, id)
	if err != nil {
		return err
	}
	for i, ch := range chans {
		cr, err := OpenChannel(ch)
		if err != nil {
			return err
		}
		h := cr.Header()
		fmt.Fprintf(w, "# channel %d: %s pty=%v\n", i+1, banner(h), h.PTY)
		for {
			e, err := cr.Next()
			if err == io.EOF {
				break
			}
			if errors.Is(err, ErrTruncated) {
				fmt.Fprintf(w, "# channel %d ends with a truncated event (its write failed; nothing after it was forwarded)\n", i+1)
				break
			}
			if err != nil {
				cr.Close()
				return err
			}
			data := e.Data
			if b, err := e.Bytes(); err == nil {
				data = string(b)
			}
			fmt.Fprintf(w, "%10.3f %d %-13s %s\n", e.Time, i+1, e.Code, strconv.Quote(data))
		}
		cr.Close()
	}
	return nil
}

// Markers. Everything in a marker that comes from the recording is
// untrusted: text is quoted by strconv.Quote (control, format and
// non-printing characters escaped, invalid UTF-8 as \x..) and cut at
// maxMarkerText bytes; names are cut down to letters, digits and dashes.
const maxMarkerText = 200

// quoted returns s quoted and cut for a marker.
func quoted(s string) string {
	head, more := cutText(s, len(s))
	return strconv.Quote(head) + more
}

// escaped returns s escaped as by quoted, without the quotes.
func escaped(s string) string {
	head, more := cutText(s, len(s))
	q := strconv.Quote(head)
	return q[1:len(q)-1] + more
}

// cutText cuts s, the first bytes of n, at maxMarkerText bytes and says
// so when anything is left out.
func cutText(s string, n int) (head, more string) {
	if len(s) > maxMarkerText {
		cut := maxMarkerText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if n > len(s) {
		more = fmt.Sprintf("… (%d bytes)", n)
	}
	return s, more
}

// word returns s with only letters, digits, '-' and '_', at most 32 bytes,
// for names such as a protocol or an event code.
func word(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return -1
	}, s)
	return s[:min(len(s), 32)]
}

// fileEventData is the data of x-file, x-file-op and x-file-parse-error
// events: a JSON object, the fields of all three.
type fileEventData struct {
	Protocol      string   `json:"protocol"`
	Direction     string   `json:"direction"`
	Op            string   `json:"op"`
	Path          string   `json:"path"`
	To            string   `json:"to"`
	Name          string   `json:"name"`
	PathTruncated bool     `json:"path_truncated"`
	Size          *uint64  `json:"size"`
	SHA256        string   `json:"sha256"`
	HashNote      string   `json:"hash_note"`
	Paths         []string `json:"paths"`
	Content       string   `json:"content"`
	Error         string   `json:"error"`
}

// fileMarker describes a file event in one line, or false when its data
// is not the JSON object expected.
func fileMarker(code, data string) (string, bool) {
	var d fileEventData
	if json.Unmarshal([]byte(data), &d) != nil {
		return "", false
	}
	var b strings.Builder
	b.WriteString(word(d.Protocol))
	switch code {
	case "x-file":
		b.WriteString(" " + word(d.Direction))
		if d.Path != "" || len(d.Paths) == 0 {
			b.WriteString(" " + quoted(d.Path))
		}
		for i, p := range d.Paths {
			if i == 4 {
				fmt.Fprintf(&b, " and %d more", len(d.Paths)-i)
				break
			}
			b.WriteString(" " + quoted(p))
		}
		if d.Name != "" {
			b.WriteString(" as " + quoted(d.Name))
		}
		if d.PathTruncated {
			b.WriteString(" (path cut)")
		}
		if d.Size != nil {
			fmt.Fprintf(&b, ", %d bytes", *d.Size)
		}
		if sum := word(d.SHA256); sum != "" {
			b.WriteString(", sha256 " + sum[:min(len(sum), 16)] + "…")
		}
		if d.HashNote != "" {
			b.WriteString(", " + quoted(d.HashNote))
		}
		if d.Content != "" {
			b.WriteString(", " + quoted(d.Content))
		}
	case "x-file-op":
		b.WriteString(" " + word(d.Op) + " " + quoted(d.Path))
		if d.To != "" {
			b.WriteString(" -> " + quoted(d.To))
		}
		if d.PathTruncated {
			b.WriteString(" (path cut)")
		}
	case "x-file-parse-error":
		b.WriteString(" transfers no longer followed: " + quoted(d.Error))
	}
	return "file: " + strings.TrimSpace(b.String()), true
}

// markerFor returns the marker text of an event that is neither output
// nor input, and whether it is shown: file events, refusals, exit
// statuses and moderators' events always, the others when all is set.
// Duplicates of other events (the exact bytes of a text event) are never
// shown.
func markerFor(e Event, all bool) (string, bool) {
	switch e.Code {
	case "x-exit-status":
		return "exit status " + escaped(e.Data), true
	case "x-exit-signal":
		return "killed by signal " + escaped(e.Data), true
	case "x-file", "x-file-op", "x-file-parse-error":
		if text, ok := fileMarker(e.Code, e.Data); ok {
			return text, true
		}
		return word(e.Code) + " " + quoted(e.Data), true
	case "x-sftp-refused":
		return "sftp request refused: " + quoted(e.Data), true
	case "x-start-refused":
		return "refused to start: " + quoted(e.Data), true
	case "x-moderator":
		// A reviewer must see who watched and what they did as the
		// session went on: a hold explains why input stops.
		return "moderator: " + escaped(e.Data), true
	case "x-o-bytes", "x-i-bytes":
		return "", false
	}
	if !all {
		return "", false
	}
	switch e.Code {
	case "x-exec":
		return "exec " + quoted(e.Data), true
	case "x-subsystem":
		return "subsystem " + quoted(e.Data), true
	case "r":
		return "resize " + quoted(e.Data), true
	}
	if e.Data == "" {
		return word(strings.TrimPrefix(e.Code, "x-")), true
	}
	return word(strings.TrimPrefix(e.Code, "x-")) + " " + quoted(e.Data), true
}

// inputMarker gathers the technician's input into one marker per line
// typed, rather than one per keystroke.
type inputMarker struct {
	head   []byte // the first bytes
	n      int
	binary bool
}

// add adds input p and reports whether the marker is due: a line was
// ended.
func (m *inputMarker) add(p []byte) bool {
	if !utf8.Valid(p) || bytes.IndexByte(p, 0) >= 0 {
		m.binary = true
	}
	if len(m.head) <= maxMarkerText {
		m.head = append(m.head, p[:min(len(p), maxMarkerText+1-len(m.head))]...)
	}
	m.n += len(p)
	return !m.binary && bytes.ContainsAny(p, "\r\n")
}

// take returns the marker of the input gathered and forgets it, or false
// when there is none.
func (m *inputMarker) take() (string, bool) {
	if m.n == 0 {
		return "", false
	}
	text := fmt.Sprintf("input: %d bytes of binary data", m.n)
	if !m.binary {
		head, more := cutText(string(m.head), m.n)
		text = "input " + strconv.Quote(head) + more
	}
	*m = inputMarker{head: m.head[:0]}
	return text, true
}
