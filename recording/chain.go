package recording

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Integrity. Every channel file is written in chunks: the bytes written
// since the last chunk become a chunk once 1 MiB have accumulated, a
// second has passed, or the channel closes. Making a chunk fsyncs the
// channel file and appends a record to chain.jsonl (fsynced too) naming
// the file, the byte range and its SHA-256, hash-chained to the record
// before. A chunk full at 1 MiB is synced and chained in the background
// while the next is written, one at a time per channel; while one is
// being synced, the next grows (to 4 MiB at most) rather than wait. When the session ends, seal.json holds the last hash and the
// SHA-256 of session.json, signed with the node's ed25519 recording key.
// A crash loses nothing written (every event is written to the file at
// once); bytes after the last chunk are chained at the next start as a
// recovered chunk, and the seal then says the recording is incomplete.
const (
	chunkBytes    = 1 << 20
	chunkBytesMax = 4 << 20 // a chunk grows past 1 MiB while the previous one is still being synced
	chunkInterval = time.Second
	chainFile     = "chain.jsonl"
	sealFile      = "seal.json"
	chainDomain   = "sekisho-chain-v1"
	sealDomain    = "sekisho-seal-v1"
)

// ChainRecord is one line of chain.jsonl: one chunk of a channel file.
type ChainRecord struct {
	Seq    int    `json:"seq"` // from 1
	File   string `json:"file"`
	Off    int64  `json:"off"`
	Len    int64  `json:"len"`
	SHA256 string `json:"sha256"` // of the chunk's bytes
	Prev   string `json:"prev"`   // hash of the record before; "" for the first
	Hash   string `json:"hash"`
	At     string `json:"at"`
	// Recovered marks bytes found after the last chunk when the server
	// restarted after a crash: written, but not chained while it ran.
	Recovered bool `json:"recovered,omitempty"`
}

// hash computes the record's chained hash.
func (r *ChainRecord) hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d\n%s\n%d\n%d\n%s\n%v\n", chainDomain, r.Prev, r.Seq, r.File, r.Off, r.Len, r.SHA256, r.Recovered)
	return hex.EncodeToString(h.Sum(nil))
}

// Seal closes a recording: the last hash of its chain and the hash of
// its metadata, signed.
type Seal struct {
	Session string `json:"session"`
	// Complete is false for a recording sealed after a crash.
	Complete   bool   `json:"complete"`
	Reason     string `json:"reason,omitempty"`
	Chunks     int    `json:"chunks"`
	Head       string `json:"head"` // hash of the last chain record
	MetaSHA256 string `json:"meta_sha256"`
	SealedAt   string `json:"sealed_at"`
	Key        string `json:"key"`       // the recording key, SSH SHA256 fingerprint form
	Signature  string `json:"signature"` // base64 ed25519 over payload()
}

func (s *Seal) payload() []byte {
	return fmt.Appendf(nil, "%s\n%s\n%v\n%s\n%d\n%s\n%s\n%s\n", sealDomain, s.Session, s.Complete, s.Reason, s.Chunks, s.Head, s.MetaSHA256, s.SealedAt)
}

