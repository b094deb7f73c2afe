package recording

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Meta is the metadata of a recorded session, stored as session.json.
type Meta struct {
	ID               string `json:"id"`
	Technician       string `json:"technician"`
	Affiliate        string `json:"affiliate"`
	AffiliateCountry string `json:"affiliate_country"`
	Source           string `json:"source"`
	SourceCountry    string `json:"source_country"`
	Target           string `json:"target"`
	TargetAddress    string `json:"target_address"`
	Residency        string `json:"residency"`
	Login            string `json:"login"`
	CrossBorder      bool   `json:"cross_border"`
	// Via says how the technician reached the target when not by a
	// TECHNICIAN+TARGET login: "proxyjump HOST:PORT" for ssh -J.
	Via        string    `json:"via,omitempty"`
	Rule       string    `json:"rule"`
	Trace      any       `json:"trace,omitempty"`
	CertSerial uint64    `json:"cert_serial"`
	CertKeyID  string    `json:"cert_key_id"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	EndReason  string    `json:"end_reason,omitempty"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	Channels   []string  `json:"channels"` // file names of the channel recordings
	// Format is the recording format (see doc.go): 2 when channels without
	// a terminal keep their exact bytes in <n>.raw; absent (0) in
	// recordings of format 1, which keep them in base64 in the events.
	Format int `json:"format,omitempty"`
}

// Format is the recording format the writer makes.
const Format = 2

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
	hasFailed atomic.Bool // failed is set: every channel's next write returns it
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
	s.hasFailed.Store(true)
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
	s.meta.Format = Format
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

// Channel opens the recording of the next session channel. A channel
// without a terminal gets a second file, <n>.raw, for its exact bytes
// (format 2, see doc.go).
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
	now := time.Now()
	c := &Channel{start: now, pty: info.PTY, sess: s, ev: file{name: name}}
	h := header{Version: 2, Width: info.Cols, Height: info.Rows, Timestamp: now.Unix(), Command: info.Command,
		Kind: info.Kind, Channel: n, Session: s.meta.ID}
	if !info.PTY {
		c.data = &file{name: dataFileName(name)}
		h.Data = c.data.name
	}
	for _, fl := range c.files() {
		f, err := os.OpenFile(filepath.Join(s.dir, fl.name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			c.closeFiles()
			return nil, fmt.Errorf("recording channel: %w", err)
		}
		fl.f = f
	}
	if err := syncDir(s.dir); err != nil {
		c.closeFiles()
		return nil, fmt.Errorf("recording channel: %w", err)
	}
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
		c.closeFiles()
		return nil, err
	}
	c.mu.Lock()
	err = c.appendLocked(&c.ev, append(b, '\n'))
	if err == nil {
		// The header is made durable at once: a channel exists on disk
		// before anything of it is relayed.
		err = c.flushLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.closeFiles()
		return nil, fmt.Errorf("recording channel: %w", err)
	}
	return c, nil
}

// dataFileName returns the name of the exact-bytes file of the channel
// whose event stream is castName: 3.cast, 3.raw.
func dataFileName(castName string) string {
	return strings.TrimSuffix(castName, ".cast") + ".raw"
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
	// Data names the file that holds the channel's exact bytes (format
	// 2): its x-stdout, x-stderr and x-stdin events refer to them.
	Data string `json:"x_data,omitempty"`
}

// Channel records one session channel. Its methods are safe for use by
// the two relay directions at once.
type Channel struct {
	start time.Time
	pty   bool
	sess  *Session

	mu     sync.Mutex
	ev     file  // the event stream, <n>.cast
	data   *file // the exact bytes, <n>.raw; nil on a terminal channel
	err    error // sticky: once a write failed, the channel stays failed
	closed bool
	dirty  bool   // waiting for the node's sync pass
	carryO []byte // an incomplete UTF-8 sequence at the end of the last output
	carryI []byte
	buf    []byte
	b64    []byte // the quoted base64 of the last exact-bytes event of a terminal
	text8  []byte // the JSON string of the last terminal text event
}

