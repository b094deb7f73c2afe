package recording

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Meta is the metadata of a recorded session, stored as session.json.
type Meta struct {
	ID               string    `json:"id"`
	Technician       string    `json:"technician"`
	Affiliate        string    `json:"affiliate"`
	AffiliateCountry string    `json:"affiliate_country"`
	Source           string    `json:"source"`
	SourceCountry    string    `json:"source_country"`
	Target           string    `json:"target"`
	TargetAddress    string    `json:"target_address"`
	Residency        string    `json:"residency"`
	Login            string    `json:"login"`
	CrossBorder      bool      `json:"cross_border"`
	Rule             string    `json:"rule"`
	Trace            any       `json:"trace,omitempty"`
	CertSerial       uint64    `json:"cert_serial"`
	CertKeyID        string    `json:"cert_key_id"`
	Start            time.Time `json:"start"`
	End              time.Time `json:"end,omitzero"`
	EndReason        string    `json:"end_reason,omitempty"`
	BytesIn          int64     `json:"bytes_in"`
	BytesOut         int64     `json:"bytes_out"`
	Channels         []string  `json:"channels"` // file names of the channel recordings
}

// ErrBadID is returned for a session ID that is not a UUID. Recording
// paths are built only from validated IDs, never from raw user input.
var ErrBadID = errors.New("session ID must be a UUID")

// SessionDir returns the directory of session id under root.
func SessionDir(root, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return "", fmt.Errorf("%w: %q", ErrBadID, id)
	}
	return filepath.Join(root, u.String()), nil
}

// Session is the recording of one SSH connection.
type Session struct {
	dir string
	key ed25519.PrivateKey // signs the seal; nil leaves it unsigned

	mu       sync.Mutex
	meta     Meta
	channels int
	seal     Seal

	chainMu  sync.Mutex // orders chunks of all channels in one chain
	chain    *chain
	chainErr error // sticky: after a failed append the chain takes no more

	failMu    sync.Mutex
	failed    error       // the first recording failure of any channel
	onFailure func(error) // told of it once, in its own goroutine
}

// OnFailure registers f, called once (in its own goroutine) when any
// channel of the session can no longer be recorded, also when no write is
// waiting for the answer (a failed flush of an idle channel): the session
// must then end.
func (s *Session) OnFailure(f func(error)) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	s.onFailure = f
}

func (s *Session) fail(err error) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.failed != nil {
		return
	}
	s.failed = err
	if f := s.onFailure; f != nil {
		go f(err)
	}
}

func (s *Session) failure() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failed
}

// Create starts an unsigned recording (tests); see CreateSigned.
func Create(root string, meta Meta) (*Session, error) { return CreateSigned(root, meta, nil) }

// CreateSigned starts the recording of a session under root, to be
// sealed with key. It fails if the recording cannot be written, in which
// case the session must be refused.
func CreateSigned(root string, meta Meta, key ed25519.PrivateKey) (*Session, error) {
	dir, err := SessionDir(root, meta.ID)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	if err := syncDir(root); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	s := &Session{dir: dir, meta: meta, key: key}
	if s.meta.Channels == nil {
		s.meta.Channels = []string{}
	}
	if err := s.writeMeta(); err != nil {
		return nil, err
	}
	c, err := openChain(dir)
	if err != nil {
		return nil, err
	}
	s.chain = c
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	return s, nil
}

// Dir returns the session's recording directory.
func (s *Session) Dir() string { return s.dir }