// KeyFingerprint names an ed25519 public key as ssh-keygen -l does.
func KeyFingerprint(pub ed25519.PublicKey) string {
	// The SSH wire form of an ed25519 key: string "ssh-ed25519", string key.
	var b bytes.Buffer
	for _, f := range [][]byte{[]byte("ssh-ed25519"), pub} {
		b.Write([]byte{byte(len(f) >> 24), byte(len(f) >> 16), byte(len(f) >> 8), byte(len(f))})
		b.Write(f)
	}
	sum := sha256.Sum256(b.Bytes())
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// chain appends records to a session's chain.jsonl.
type chain struct {
	f    *os.File
	seq  int
	head string
}

func openChain(dir string) (*chain, error) {
	f, err := os.OpenFile(filepath.Join(dir, chainFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording chain: %w", err)
	}
	return &chain{f: f}, nil
}

// add appends a record for file[off:off+len] with the given digest and
// syncs it.
func (c *chain) add(file string, off, n int64, sum []byte, recovered bool) (ChainRecord, error) {
	r, err := c.write(file, off, n, sum, recovered)
	if err != nil {
		return r, err
	}
	if err := c.f.Sync(); err != nil {
		return r, fmt.Errorf("recording chain sync: %w", err)
	}
	return r, nil
}

// write appends a record for file[off:off+len] with the given digest; the
// caller syncs it (add, or the sync pass for many chains at once).
func (c *chain) write(file string, off, n int64, sum []byte, recovered bool) (ChainRecord, error) {
	r := ChainRecord{Seq: c.seq + 1, File: file, Off: off, Len: n, SHA256: hex.EncodeToString(sum), Prev: c.head,
		At: time.Now().UTC().Format(time.RFC3339Nano), Recovered: recovered}
	r.Hash = r.hash()
	b, _ := json.Marshal(r)
	if _, err := c.f.Write(append(b, '\n')); err != nil {
		return r, fmt.Errorf("recording chain write: %w", err)
	}
	c.seq, c.head = r.Seq, r.Hash
	return r, nil
}

// seal writes seal.json for the session in dir, signed with key (nil
// leaves it unsigned).
func writeSeal(dir, id string, c *chain, complete bool, reason string, key ed25519.PrivateKey) (Seal, error) {
	meta, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if err != nil {
		return Seal{}, fmt.Errorf("seal recording: %w", err)
	}
	sum := sha256.Sum256(meta)
	s := Seal{Session: id, Complete: complete, Reason: reason, Chunks: c.seq, Head: c.head,
		MetaSHA256: hex.EncodeToString(sum[:]), SealedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	if key != nil {
		s.Key = KeyFingerprint(key.Public().(ed25519.PublicKey))
		s.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, s.payload()))
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := filepath.Join(dir, sealFile+".tmp")
	if err := writeSync(tmp, append(b, '\n')); err != nil {
		return s, fmt.Errorf("seal recording: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, sealFile)); err != nil {
		return s, fmt.Errorf("seal recording: %w", err)
	}
	return s, syncDir(dir)
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// channelFileRe is the name of a channel file: nothing else is read or
// uploaded on the word of chain.jsonl.
var channelFileRe = regexp.MustCompile(`^[1-9][0-9]{0,8}\.(cast|raw)$`)

// readChain reads chain.jsonl; a last line cut short by a crash is
// ignored (and reported by partial).
func readChain(dir string) (recs []ChainRecord, partial bool, err error) {
	f, err := os.Open(filepath.Join(dir, chainFile))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			return recs, true, nil
		}
		if len(line) > 0 {
			var r ChainRecord
			if jerr := json.Unmarshal(line, &r); jerr != nil {
				return recs, false, fmt.Errorf("chain.jsonl line %d: %v", len(recs)+1, jerr)
			}
			if !channelFileRe.MatchString(r.File) || r.Off < 0 || r.Len < 0 {
				return recs, false, fmt.Errorf("chain.jsonl line %d names %q at %d+%d: not a channel file of the recording", len(recs)+1, r.File, r.Off, r.Len)
			}
			recs = append(recs, r)
		}
		if errors.Is(err, io.EOF) {
			return recs, false, nil
		}
		if err != nil {
			return recs, false, err
		}
	}
}

// Problem is one thing verification found wrong.
type Problem struct {
	File  string `json:"file,omitempty"`
	Chunk int    `json:"chunk,omitempty"`
	What  string `json:"what"`
}

// Verification is the outcome of Verify.
type Verification struct {
	Session   string    `json:"session"`
	OK        bool      `json:"ok"`
	Complete  bool      `json:"complete"`
	Sealed    bool      `json:"sealed"`
	Signed    bool      `json:"signed"`
	Chunks    int       `json:"chunks"`
	Bytes     int64     `json:"bytes"`
	Recovered int64     `json:"recovered_bytes,omitempty"`
	Reason    string    `json:"reason,omitempty"` // why an incomplete recording is
	Head      string    `json:"head,omitempty"`   // the sealed head of the chain
	Problems  []Problem `json:"problems,omitempty"`
}

// EmptyChainHead is what the register keeps as the head of a recording
// sealed before its first chunk (a session cut off at its very start),
// whose chain head is empty: an empty head in the register means that no
// seal was recorded at all.
const EmptyChainHead = "empty"

// RegisterHead is the head the register keeps for a seal's head.
func RegisterHead(head string) string {
	if head == "" {
		return EmptyChainHead
	}
	return head
}

// CheckRegister compares the recording with what the register knows of
// its session: whether it is registered and has ended, and the seal it
// recorded (head "" when none). Offline, without a register, call
// CheckOffline instead.
func (v *Verification) CheckRegister(registered, ended bool, head string, chunks int) {
	add := func(what string) { v.Problems = append(v.Problems, Problem{What: what}) }
	switch {
	case !registered:
		add("the register has no session with this ID: the recording was made up or the register lost it")
	case !v.Sealed && ended:
		v.Reason = ""
		add("not sealed, yet the session has ended: the seal was removed")
	case !v.Sealed:
		v.Reason = "live: verified up to its last chunk"
	case head == "":
		add("the register recorded no seal of this recording")
	case head != RegisterHead(v.Head) || chunks != v.Chunks:
		add(fmt.Sprintf("the seal differs from the one the register recorded (%d chunks ending in %.12s…): the recording was cut short and sealed again, or replaced", chunks, head))
	}
	v.OK = len(v.Problems) == 0
}

// CheckOffline is CheckRegister without a register: an unsealed
// recording cannot be told from a live one, so it does not pass.
func (v *Verification) CheckOffline() {
	if !v.Sealed {
		v.Problems = append(v.Problems, Problem{What: "not sealed (offline, a live session cannot be told from a recording stripped of its seal)"})
	}
	v.OK = len(v.Problems) == 0
}

// headerSession returns the session a channel file's header names.
func headerSession(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(io.LimitReader(f, 64<<10)).ReadBytes('\n')
	var h struct {
		Session string `json:"x_session"`
	}
	json.Unmarshal(line, &h)
	return h.Session
}

// Verify checks the recording in dir: every chunk's bytes against the
// chain, the chain's links, the seal's signature with pub (nil: the
// signature is not checked) and the metadata's hash.
func Verify(dir string, pub ed25519.PublicKey) (Verification, error) {
	v := Verification{Session: filepath.Base(dir)}
	recs, partial, err := readChain(dir)
	if err != nil {
		return v, fmt.Errorf("read the chain of %s: %w", dir, err)
	}
	add := func(p Problem) { v.Problems = append(v.Problems, p) }
	if partial {
		add(Problem{What: "chain.jsonl ends with a cut line"})
	}
	// The chain's own links: a record removed, reordered or edited.
	prev := ""
	for i, r := range recs {
		switch {
		case r.Seq != i+1:
			add(Problem{File: r.File, Chunk: i + 1, What: fmt.Sprintf("chain record %d has sequence number %d: a chain record was removed or reordered", i+1, r.Seq)})
		case r.Prev != prev:
			add(Problem{File: r.File, Chunk: r.Seq, What: "chain record does not follow the one before it: chain records were removed or reordered"})
		case r.hash() != r.Hash:
			add(Problem{File: r.File, Chunk: r.Seq, What: "chain record was modified"})
		}
		prev = r.Hash
		v.Bytes += r.Len
		if r.Recovered {
			v.Recovered += r.Len
		}
	}
	v.Chunks = len(recs)

	// The channel files against their chunks.
	byFile := map[string][]ChainRecord{}
	var order []string
	for _, r := range recs {
		if _, ok := byFile[r.File]; !ok {
			order = append(order, r.File)
		}
		byFile[r.File] = append(byFile[r.File], r)
	}
	for _, name := range order {
		for _, p := range verifyFile(dir, name, byFile[name]) {
			add(p)
		}
	}
	// The metadata and the channel headers name the session too.
	if m, err := readMetaFile(dir); err != nil {
		add(Problem{File: "session.json", What: "unreadable: " + err.Error()})
	} else if m.ID != v.Session {
		add(Problem{File: "session.json", What: fmt.Sprintf("names session %s, not %s: the recording was moved or replaced (a copy keeps its directory named by the session ID)", m.ID, v.Session)})
	}
	for _, name := range order {
		if filepath.Ext(name) != ".cast" {
			continue // a data file has no header; its channel's names the session
		}
		if id := headerSession(filepath.Join(dir, name)); id != v.Session {
			add(Problem{File: name, What: fmt.Sprintf("its header names session %q, not %s", id, v.Session)})
		}
	}
	// Channel files the chain does not know of.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if channelFileRe.MatchString(e.Name()) && byFile[e.Name()] == nil {
				if fi, err := e.Info(); err == nil && fi.Size() > 0 {
					add(Problem{File: e.Name(), What: "channel file is not in the chain"})
				}
			}
		}
	}

	// The seal.
	b, err := os.ReadFile(filepath.Join(dir, sealFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		v.Reason = "not sealed: the session is live, or the server stopped and has not restarted since"
	case err != nil:
		return v, err
	default:
		var s Seal
		if err := json.Unmarshal(b, &s); err != nil {
			add(Problem{What: "seal.json is not valid: " + err.Error()})
			break
		}
		v.Sealed, v.Complete, v.Reason, v.Head = true, s.Complete, s.Reason, s.Head
		if s.Session != v.Session {
			add(Problem{What: fmt.Sprintf("the seal is of session %s, not of %s: the recording was moved or replaced (a copy keeps its directory named by the session ID)", s.Session, v.Session)})
		}
		if s.Head != prev || s.Chunks != len(recs) {
			add(Problem{What: fmt.Sprintf("the seal names %d chunks ending in %.12s…, the chain has %d ending in %.12s…: chunks were added or removed after sealing", s.Chunks, s.Head, len(recs), prev)})
		}
		meta, err := os.ReadFile(filepath.Join(dir, "session.json"))
		if sum := sha256.Sum256(meta); err != nil || hex.EncodeToString(sum[:]) != s.MetaSHA256 {
			add(Problem{File: "session.json", What: "session metadata was modified after sealing"})
		}
		switch {
		case s.Signature == "":
			add(Problem{What: "the seal is not signed"})
		case pub == nil:
		default:
			sig, _ := base64.StdEncoding.DecodeString(s.Signature)
			if !ed25519.Verify(pub, s.payload(), sig) {
				add(Problem{What: fmt.Sprintf("the seal's signature does not verify with recording key %s (it names %s)", KeyFingerprint(pub), s.Key)})
			} else {
				v.Signed = true
			}
		}
	}
	v.OK = len(v.Problems) == 0
	return v, nil
}