// file is one file of a channel recording being written: written at once
// (a crash of the process loses nothing written), then cut into chunks
// that are hashed, synced and chained off the relay's path.
type file struct {
	f        *os.File
	name     string
	off      int64 // bytes written to f
	chunkOff int64 // where the current chunk starts

	// A chunk is hashed, synced and chained in the background while the
	// relay goes on writing the next one; syncing is closed when that is
	// done, and syncErr (written before the close) says how it went. One
	// chunk at most is in flight per file.
	syncing chan struct{}
	syncErr error
}

// files returns the channel's files, the exact bytes first: their chunk
// is chained before the events that refer to it.
func (c *Channel) files() []*file {
	if c.data != nil {
		return []*file{c.data, &c.ev}
	}
	return []*file{&c.ev}
}

func (c *Channel) closeFiles() {
	for _, fl := range c.files() {
		if fl.f != nil {
			fl.f.Close()
		}
	}
}

// chunk is a byte range of a channel file.
type chunk struct {
	off, n int64
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
	if c.data == nil {
		return c.writeEncodedLocked(code, c.quotedBase64Locked(p))
	}
	// The bytes first, then the event that refers to them: an event
	// never refers to bytes that are not in the file. Both are written
	// before the caller forwards p.
	off := c.data.off
	if err := c.appendLocked(c.data, p); err != nil {
		return err
	}
	ref := c.b64[:0]
	ref = append(ref, '"')
	ref = strconv.AppendInt(ref, off, 10)
	ref = append(ref, '+')
	ref = strconv.AppendInt(ref, int64(len(p)), 10)
	ref = append(ref, '"')
	c.b64 = ref
	return c.writeEncodedLocked(code, ref)
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
	if c.sess.hasFailed.Load() {
		// Another chunk, or another channel, could not be recorded (a
		// sync in the background): the session relays nothing more.
		c.err = c.sess.failure()
		return c.err
	}
	if c.closed {
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
	off := c.ev.off
	if err := c.appendLocked(&c.ev, b); err != nil {
		return err
	}
	c.indexLocked(off, b)
	// --- end seek index
	return nil
}

// appendLocked writes b to fl at once (a crash of the process loses
// nothing written) and makes a chunk of what was written since the last
// one when it reaches chunkBytes; otherwise the node's sync pass does,
// within chunkInterval.
func (c *Channel) appendLocked(fl *file, b []byte) error {
	n, err := fl.f.Write(b)
	fl.off += int64(n) // what did reach the file is chained at Close
	if err != nil {
		c.err = fmt.Errorf("recording write: %w", err)
		c.sess.fail(c.err)
		return c.err
	}
	if n := fl.off - fl.chunkOff; n >= chunkBytes && (n >= chunkBytesMax || !fl.busy()) {
		return c.chainInBackgroundLocked(fl)
	}
	if !c.dirty {
		c.dirty = true
		passes.add(c)
	}
	return nil
}

// flushLocked chains what was written since the last chunk of each file,
// and waits until it is synced.
func (c *Channel) flushLocked() error {
	for _, fl := range c.files() {
		if err := c.chainLocked(fl); err != nil {
			if c.err == nil {
				c.err = err
			}
			c.sess.fail(err)
			return err
		}
	}
	return nil
}

// chainLocked hashes, syncs and chains the bytes of fl since its last
// chunk, after the chunk in flight, if any.
func (c *Channel) chainLocked(fl *file) error {
	if err := c.waitSyncLocked(fl); err != nil {
		return err
	}
	if fl.off == fl.chunkOff {
		return nil
	}
	if err := c.sess.chainChunk(fl.f, fl.name, chunk{off: fl.chunkOff, n: fl.off - fl.chunkOff}); err != nil {
		return err
	}
	fl.chunkOff = fl.off
	return nil
}

// chainInBackgroundLocked makes a chunk of the bytes of fl since the
// last one, and hashes, syncs and chains it in the background, so that
// forwarding goes on while the disk catches up. One chunk at most is in
// flight per file: the next waits for it. So what has been written but
// is not yet durable stays under two chunks of at most chunkBytesMax (or
// a second, the sync pass's bound); the bytes themselves are in the file
// before they are relayed. A failed sync fails the session at once,
// which ends it.
func (c *Channel) chainInBackgroundLocked(fl *file) error {
	if err := c.waitSyncLocked(fl); err != nil {
		return err
	}
	ck := chunk{off: fl.chunkOff, n: fl.off - fl.chunkOff}
	fl.chunkOff = fl.off
	done, f := make(chan struct{}), fl.f
	fl.syncing = done
	go func() {
		defer close(done)
		if err := c.sess.chainChunk(f, fl.name, ck); err != nil {
			fl.syncErr = err
			c.sess.fail(err)
		}
	}()
	return nil
}

// busy reports whether fl's previous chunk is still being synced; the
// current one then grows (up to chunkBytesMax) rather than wait.
func (fl *file) busy() bool {
	if fl.syncing == nil {
		return false
	}
	select {
	case <-fl.syncing:
		return false
	default:
		return true
	}
}

// waitSyncLocked waits for fl's chunk in flight and makes its failure the
// channel's.
func (c *Channel) waitSyncLocked(fl *file) error {
	if fl.syncing == nil {
		return nil
	}
	<-fl.syncing
	fl.syncing = nil
	if err := fl.syncErr; err != nil {
		if c.err == nil {
			c.err = err
		}
		return c.err
	}
	return nil
}

// waitSyncsLocked waits for the chunks in flight of all the channel's files.
func (c *Channel) waitSyncsLocked() error {
	var first error
	for _, fl := range c.files() {
		if err := c.waitSyncLocked(fl); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// chainChunk hashes the chunk as it is in f, syncs f and appends the
// chunk's record to the chain.
func (s *Session) chainChunk(f *os.File, name string, ck chunk) error {
	sum, err := hashChunk(f, ck)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("recording sync: %w", err)
	}
	s.chainMu.Lock()
	defer s.chainMu.Unlock()
	if err := s.chainableLocked(); err != nil {
		return err
	}
	if _, err := s.chain.add(name, ck.off, ck.n, sum, false); err != nil {
		s.chainErr = err // a half-written line: nothing may follow it
		return err
	}
	return nil
}

func (s *Session) chainableLocked() error {
	switch {
	case s.chainErr != nil:
		return s.chainErr
	case s.chain == nil || s.chain.f == nil:
		return errors.New("recording already sealed")
	}
	return nil
}

// readBack holds the buffers chunks are read back into for hashing.
var readBack = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// hashChunk returns the SHA-256 of the chunk as it is in f. The relay
// writes and goes on; the chunk is read back from the page cache and
// hashed off its path, by the goroutine that syncs it.
func hashChunk(f *os.File, ck chunk) ([]byte, error) {
	bp := readBack.Get().(*[]byte)
	defer readBack.Put(bp)
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.NewSectionReader(f, ck.off, ck.n), *bp)
	if err == nil && n != ck.n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("recording read back: %w", err)
	}
	return h.Sum(nil), nil
}

// Close flushes held-back bytes, syncs and closes the channel recording.
func (c *Channel) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.err
	}
	if c.err == nil && len(c.carryO) > 0 {
		c.writeLocked("o", string(c.carryO))
	}
	if c.err == nil && len(c.carryI) > 0 {
		c.writeLocked("i", string(c.carryI))
	}
	// Also after a failed write, what did reach the files is chained if it
	// can be, so that verify holds everything that was relayed.
	for _, fl := range c.files() {
		if err := c.chainLocked(fl); err != nil && c.err == nil {
			c.err = err
			c.sess.fail(err)
		}
	}
	c.closed = true
	for _, fl := range c.files() {
		c.waitSyncLocked(fl) // a file stays open until its last sync is done
		if err := fl.f.Close(); err != nil && c.err == nil {
			c.err = fmt.Errorf("recording close: %w", err)
		}
	}
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
