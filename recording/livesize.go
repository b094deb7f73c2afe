package recording

import (
	"os"
	"path/filepath"
	"slices"
)

// TerminalSize returns the size of the most recent terminal channel of
// session id recorded under root, the terminal a watch joins; ok is false
// before the session has one.
func TerminalSize(root, id string) (cols, rows int, ok bool) {
	dir, err := SessionDir(root, id)
	if err != nil {
		return 0, 0, false
	}
	m, err := ReadMeta(root, id)
	if err != nil {
		return 0, 0, false
	}
	for _, name := range slices.Backward(m.Channels) {
		h, ok := channelHeader(filepath.Join(dir, filepath.Base(name)))
		if ok && h.PTY && h.Width > 0 && h.Height > 0 {
			return h.Width, h.Height, true
		}
	}
	return 0, 0, false
}

// channelHeader reads the header of a channel recording.
func channelHeader(path string) (Header, bool) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, false
	}
	defer f.Close()
	cr, err := NewCastReader(f, filepath.Base(path))
	if err != nil {
		return Header{}, false
	}
	return cr.Header(), true
}
