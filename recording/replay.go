package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
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
}

// Replay writes the recorded output of session id to w in time, through a
// Sanitizer, so that nothing recorded can act on the reviewer's terminal.
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
	for i, ch := range chans {
		if opt.Channel != 0 && opt.Channel != i+1 {
			continue
		}
		// A fresh Sanitizer per channel: a sequence left open at the end
		// of one channel must not swallow the next.
		if err := replayChannel(ctx, w, NewSanitizer(w), ch, opt); err != nil {
			return err
		}
	}
	return nil
}

func replayChannel(ctx context.Context, w io.Writer, san *Sanitizer, ch ChannelFile, opt ReplayOptions) error {
	f, err := os.Open(ch.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	cr, err := NewCastReader(f, ch.Name)
	if err != nil {
		return err
	}
	h := cr.Header()
	fmt.Fprintf(w, "\r\n\x1b[7m sekisho replay: channel %d, %s \x1b[0m\r\n", h.Channel, banner(h))
	var last float64
	for {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrTruncated) {
			fmt.Fprintf(w, "\r\n\x1b[7m sekisho replay: channel %d ends with a truncated event (its write failed; nothing after it was forwarded) \x1b[0m\r\n", h.Channel)
			break
		}
		if err != nil {
			return err
		}
		var out []byte
		switch e.Code {
		case "o":
			out = []byte(e.Data)
		case "x-stdout", "x-stderr":
			b, err := e.Bytes()
			if err != nil {
				return fmt.Errorf("%s: bad %s event at %.3fs: %w", ch.Name, e.Code, e.Time, err)
			}
			out = printable(b)
		case "x-exit-status":
			out = []byte("\r\n\x1b[7m exit status " + e.Data + " \x1b[0m\r\n")
		case "x-exit-signal":
			out = []byte("\r\n\x1b[7m killed by signal " + e.Data + " \x1b[0m\r\n")
		default:
			continue
		}
		if !opt.Instant {
			d := time.Duration((e.Time - last) / opt.Speed * float64(time.Second))
			d = min(d, opt.MaxIdle)
			if d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
		last = e.Time
		if _, err := san.Write(out); err != nil {
			return err
		}
	}
	return nil
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
		f, err := os.Open(ch.Path)
		if err != nil {
			return err
		}
		cr, err := NewCastReader(f, ch.Name)
		if err != nil {
			f.Close()
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
				f.Close()
				return err
			}
			data := e.Data
			if b, err := e.Bytes(); err == nil {
				data = string(b)
			}
			fmt.Fprintf(w, "%10.3f %d %-13s %s\n", e.Time, i+1, e.Code, strconv.Quote(data))
		}
		f.Close()
	}
	return nil
}
