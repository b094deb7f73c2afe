package recording

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode/utf8"
)

// Export. Two forms of a recording for other tools, both written as they
// are read, so that recordings of any size export in bounded memory. An
// export is a copy: it is not covered by the chain or the seal, which
// `sekisho verify` checks on the recording itself.

// CastOptions controls ExportCast.
type CastOptions struct {
	// Channel is the channel to export (1-based); 0 means the first
	// terminal channel, or channel 1 if there is none.
	Channel int
	// Raw keeps terminal output exactly as recorded. By default it passes
	// through a Sanitizer as in Replay, because players such as
	// `asciinema play` write it to the viewer's terminal.
	Raw bool
}

// castHeader is the asciicast v2 header with its standard fields only.
type castHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// ExportCast writes one channel of session id as a standard asciicast v2
// file, which asciinema and other players accept: the standard header
// fields, then the events "o", "i" and "r" only. A channel without a
// terminal has its output and input turned into "o" and "i" events: output
// as Replay shows it (text with "\r\n" line ends, binary data as a note of
// its size), input when it is text. Other extension events are left out;
// the text form of output that was not valid UTF-8 is kept, its exact
// bytes are not. A truncated last event ends the export. It returns the
// number of the channel exported.
func ExportCast(w io.Writer, root, id string, opt CastOptions) (int, error) {
	chans, err := Channels(root, id)
	if err != nil {
		return 0, err
	}
	if len(chans) == 0 {
		return 0, ErrNoChannels
	}
	n := opt.Channel
	if n == 0 {
		n = firstTerminal(chans)
	}
	if n < 1 || n > len(chans) {
		return 0, fmt.Errorf("session %s has no channel %d (it has %d)", id, n, len(chans))
	}
	ch := chans[n-1]
	cr, err := OpenChannel(ch)
	if err != nil {
		return 0, err
	}
	defer cr.Close()
	h := cr.Header()
	bw := bufio.NewWriterSize(w, 64<<10)
	b, err := json.Marshal(castHeader{Version: 2, Width: h.Width, Height: h.Height, Timestamp: h.Timestamp,
		Command: h.Command, Title: h.Title, Env: h.Env})
	if err != nil {
		return 0, err
	}
	bw.Write(append(b, '\n'))
	var (
		out  bytes.Buffer // sanitized output of the current event
		san  = NewSanitizer(&out)
		line []byte
	)
	for {
		e, err := cr.Next()
		if err == io.EOF || errors.Is(err, ErrTruncated) {
			break
		}
		if err != nil {
			return 0, err
		}
		code, data := e.Code, e.Data
		switch e.Code {
		case "o", "i", "r":
		case "x-stdout", "x-stderr", "x-stdin":
			b, err := e.Bytes()
			if err != nil {
				return 0, fmt.Errorf("%s: bad %s event at %.3fs: %w", ch.Name, e.Code, e.Time, err)
			}
			code, data = "o", string(printable(b))
			if e.Code == "x-stdin" {
				if !utf8.Valid(b) {
					continue
				}
				code, data = "i", string(b)
			}
		default:
			continue
		}
		if code == "o" && !opt.Raw {
			out.Reset()
			san.Write([]byte(data)) // writes to out, which does not fail
			if out.Len() == 0 {
				continue
			}
			data = out.String()
		}
		line = appendCastEvent(line[:0], e.Time, code, data)
		if _, err := bw.Write(line); err != nil {
			return 0, err
		}
	}
	return n, bw.Flush()
}

// firstTerminal returns the number of the first terminal channel, or 1.
func firstTerminal(chans []ChannelFile) int {
	for i, ch := range chans {
		f, err := os.Open(ch.Path)
		if err != nil {
			continue
		}
		cr, err := NewCastReader(f, ch.Name)
		f.Close()
		if err == nil && cr.Header().PTY {
			return i + 1
		}
	}
	return 1
}

// appendCastEvent appends the asciicast event line [t, code, data].
func appendCastEvent(b []byte, t float64, code, data string) []byte {
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ',')
	b = strconv.AppendQuote(b, code) // codes are ASCII words
	b = append(b, ',')
	enc, _ := json.Marshal(data) // a string always marshals
	b = append(b, enc...)
	return append(b, ']', '\n')
}

// ExportJSONVersion is the version of the document ExportJSON writes.
const ExportJSONVersion = 1

// ExportJSON writes session id as one JSON document for other tools:
//
//	{"format": "sekisho-recording", "version": 1,
//	 "session": {…session.json…},
//	 "channels": [
//	   {"channel": 1, "file": "1.cast", "header": {…the asciicast header…},
//	    "events": [{"time": 0.25, "code": "o", "text": "…"},
//	               {"time": 0.5, "code": "x-stdout", "base64": "…"}, …],
//	    "truncated": false}, …]}
//
// Every event keeps its code and time (seconds since the channel opened).
// Its data is decoded: the bytes of x-stdout, x-stderr, x-stdin, x-o-bytes
// and x-i-bytes events are "text" when they are valid UTF-8 and "base64"
// otherwise; the data of every other event is "text" as recorded (for
// x-file events, a JSON object in a string). "truncated" says the channel
// ends with an event cut short (its write failed), which is left out.
// channel limits the export to one channel (1-based); 0 exports all.
func ExportJSON(w io.Writer, root, id string, channel int) error {
	m, err := ReadMeta(root, id)
	if err != nil {
		return err
	}
	chans, err := Channels(root, id)
	if err != nil {
		return err
	}
	if channel < 0 || channel > len(chans) {
		return fmt.Errorf("session %s has no channel %d (it has %d)", id, channel, len(chans))
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "{\"format\":\"sekisho-recording\",\"version\":%d,\n\"session\":%s,\n\"channels\":[", ExportJSONVersion, meta)
	first := true
	for i, ch := range chans {
		if channel != 0 && channel != i+1 {
			continue
		}
		if !first {
			bw.WriteString(",")
		}
		first = false
		if err := exportJSONChannel(bw, i+1, ch); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// jsonEvent is one event of ExportJSON.
type jsonEvent struct {
	Time   float64 `json:"time"`
	Code   string  `json:"code"`
	Text   *string `json:"text,omitempty"`
	Base64 *string `json:"base64,omitempty"`
}

func exportJSONChannel(bw *bufio.Writer, n int, ch ChannelFile) error {
	cr, err := OpenChannel(ch)
	if err != nil {
		return err
	}
	defer cr.Close()
	h, err := json.Marshal(cr.Header())
	if err != nil {
		return err
	}
	name, _ := json.Marshal(ch.Name)
	fmt.Fprintf(bw, "\n{\"channel\":%d,\"file\":%s,\"header\":%s,\n\"events\":[", n, name, h)
	truncated := false
	for i := 0; ; i++ {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrTruncated) {
			truncated = true
			break
		}
		if err != nil {
			return err
		}
		je := jsonEvent{Time: e.Time, Code: e.Code, Text: &e.Data}
		switch e.Code {
		case "x-stdout", "x-stderr", "x-stdin", "x-o-bytes", "x-i-bytes":
			b, err := e.Bytes()
			if err != nil {
				return fmt.Errorf("%s: bad %s event at %.3fs: %w", ch.Name, e.Code, e.Time, err)
			}
			if utf8.Valid(b) {
				s := string(b)
				je.Text = &s
			} else {
				s := base64.StdEncoding.EncodeToString(b)
				je.Text, je.Base64 = nil, &s
			}
		}
		b, err := json.Marshal(je)
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	fmt.Fprintf(bw, "],\n\"truncated\":%v}", truncated)
	return nil
}