func (s *Session) writeMeta() error {
	b, err := json.MarshalIndent(s.meta, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, "session.json.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write recording metadata: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write recording metadata: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "session.json")); err != nil {
		return fmt.Errorf("write recording metadata: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("write recording metadata: %w", err)
	}
	return nil
}

// ChannelInfo describes a session channel when its first request arrives.
type ChannelInfo struct {
	// PTY is set for terminal channels.
	PTY        bool
	Term       string
	Cols, Rows int
	// Kind is "shell", "exec" or "subsystem".
	Kind string
	// Command is the exec command or the subsystem name.
	Command string
}

// Channel opens the recording of the next session channel.
func (s *Session) Channel(info ChannelInfo) (*Channel, error) {
	s.mu.Lock()
	s.channels++
	n := s.channels
	name := strconv.Itoa(n) + ".cast"
	s.meta.Channels = append(s.meta.Channels, name)
	err := s.writeMeta()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording channel: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("recording channel: %w", err)
	}
	now := time.Now()
	c := &Channel{f: f, start: now, pty: info.PTY, sess: s, name: name, hash: sha256.New()}
	h := header{Version: 2, Width: info.Cols, Height: info.Rows, Timestamp: now.Unix(), Command: info.Command,
		Kind: info.Kind, Channel: n, Session: s.meta.ID}
	if h.Width <= 0 || h.Height <= 0 {
		h.Width, h.Height = 80, 24
	}
	h.PTY = info.PTY
	if info.Kind == "shell" {
		h.Title = fmt.Sprintf("%s@%s (%s)", s.meta.Technician, s.meta.Target, s.meta.ID)
	} else {
		h.Title = fmt.Sprintf("%s@%s %s: %s", s.meta.Technician, s.meta.Target, info.Kind, info.Command)
	}
	if info.Term != "" {
		h.Env = map[string]string{"TERM": info.Term}
	}
	b, err := json.Marshal(h)
	if err != nil {
		f.Close()
		return nil, err
	}
	c.mu.Lock()
	err = c.appendLocked(append(b, '\n'))
	if err == nil {
		// The header is made durable at once: a channel exists on disk
		// before anything of it is relayed.
		err = c.flushLocked()
	}
	c.mu.Unlock()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recording channel: %w", err)
	}
	return c, nil
}

// Certificate records the certificate the session uses on the target.
func (s *Session) Certificate(serial uint64, keyID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta.CertSerial, s.meta.CertKeyID = serial, keyID
	return s.writeMeta()
}

// End records how the session ended and seals the recording. Every
// channel must be closed first.
func (s *Session) End(at time.Time, reason string, bytesIn, bytesOut int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta.End = at.UTC()
	s.meta.EndReason = reason
	s.meta.BytesIn = bytesIn
	s.meta.BytesOut = bytesOut
	if err := s.writeMeta(); err != nil {
		return err
	}
	s.chainMu.Lock()
	defer s.chainMu.Unlock()
	if s.chain == nil || s.chain.f == nil {
		return errors.New("recording already sealed")
	}
	complete, why := true, ""
	if f := s.failure(); f != nil {
		// Bytes were relayed that the recording may not hold: the seal
		// says so, and verify reports it as incomplete.
		complete, why = false, "recording failed: "+f.Error()
	}
	seal, err := writeSeal(s.dir, s.meta.ID, s.chain, complete, why, s.key)
	if cerr := s.chain.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("recording chain close: %w", cerr)
	}
	s.chain.f = nil
	s.seal = seal
	return err
}

// Seal returns the seal written by End.
func (s *Session) Seal() Seal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seal
}

// header is the asciicast v2 header, with sekisho's fields prefixed x_.
type header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Session   string            `json:"x_session"`
	Channel   int               `json:"x_channel"`
	Kind      string            `json:"x_kind"`
	PTY       bool              `json:"x_pty"`
}

// Channel records one session channel. Its methods are safe for use by
// the two relay directions at once.
type Channel struct {
	start time.Time
	pty   bool
	sess  *Session
	name  string // file name in the session directory

	mu     sync.Mutex
	f      *os.File
	err    error  // sticky: once a write failed, the channel stays failed
	carryO []byte // an incomplete UTF-8 sequence at the end of the last output
	carryI []byte
	buf    []byte
	b64    []byte // the quoted base64 of the last exact-bytes event
	text8  []byte // the JSON string of the last terminal text event

	off      int64     // bytes written to f
	chunkOff int64     // where the current chunk starts
	hash     hash.Hash // of the current chunk
	timer    *time.Timer

	// A full chunk is synced and chained in the background while the
	// relay goes on writing the next one; syncing is closed when that is
	// done, and syncErr (written before the close) says how it went.
	syncing chan struct{}
	syncErr error
}

// chunk is a byte range of a channel file and the SHA-256 of its bytes.
type chunk struct {
	off, n int64
	sum    []byte
}

// Stdout records output from the target; Stderr records its extended data.
func (c *Channel) Stdout(p []byte) error {
	if c.pty {
		return c.text("o", &c.carryO, p)
	}
	return c.raw("x-stdout", p)
}

// Stderr records the target's stderr. On a terminal channel it is shown
// as output, as the technician's terminal shows it.
func (c *Channel) Stderr(p []byte) error {
	if c.pty {
		return c.text("o", &c.carryO, p)
	}
	return c.raw("x-stderr", p)
}