// verifyFile checks one channel file against its chunks, naming each
// modified, removed or reordered chunk, a truncation or appended bytes.
func verifyFile(dir, name string, recs []ChainRecord) []Problem {
	var out []Problem
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return []Problem{{File: name, What: "channel file is missing or unreadable: " + err.Error()}}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return []Problem{{File: name, What: "channel file is unreadable: " + err.Error()}}
	}
	size := fi.Size()
	// Hashes are read from the file as needed: a recording of many
	// gigabytes is never held in memory.
	sumAt := func(off, n int64) string {
		if off < 0 || n < 0 || off+n > size {
			return ""
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
			return ""
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	// Chunks are contiguous: walk the file, matching each expected chunk.
	var pos int64
	found := make([]bool, len(recs))
	for i := 0; i < len(recs); i++ {
		r := recs[i]
		if found[i] {
			continue
		}
		if pos >= size {
			out = append(out, Problem{File: name, Chunk: r.Seq, What: fmt.Sprintf("file truncated at byte %d: chunk %d (bytes %d-%d) and later ones are missing", size, r.Seq, r.Off, r.Off+r.Len)})
			return out
		}
		if sumAt(pos, r.Len) == r.SHA256 {
			found[i] = true
			pos += r.Len
			continue
		}
		// Is a later chunk here instead?
		j := -1
		for k := i + 1; k < len(recs); k++ {
			if !found[k] && sumAt(pos, recs[k].Len) == recs[k].SHA256 {
				j = k
				break
			}
		}
		if j < 0 {
			if pos+r.Len > size {
				out = append(out, Problem{File: name, Chunk: r.Seq, What: fmt.Sprintf("file truncated at byte %d, inside chunk %d (bytes %d-%d)", size, r.Seq, r.Off, r.Off+r.Len)})
				return out
			}
			out = append(out, Problem{File: name, Chunk: r.Seq, What: fmt.Sprintf("chunk %d (bytes %d-%d) was modified", r.Seq, r.Off, r.Off+r.Len)})
			pos += r.Len
			continue
		}
		// Chunk j sits where chunk i belongs. If chunk i follows later,
		// they were reordered; otherwise chunk i was removed.
		after := pos + recs[j].Len
		if sumAt(after, r.Len) == r.SHA256 {
			out = append(out, Problem{File: name, Chunk: r.Seq, What: fmt.Sprintf("chunks %d and %d were swapped", r.Seq, recs[j].Seq)})
			found[i], found[j] = true, true
			pos = after + r.Len
			continue
		}
		out = append(out, Problem{File: name, Chunk: r.Seq, What: fmt.Sprintf("chunk %d (bytes %d-%d) was removed", r.Seq, r.Off, r.Off+r.Len)})
	}
	if pos < size {
		out = append(out, Problem{File: name, What: fmt.Sprintf("%d bytes after the last chunk are not in the chain", size-pos)})
	}
	return out
}

// Recover seals every recording under root that was not sealed, as
// after a crash: bytes written after the last chunk are chained as
// recovered, and the seal says the recording is incomplete and why. It
// returns the seals it made. A broken recording does not stop the others.
//
// mayRecover says whether the register knows the recording as cut off
// by a crash (a session started and never ended); otherwise Recover
// refuses to seal it and returns the error mayRecover gave, so that a
// recording made up, or cut short and stripped of its seal, is not
// signed anew.
func Recover(root string, key ed25519.PrivateKey, reason string, mayRecover func(id string) error) ([]Seal, []error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var seals []Seal
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir, err := SessionDir(root, e.Name())
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, sealFile)); err == nil {
			continue
		}
		if mayRecover != nil {
			if err := mayRecover(e.Name()); err != nil {
				errs = append(errs, fmt.Errorf("recording %s: %w", e.Name(), err))
				continue
			}
		}
		seal, err := recoverOne(dir, e.Name(), key, reason)
		if err != nil {
			errs = append(errs, fmt.Errorf("recording %s: %w", e.Name(), err))
			continue
		}
		seals = append(seals, seal)
	}
	return seals, errs
}

