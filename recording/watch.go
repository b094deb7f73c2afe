package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WatchOptions controls Watch.
type WatchOptions struct {
	// FromStart shows the session from its beginning, then follows it.
	// Otherwise the watch joins at the live point: it shows the last few
	// KiB of output of the most recent terminal channel, so that the
	// watcher sees what is on the technician's screen, then follows.
	FromStart bool
	// Poll is how often the recording is checked for growth; 0 means
	// 100ms.
	Poll time.Duration
	// Resize, if set, is told the size of a terminal channel whenever it
	// changes while shown, in order with its output; on joining at the
	// live point, it is told the current size of the terminal shown. A
	// watch in a terminal of its own leaves it nil.
	Resize func(cols, rows int) error
	// StopHint ends the banner: how the watcher stops watching. Empty
	// means "Ctrl-C to stop", for a terminal.
	StopHint string
}

// ErrNoRecording is returned by Watch when the session has no recording
// in the directory: it has not started, or it runs on another node.
var ErrNoRecording = errors.New("no recording of session")

// watchContext is how much earlier output a watch that joins at the live
// point shows.
const watchContext = 4 << 10

// Watch follows the recording of session id under root as it is written
// and shows it on w, until the session ends (nil) or ctx is done
// (ctx.Err()). It is read-only by construction: it reads the recording's
// files and has no path to the live connection, so nothing a watcher
// types can reach the session.
//
// w first gets a marker line that says the watch is read-only. Terminal
// output passes through a Sanitizer, one per channel, as in Replay;
// channels without a terminal are shown as short lines (the command,
// its text output, file transfers, the exit status), with untrusted text
// stripped of control characters. Channels opened later are picked up.
// Only complete lines of a recording are read, so an event being written
// is shown once it is whole.
func Watch(ctx context.Context, w io.Writer, root, id string, opt WatchOptions) error {
	dir, err := SessionDir(root, id)
	if err != nil {
		return err
	}
	m, err := ReadMeta(root, id)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w %s in %s: it has not started, or it runs on another node", ErrNoRecording, id, root)
	}
	if err != nil {
		return err
	}
	if opt.Poll <= 0 {
		opt.Poll = 100 * time.Millisecond
	}
	wt := &watcher{w: &lineWriter{w: w, atStart: true}, dir: dir, buf: make([]byte, 64<<10), resize: opt.Resize}
	defer wt.closeAll()
	hint := opt.StopHint
	if hint == "" {
		hint = "Ctrl-C to stop"
	}
	if _, err := fmt.Fprintf(wt.w, "\r\n[sekisho: watching session %s (%s@%s) read-only; %s]\r\n",
		id, safeText(m.Technician), safeText(m.Target), safeText(hint)); err != nil {
		return err
	}
	if !opt.FromStart {
		if err := wt.join(ctx, m.Channels); err != nil {
			return err
		}
	}
	tick := time.NewTicker(opt.Poll)
	defer tick.Stop()
	for {
		// Meta is read before the files are drained: once it says the
		// session ended, every channel was closed before, so draining
		// now reads everything.
		ended := !m.End.IsZero()
		if err := wt.follow(ctx, m.Channels); err != nil {
			return err
		}
		if ended {
			return wt.end(m.EndReason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		next, err := ReadMeta(root, id)
		if errors.Is(err, fs.ErrNotExist) {
			// The session ended and its spool copy went to its store
			// between two looks: the files open here still hold the rest.
			if err := wt.follow(ctx, nil); err != nil {
				return err
			}
			return wt.end("ended; its recording went to its store")
		}
		if err != nil {
			return err
		}
		m = next
	}
}

// watcher follows the channel files of one session.
type watcher struct {
	w     *lineWriter
	dir   string
	chans []*followed
	buf   []byte // read buffer

	resize func(cols, rows int) error // nil: sizes are not followed
}

// followed is one channel file being followed.
type followed struct {
	n       int // 1-based channel number
	name    string
	f       *os.File
	data    *os.File // the channel's data file (format 2), opened when first referred to
	pending []byte   // read but not yet a complete line
	hdr     *header  // nil until the header line is read
	san     *Sanitizer
	quiet   bool   // reading history that is not shown
	context []byte // while quiet: the last output of a terminal channel
	cut     bool   // context lost its beginning
	binary  int64  // binary output not yet reported
	closed  bool   // x-close seen
	done    bool   // closed and drained; f is closed

	cols, rows int // the terminal's size: the header's, then the last "r"
}

// join reads the history of the channels open so far without showing it,
// then shows the last output of the most recent terminal channel, still
// open if one is, and names the other open channels.
func (wt *watcher) join(ctx context.Context, names []string) error {
	if err := wt.add(names, true); err != nil {
		return err
	}
	for _, c := range wt.chans {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := wt.read(c); err != nil {
			return err
		}
	}
	var last *followed
	for _, c := range wt.chans {
		if c.hdr != nil && c.hdr.PTY && (last == nil || !c.closed || last.closed) {
			last = c
		}
	}
	for _, c := range wt.chans {
		c.quiet = false
		if c.hdr == nil || (c.closed && c != last) {
			continue // its header is shown when it is read; closed: history
		}
		if err := wt.note(c, banner(*c.hdr)); err != nil {
			return err
		}
		if c == last {
			ctxt := c.context
			if c.cut {
				// Start on a line of its own rather than inside a
				// character or an escape sequence.
				if i := bytes.IndexByte(ctxt, '\n'); i >= 0 {
					ctxt = ctxt[i+1:]
				}
			}
			if wt.resize != nil && c.cols > 0 {
				if err := wt.resize(c.cols, c.rows); err != nil {
					return err
				}
			}
			if _, err := c.san.Write(ctxt); err != nil {
				return err
			}
		}
		c.context = nil
	}
	return nil
}

// add starts following the channels in names that are new.
func (wt *watcher) add(names []string, quiet bool) error {
	for i := len(wt.chans); i < len(names); i++ {
		name := names[i]
		if filepath.Base(name) != name || !strings.HasSuffix(name, ".cast") {
			return fmt.Errorf("bad channel name %q in session.json", name)
		}
		wt.chans = append(wt.chans, &followed{n: i + 1, name: name, quiet: quiet})
	}
	return nil
}

// follow shows what was appended to each channel since the last call.
func (wt *watcher) follow(ctx context.Context, names []string) error {
	if err := wt.add(names, false); err != nil {
		return err
	}
	for _, c := range wt.chans {
		if c.done {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		grew, err := wt.read(c)
		if err != nil {
			return err
		}
		// The writer may append held-back bytes just after x-close; a
		// poll later without growth, the channel is over.
		if c.closed && !grew {
			if err := wt.finish(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// read consumes the complete lines appended to c's file, and reports
// whether the file grew.
func (wt *watcher) read(c *followed) (bool, error) {
	if c.f == nil {
		f, err := os.Open(filepath.Join(wt.dir, c.name))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // listed in session.json just before it is created
		}
		if err != nil {
			return false, err
		}
		c.f = f
	}
	grew := false
	for {
		n, err := c.f.Read(wt.buf)
		if n > 0 {
			grew = true
			c.pending = append(c.pending, wt.buf[:n]...)
			if err := wt.lines(c); err != nil {
				return grew, err
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return grew, nil
		}
		if err != nil {
			return grew, fmt.Errorf("%s: %w", c.name, err)
		}
	}
}

// lines handles the complete lines in c.pending and keeps the rest.
func (wt *watcher) lines(c *followed) error {
	rest := c.pending
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		if err := wt.handle(c, rest[:i]); err != nil {
			return err
		}
		rest = rest[i+1:]
	}
	if len(rest) > maxLine {
		return fmt.Errorf("%s: line longer than %d bytes", c.name, maxLine)
	}
	c.pending = append(c.pending[:0], rest...)
	return nil
}

// handle shows one line of a channel recording.
func (wt *watcher) handle(c *followed, line []byte) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	if c.hdr == nil {
		var h header
		if err := json.Unmarshal(line, &h); err != nil || h.Version != 2 {
			return fmt.Errorf("%s: bad asciicast v2 header", c.name)
		}
		if h.Data != "" && h.Data != dataFileName(c.name) {
			return fmt.Errorf("%s: the header names data file %q", c.name, h.Data)
		}
		c.hdr, c.san = &h, NewSanitizer(wt.w)
		if h.PTY {
			c.cols, c.rows = h.Width, h.Height
		}
		if c.quiet {
			return nil
		}
		return wt.note(c, banner(h))
	}
	e, ok := parseEvent(line)
	if !ok {
		if c.quiet {
			return nil
		}
		return wt.note(c, "an unreadable event was skipped")
	}
	if e.Code == "x-close" {
		c.closed = true
		return nil
	}
	if c.hdr.Data != "" && isDataCode(e.Code) {
		if c.quiet || (e.Code != "x-stdout" && e.Code != "x-stderr") || c.hdr.Kind == "subsystem" {
			return nil // not shown: not read
		}
		// The writer writes the bytes before the event that refers to
		// them: they are in the file.
		if c.data == nil {
			f, _, err := openDataFile(filepath.Join(wt.dir, c.hdr.Data))
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			c.data = f
		}
		off, n, ok := parseRef(e.Data)
		var size int64
		if c.data != nil {
			if fi, err := c.data.Stat(); err == nil {
				size = fi.Size()
			}
		}
		if !ok || off+n > size {
			return wt.note(c, "an unreadable "+e.Code+" event was skipped")
		}
		e.ref = &dataRef{data: c.data, off: off, n: n}
	}
	if e.Code == "r" && c.hdr.PTY {
		cols, rows, ok := parseSize(e.Data)
		if !ok || (cols == c.cols && rows == c.rows) {
			return nil
		}
		c.cols, c.rows = cols, rows
		if c.quiet || wt.resize == nil {
			return nil
		}
		return wt.resize(cols, rows)
	}
	if c.quiet {
		if e.Code == "o" && c.hdr.PTY {
			c.context = append(c.context, e.Data...)
			if len(c.context) > 2*watchContext {
				c.context = append(c.context[:0], c.context[len(c.context)-watchContext:]...)
				c.cut = true
			}
		}
		return nil
	}
	switch e.Code {
	case "o":
		return wt.output(c, []byte(e.Data))
	case "x-stdout", "x-stderr":
		if c.hdr.Kind == "subsystem" {
			return nil // sftp's protocol: its x-file events tell what it did
		}
		b, err := e.Bytes()
		if err != nil {
			return wt.note(c, "an undecodable "+e.Code+" event was skipped")
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			c.binary += int64(len(b))
			return nil
		}
		return wt.output(c, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
	case "x-exit-status":
		return wt.note(c, "exit status "+safeText(e.Data))
	case "x-exit-signal":
		return wt.note(c, "killed by signal "+safeText(e.Data))
	}
	if strings.HasPrefix(e.Code, "x-file") {
		return wt.note(c, strings.TrimPrefix(e.Code, "x-")+" "+safeText(e.Data))
	}
	return nil
}

// output shows terminal output or text, sanitized.
func (wt *watcher) output(c *followed, p []byte) error {
	if err := wt.flushBinary(c); err != nil {
		return err
	}
	_, err := c.san.Write(p)
	return err
}

// note shows a line of sekisho's about channel c, on a line of its own.
func (wt *watcher) note(c *followed, text string) error {
	if err := wt.flushBinary(c); err != nil {
		return err
	}
	return wt.line(fmt.Sprintf("[sekisho: channel %d: %s]", c.n, text))
}

// line writes text on a line of its own; text is safe.
func (wt *watcher) line(text string) error {
	nl := ""
	if !wt.w.atStart {
		nl = "\r\n"
	}
	_, err := io.WriteString(wt.w, nl+text+"\r\n")
	return err
}

// flushBinary reports the binary output of c not yet reported, in one
// line rather than one per event.
func (wt *watcher) flushBinary(c *followed) error {
	if c.binary == 0 {
		return nil
	}
	n := c.binary
	c.binary = 0
	return wt.line(fmt.Sprintf("[sekisho: channel %d: %d bytes of binary output]", c.n, n))
}

// finish ends the following of channel c.
func (wt *watcher) finish(c *followed) error {
	c.done = true
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
	if c.data != nil {
		c.data.Close()
		c.data = nil
	}
	if err := wt.flushBinary(c); err != nil {
		return err
	}
	if len(bytes.TrimSpace(c.pending)) > 0 {
		c.pending = nil
		return wt.note(c, "the recording ends with a truncated event (its write failed; nothing after it was forwarded)")
	}
	return nil
}

// end finishes every channel and says the session ended.
func (wt *watcher) end(reason string) error {
	for _, c := range wt.chans {
		if !c.done {
			if err := wt.finish(c); err != nil {
				return err
			}
		}
	}
	if reason == "" {
		reason = "no reason recorded"
	}
	return wt.line("[sekisho: session ended: " + safeText(reason) + "]")
}

func (wt *watcher) closeAll() {
	for _, c := range wt.chans {
		if c.f != nil {
			c.f.Close()
			c.f = nil
		}
		if c.data != nil {
			c.data.Close()
			c.data = nil
		}
	}
}

// lineWriter remembers whether the last byte written ended a line.
type lineWriter struct {
	w       io.Writer
	atStart bool
}

func (lw *lineWriter) Write(p []byte) (int, error) {
	n, err := lw.w.Write(p)
	if n > 0 {
		lw.atStart = p[n-1] == '\n'
	}
	return n, err
}

// safeText returns untrusted text for a line of sekisho's: printable
// characters only (no control, format or bidi characters), at most 500
// bytes.
func safeText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || strconv.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > 500 {
		s = strings.ToValidUTF8(s[:500], "") + "…"
	}
	return s
}

// parseSize reads a resize event's "COLSxROWS", each 1 to 10000.
func parseSize(s string) (cols, rows int, ok bool) {
	w, h, found := strings.Cut(s, "x")
	if !found {
		return 0, 0, false
	}
	cols, err1 := strconv.Atoi(w)
	rows, err2 := strconv.Atoi(h)
	if err1 != nil || err2 != nil || cols < 1 || rows < 1 || cols > 10000 || rows > 10000 {
		return 0, 0, false
	}
	return cols, rows, true
}