// Stdin records input from the technician.
func (c *Channel) Stdin(p []byte) error {
	if c.pty {
		return c.text("i", &c.carryI, p)
	}
	return c.raw("x-stdin", p)
}

// Resize records a terminal size change.
func (c *Channel) Resize(cols, rows int) error {
	return c.event("r", fmt.Sprintf("%dx%d", cols, rows))
}

// Event records an extension event; code must start with "x-".
func (c *Channel) Event(code, data string) error {
	return c.event(code, data)
}

func (c *Channel) text(code string, carry *[]byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failed(); err != nil {
		return err
	}
	data := p
	if len(*carry) > 0 {
		data = append(append([]byte(nil), *carry...), p...)
		*carry = (*carry)[:0]
	}
	// Hold back an incomplete UTF-8 sequence at the end so that a
	// character split across two reads is not recorded as two bad ones.
	if cut := incompleteTail(data); cut > 0 {
		*carry = append(*carry, data[len(data)-cut:]...)
		data = data[:len(data)-cut]
	}
	if len(data) == 0 {
		return nil
	}
	c.text8 = appendJSONString(c.text8[:0], data) // invalid UTF-8 becomes U+FFFD
	if err := c.writeEncodedLocked(code, c.text8); err != nil {
		return err
	}
	if !utf8.Valid(data) {
		// The text event above shows U+FFFD for the bad bytes; the exact
		// bytes (binary on a terminal, a ZMODEM transfer) are kept too.
		return c.writeEncodedLocked("x-"+code+"-bytes", c.quotedBase64Locked(data))
	}
	return nil
}

func (c *Channel) raw(code string, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failed(); err != nil {
		return err
	}
	return c.writeEncodedLocked(code, c.quotedBase64Locked(p))
}

// quotedBase64Locked returns p in base64 as a JSON string. Base64 needs
// no JSON escaping: it is written as it is, into a buffer the channel
// keeps, so exact bytes cost no allocation per read.
func (c *Channel) quotedBase64Locked(p []byte) []byte {
	n := base64.StdEncoding.EncodedLen(len(p))
	if cap(c.b64) < n+2 {
		c.b64 = make([]byte, n+2)
	}
	q := c.b64[:n+2]
	q[0], q[n+1] = '"', '"'
	base64.StdEncoding.Encode(q[1:n+1], p)
	return q
}

func (c *Channel) event(code, data string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.failed(); err != nil {
		return err
	}
	return c.writeLocked(code, data)
}

// errClosed is returned by writes after Close.
var errClosed = errors.New("recording closed")

// failed returns the error that stops every write: the sticky write error,
// or errClosed once the channel is closed, so that bytes held back for a
// split character are not accepted without being recorded.
func (c *Channel) failed() error {
	if c.err != nil {
		return c.err
	}
	if c.f == nil {
		return errClosed
	}
	return nil
}

func (c *Channel) writeLocked(code, data string) error {
	enc, err := json.Marshal(data) // invalid UTF-8 becomes U+FFFD
	if err != nil {
		c.err = err
		return err
	}
	return c.writeEncodedLocked(code, enc)
}

// writeEncodedLocked writes an event whose data is already a JSON string.
func (c *Channel) writeEncodedLocked(code string, enc []byte) error {
	t := time.Since(c.start).Seconds()
	b := c.buf[:0]
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ',', '"')
	b = append(b, code...)
	b = append(b, '"', ',')
	b = append(b, enc...)
	b = append(b, ']', '\n')
	c.buf = b
	// --- seek index (index.go): never part of the chain, never fails the recording.
	off := c.off
	if err := c.appendLocked(b); err != nil {
		return err
	}
	c.indexLocked(off, b)
	// --- end seek index
	return nil
}

// appendLocked writes b to the file at once (a crash of the process
// loses nothing written) and makes a chunk of what was written since the
// last one when it reaches chunkBytes; otherwise within chunkInterval.
func (c *Channel) appendLocked(b []byte) error {
	n, err := c.f.Write(b)
	c.hash.Write(b[:n]) // what did reach the file is chained at Close
	c.off += int64(n)
	if err != nil {
		c.err = fmt.Errorf("recording write: %w", err)
		c.sess.fail(c.err)
		return c.err
	}
	if n := c.off - c.chunkOff; n >= chunkBytes && (n >= chunkBytesMax || !c.syncBusyLocked()) {
		return c.chainInBackgroundLocked()
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(chunkInterval, c.timedFlush)
	}
	return nil
}

