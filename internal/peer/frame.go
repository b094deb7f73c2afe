package peer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// A watch stream is a sequence of frames on the channel's standard
// output, so that output and terminal sizes keep their order (SSH
// delivers a channel's requests apart from its data):
//
//	type (1 byte) | length (4 bytes, big-endian) | payload
//
// Types: 'o' terminal output, as the watch wrote it; 'r' a terminal size,
// the payload two 4-byte big-endian numbers, columns then rows. The first
// frame of a stream is the size of the terminal it joins.
const (
	frameOutput = 'o'
	frameResize = 'r'

	// maxFrame bounds a frame's payload; a larger write is split.
	maxFrame = 64 << 10
)

// Stream is where a serving node writes a watch: the output of
// recording.Watch, and the terminal sizes it reports. It is safe for use
// by several goroutines.
type Stream struct {
	mu sync.Mutex
	w  io.Writer
}

// Write sends p as output frames.
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFrame)]
		if err := writeFrame(s.w, frameOutput, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Resize sends a terminal size.
func (s *Stream) Resize(cols, rows int) error {
	if cols <= 0 || rows <= 0 || cols > 1<<16 || rows > 1<<16 {
		return nil // no size worth telling
	}
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], uint32(cols))
	binary.BigEndian.PutUint32(b[4:], uint32(rows))
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeFrame(s.w, frameResize, b[:])
}

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	b := make([]byte, 5+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	_, err := w.Write(b)
	return err
}

// errBadFrame is returned for a stream that does not follow the format.
var errBadFrame = errors.New("peer: malformed watch stream")

// readFrames hands the frames read from r to w and resize (which may be
// nil) until r ends.
func readFrames(r io.Reader, w io.Writer, resize func(cols, rows int) error) error {
	br := bufio.NewReader(r)
	var hdr [5]byte
	buf := make([]byte, maxFrame)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%w: %w", errBadFrame, err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxFrame {
			return fmt.Errorf("%w: a frame of %d bytes", errBadFrame, n)
		}
		p := buf[:n]
		if _, err := io.ReadFull(br, p); err != nil {
			return fmt.Errorf("%w: %w", errBadFrame, err)
		}
		switch hdr[0] {
		case frameOutput:
			if _, err := w.Write(p); err != nil {
				return err
			}
		case frameResize:
			if n != 8 {
				return fmt.Errorf("%w: a size frame of %d bytes", errBadFrame, n)
			}
			if resize != nil {
				if err := resize(int(binary.BigEndian.Uint32(p[:4])), int(binary.BigEndian.Uint32(p[4:]))); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: frame type %q", errBadFrame, hdr[0])
		}
	}
}
