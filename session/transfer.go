package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"strings"

	"github.com/sekisho/sekisho/broker"
)

// File transfers are recorded as events next to the bytes that carry them,
// so that a review can list what went where without decoding the streams:
//
//	x-file             {"protocol":"sftp","direction":"upload","path":"/tmp/x","size":123,"sha256":"…"}
//	x-file-op          {"protocol":"sftp","op":"rename","path":"/tmp/x","to":"/tmp/y"}
//	x-file-parse-error {"protocol":"scp","error":"…"}
//
// The observers that produce them are passive: they see each chunk after
// it was recorded and before it is forwarded, on the pump's goroutine,
// never hold bytes back and keep bounded state. A stream they cannot
// parse ends their parsing with one x-file-parse-error event; the relay
// goes on. Recording one of their events can fail like any recording, and
// then the session ends.
const (
	// maxTrackedPath bounds a path kept in an observer's state; a longer
	// one is cut and its event says "path_truncated".
	maxTrackedPath = 4096
	// maxTracked bounds the open files and the pending requests an sftp
	// observer follows; beyond it the oldest is dropped.
	maxTracked = 256
)

// transferObserver follows the file transfers of one channel. technician
// and target see the channel's data in each direction, in the order it is
// forwarded; end is called once both have seen their last bytes. Each
// returns only the error of recording an event.
type transferObserver interface {
	technician(p []byte) error
	target(p []byte) error
	end() error
}

// newTransferObserver returns the observer for a channel started by a
// reqType request with command, or nil for a channel that carries no file
// transfer it can follow. An rsync channel is recorded by its command
// alone, here, because its protocol is not parsed. Its direction is the
// one checkLimits enforced: under a direction-limited rule, only rsync
// commands that parseLegacyTransfer accepted start, and it reads their
// direction as channelKind does. With -s, which only a rule without a
// direction limit lets through, the options and paths went over the
// connection: the direction is recorded as unknown.
func newTransferObserver(reqType, command string, emit func(code, data string) error) (transferObserver, error) {
	kind, upload, _ := channelKind(reqType, command)
	switch kind {
	case broker.ChannelSFTP:
		return newSFTPObserver(emit), nil
	case broker.ChannelSCP:
	default:
		return nil, nil
	}
	words, _ := shellWords(command) // channelKind found them literal
	fields := texts(words)
	if fields[0] == "rsync" || fields[0] == "/usr/bin/rsync" {
		ev := rsyncEvent{Protocol: "rsync", Direction: direction(upload), Paths: rsyncPaths(fields[1:]), Content: "not parsed (rsync)"}
		if s := rsyncSecluded(fields[1:]); s != "" {
			ev.Direction, ev.Paths = "unknown", []string{}
			ev.Content = "not parsed (rsync " + s + ": options and paths sent over the connection)"
		}
		return nil, emitJSON(emit, "x-file", ev)
	}
	return newSCPObserver(fields[1:], emit), nil
}

// fileEvent is the data of an x-file event. SHA256 is the hash of the
// bytes that passed, "" when they did not pass as one sequential stream;
// HashNote then says why.
type fileEvent struct {
	Protocol      string `json:"protocol"`
	Direction     string `json:"direction"`
	Path          string `json:"path"`
	Name          string `json:"name,omitempty"` // scp: the name sent, when the path does not end in it
	PathTruncated bool   `json:"path_truncated,omitempty"`
	Size          uint64 `json:"size"`
	SHA256        string `json:"sha256"`
	HashNote      string `json:"hash_note,omitempty"`
}

// fileOpEvent is the data of an x-file-op event: an sftp request that
// changes a file's name, existence or attributes, as requested.
type fileOpEvent struct {
	Protocol      string `json:"protocol"`
	Op            string `json:"op"`
	Path          string `json:"path"`
	To            string `json:"to,omitempty"`
	PathTruncated bool   `json:"path_truncated,omitempty"`
}

// rsyncEvent is the data of the x-file event of an rsync channel.
type rsyncEvent struct {
	Protocol  string   `json:"protocol"`
	Direction string   `json:"direction"`
	Paths     []string `json:"paths"`
	Content   string   `json:"content"`
}

// parseErrorEvent is the data of an x-file-parse-error event.
type parseErrorEvent struct {
	Protocol string `json:"protocol"`
	Error    string `json:"error"`
}

// Hash notes.
const (
	noteNonSequential = "non-sequential"
	noteIncomplete    = "incomplete"
	noteSourceError   = "the sender reported an error"
	noteEvicted       = "not followed to its close: too many open files"
)

func direction(upload bool) string {
	if upload {
		return "upload"
	}
	return "download"
}

// emitJSON records v, as JSON without HTML escapes, as an event.
func emitJSON(emit func(code, data string) error, code string, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return emit(code, strings.TrimSuffix(b.String(), "\n"))
}

// rsyncPaths returns the paths of an rsync server command: the words after
// the "." that stands for the client's side.
func rsyncPaths(args []string) []string {
	for i, a := range args {
		if a == "." {
			return append([]string{}, args[i+1:]...)
		}
	}
	if len(args) > 0 {
		return args[len(args)-1:]
	}
	return []string{}
}

// contentHash follows the content of one file in one direction, given as
// pieces at offsets. It hashes while the pieces arrive in order; the size
// is the furthest end seen either way.
type contentHash struct {
	h          hash.Hash // nil until the first byte
	next       uint64    // bytes hashed so far
	size       uint64
	sequential bool
}

func newContentHash() contentHash { return contentHash{sequential: true} }

func (c *contentHash) add(off uint64, p []byte) {
	if len(p) == 0 {
		return
	}
	end := off + uint64(len(p))
	if end < off { // wrapped around
		end = ^uint64(0)
	}
	c.size = max(c.size, end)
	if !c.sequential {
		return
	}
	if off != c.next {
		c.sequential, c.h = false, nil
		return
	}
	if c.h == nil {
		c.h = sha256.New()
	}
	c.h.Write(p)
	c.next = end
}

// sum returns the hex SHA-256 of the content, or "" and why not.
func (c *contentHash) sum() (string, string) {
	switch {
	case !c.sequential:
		return "", noteNonSequential
	case c.h == nil:
		s := sha256.Sum256(nil)
		return hex.EncodeToString(s[:]), ""
	}
	return hex.EncodeToString(c.h.Sum(nil)), ""
}

// trackedPath returns p for an observer's state, cut to maxTrackedPath.
func trackedPath(p []byte) (string, bool) {
	if len(p) > maxTrackedPath {
		return string(p[:maxTrackedPath]), true
	}
	return string(p), false
}

// observed returns a record function that records p and then shows it to
// watch.
func observed(record, watch func([]byte) error) func([]byte) error {
	return func(p []byte) error {
		if err := record(p); err != nil {
			return err
		}
		return watch(p)
	}
}