// ErrNotRecoverable is returned (wrapped) for an unsealed recording that
// the register does not know as cut off by a crash: its seal.json was
// removed, or it was made up. It is not sealed.
var ErrNotRecoverable = errors.New("not sealed again")

func recoverOne(dir, id string, key ed25519.PrivateKey, reason string) (Seal, error) {
	recs, partial, err := readChain(dir)
	if errors.Is(err, os.ErrNotExist) {
		// Created before the chain existed (an older release) or cut
		// off before its first chunk.
		recs, partial, err = nil, false, nil
	}
	if err != nil {
		return Seal{}, err
	}
	if partial {
		// Drop the cut line: the chain is rewritten from its whole records.
		var b bytes.Buffer
		for _, r := range recs {
			j, _ := json.Marshal(r)
			b.Write(append(j, '\n'))
		}
		// Through a new file and a rename: a crash here loses nothing.
		tmp := filepath.Join(dir, chainFile+".tmp")
		if err := writeSync(tmp, b.Bytes()); err != nil {
			return Seal{}, err
		}
		if err := os.Rename(tmp, filepath.Join(dir, chainFile)); err != nil {
			return Seal{}, err
		}
		if err := syncDir(dir); err != nil {
			return Seal{}, err
		}
	}
	if m, err := readMetaFile(dir); err == nil && m.ID != id {
		return Seal{}, fmt.Errorf("session.json names session %s, not %s: not sealed (moved or replaced?)", m.ID, id)
	}
	f, err := os.OpenFile(filepath.Join(dir, chainFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Seal{}, err
	}
	defer f.Close()
	c := &chain{f: f}
	end := map[string]int64{}
	for _, r := range recs {
		c.seq, c.head = r.Seq, r.Hash
		end[r.File] = r.Off + r.Len
	}
	// Bytes after the last chunk of each channel file.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Seal{}, err
	}
	for _, e := range ents {
		if !channelFileRe.MatchString(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return Seal{}, err
		}
		off := end[e.Name()]
		if fi.Size() <= off {
			continue
		}
		cf, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return Seal{}, err
		}
		h := sha256.New()
		_, err = io.Copy(h, io.NewSectionReader(cf, off, fi.Size()-off))
		cf.Close()
		if err != nil {
			return Seal{}, err
		}
		if _, err := c.add(e.Name(), off, fi.Size()-off, h.Sum(nil), true); err != nil {
			return Seal{}, err
		}
	}
	// The metadata says how it ended.
	if m, err := readMetaFile(dir); err == nil && m.End.IsZero() {
		m.End = time.Now().UTC()
		m.EndReason = reason
		b, _ := json.MarshalIndent(m, "", "  ")
		if err := writeSync(filepath.Join(dir, "session.json.tmp"), append(b, '\n')); err != nil {
			return Seal{}, err
		}
		if err := os.Rename(filepath.Join(dir, "session.json.tmp"), filepath.Join(dir, "session.json")); err != nil {
			return Seal{}, err
		}
	}
	return writeSeal(dir, id, c, false, reason, key)
}

func readMetaFile(dir string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// ReadSeal returns the seal of session id's recording under root;
// errors.Is(err, fs.ErrNotExist) when it is not sealed.
func ReadSeal(root, id string) (Seal, error) {
	dir, err := SessionDir(root, id)
	if err != nil {
		return Seal{}, err
	}
	b, err := os.ReadFile(filepath.Join(dir, sealFile))
	if err != nil {
		return Seal{}, err
	}
	var s Seal
	if err := json.Unmarshal(b, &s); err != nil {
		return Seal{}, fmt.Errorf("%s: %w", filepath.Join(dir, sealFile), err)
	}
	return s, nil
}