func (c *Channel) timedFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	if c.f != nil && c.err == nil && c.off > c.chunkOff {
		// In the background too: an interactive channel's writers do not
		// wait for the disk once a second. A failure fails the session
		// and is sticky: the next write reports it.
		c.chainInBackgroundLocked()
	}
}

// flushLocked syncs the file and chains the bytes written since the last
// chunk.
func (c *Channel) flushLocked() error {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.off == c.chunkOff {
		return nil
	}
	if err := c.chainLocked(); err != nil {
		if c.err == nil {
			c.err = err
		}
		c.sess.fail(err)
		return err
	}
	return nil
}

// chainLocked syncs the file and chains the bytes since the last chunk,
// after the chunk being synced in the background, if any.
func (c *Channel) chainLocked() error {
	if err := c.waitSyncLocked(); err != nil {
		return err
	}
	if err := c.sess.chainChunk(c.f, c.name, chunk{off: c.chunkOff, n: c.off - c.chunkOff, sum: c.hash.Sum(nil)}); err != nil {
		return err
	}
	c.chunkOff = c.off
	c.hash.Reset()
	return nil
}

// chainInBackgroundLocked makes a chunk of the bytes since the last one
// and syncs and chains it in the background, so that forwarding goes on
// while the disk catches up. One chunk at most is in flight per channel:
// the next waits for it. So what has been written but is not yet durable
// stays under two chunks of at most chunkBytesMax (or a second, the
// timer's bound); the bytes themselves are in the file before they are
// relayed, as before. A failed sync fails the session at once, which
// ends it.
func (c *Channel) chainInBackgroundLocked() error {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if err := c.waitSyncLocked(); err != nil {
		return err
	}
	ck := chunk{off: c.chunkOff, n: c.off - c.chunkOff, sum: c.hash.Sum(nil)}
	c.chunkOff = c.off
	c.hash.Reset()
	done, f := make(chan struct{}), c.f
	c.syncing = done
	go func() {
		defer close(done)
		if err := c.sess.chainChunk(f, c.name, ck); err != nil {
			c.syncErr = err
			c.sess.fail(err)
		}
	}()
	return nil
}

// syncBusyLocked reports whether the previous chunk is still being synced;
// the current one then grows (up to chunkBytesMax) rather than wait.
func (c *Channel) syncBusyLocked() bool {
	if c.syncing == nil {
		return false
	}
	select {
	case <-c.syncing:
		return false
	default:
		return true
	}
}

// waitSyncLocked waits for the chunk being synced in the background and
// makes its failure the channel's.
func (c *Channel) waitSyncLocked() error {
	if c.syncing == nil {
		return nil
	}
	<-c.syncing
	c.syncing = nil
	if err := c.syncErr; err != nil {
		if c.err == nil {
			c.err = err
		}
		return c.err
	}
	return nil
}

// chainChunk syncs f and appends the chunk's record to the chain.
func (s *Session) chainChunk(f *os.File, name string, ck chunk) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("recording sync: %w", err)
	}
	s.chainMu.Lock()
	defer s.chainMu.Unlock()
	switch {
	case s.chainErr != nil:
		return s.chainErr
	case s.chain == nil || s.chain.f == nil:
		return errors.New("recording already sealed")
	}
	if _, err := s.chain.add(name, ck.off, ck.n, ck.sum, false); err != nil {
		s.chainErr = err // a half-written line: nothing may follow it
		return err
	}
	return nil
}

// Close flushes held-back bytes, syncs and closes the channel recording.
func (c *Channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return c.err
	}
	if c.err == nil && len(c.carryO) > 0 {
		c.writeLocked("o", string(c.carryO))
	}
	if c.err == nil && len(c.carryI) > 0 {
		c.writeLocked("i", string(c.carryI))
	}
	if c.err == nil {
		c.flushLocked()
	} else if c.off > c.chunkOff {
		// After a failed write, what did reach the file is chained if it
		// can be, so that verify holds everything that was relayed.
		c.chainLocked()
	}
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.waitSyncLocked() // the file stays open until its last sync is done
	if err := c.f.Close(); err != nil && c.err == nil {
		c.err = fmt.Errorf("recording close: %w", err)
	}
	c.f = nil
	return c.err
}

// incompleteTail returns the length of an incomplete but so far valid
// UTF-8 sequence at the end of p, or 0.
func incompleteTail(p []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(p); i++ {
		b := p[len(p)-i]
		if b < 0x80 {
			return 0
		}
		if utf8.RuneStart(b) {
			if !utf8.FullRune(p[len(p)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}
