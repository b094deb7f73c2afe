package recording

import (
	"bytes"
	"context"
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
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// What reaches the store while a session is live. Chunks alone do not
// make a recording: a node that dies leaves behind chunks whose chain
// records and metadata are on its disk. So while the session is live the
// uploader also ships, after each batch of chunks, the chain records that
// vouch for them (<id>/live/chain/<last seq>, JSON lines) and the session's
// metadata whenever it changes (<id>/live/session.json). Another node can
// then seal the recording as incomplete from the store alone
// (SealShipped), up to the last chunk whose record and bytes both
// arrived. Once the recording is sealed and shipped, the live objects go.
//
// seal.json is put before chain.jsonl and session.json, and only if the
// store holds none yet: of the node that made the recording and a node
// that seals it after the first was lost, the first seal in the store
// wins, and the other learns it (ErrSealedElsewhere). The live objects
// hold the chain records and the metadata as sealed before the seal goes:
// of a node cut off between its seal and the rest, a survivor stores the
// rest from them (SealShipped).

// ErrSealedElsewhere is returned (wrapped) when the store already holds
// another seal of the recording: another node sealed it first.
var ErrSealedElsewhere = errors.New("the recording store holds another seal of this recording")

func liveMetaKey(id string) string            { return id + "/live/session.json" }
func liveChainKey(id string, last int) string { return fmt.Sprintf("%s/live/chain/%08d", id, last) }

// putIfAbsent puts b at key unless the store holds an object there; an
// object that holds b already (our own earlier put) counts as put.
func (s *S3Store) putIfAbsent(ctx context.Context, key string, b []byte) error {
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	opts.SetMatchETagExcept("*")
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(b), int64(len(b)), opts)
	if err == nil {
		return nil
	}
	if code := minio.ToErrorResponse(err).Code; code != "PreconditionFailed" {
		return fmt.Errorf("recording store %s: put %s: %w", s.cfg.Name, key, err)
	}
	have, gerr := s.get(ctx, key)
	if gerr != nil {
		return fmt.Errorf("recording store %s: read %s: %w", s.cfg.Name, key, gerr)
	}
	if !bytes.Equal(have, b) {
		return fmt.Errorf("recording store %s: %s: %w", s.cfg.Name, key, ErrSealedElsewhere)
	}
	return nil
}

// get reads one object, no larger than any sekisho writes.
func (s *S3Store) get(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, 64<<20+1))
	if err == nil && len(b) > 64<<20 {
		err = errors.New("object larger than any sekisho writes")
	}
	return b, err
}

// shipLive ships the chain records of the chunks uploaded since the last
// batch, and the metadata if it changed.
func (u *Uploader) shipLive(ctx context.Context, dir, id string, st *S3Store, state *uploadState, recs []ChainRecord) error {
	if state.ChainShipped < state.Uploaded && state.Uploaded <= len(recs) {
		var b bytes.Buffer
		for _, r := range recs[state.ChainShipped:state.Uploaded] {
			j, _ := json.Marshal(r)
			b.Write(append(j, '\n'))
		}
		if err := st.put(ctx, liveChainKey(id, state.Uploaded), b.Bytes()); err != nil {
			return err
		}
		state.ChainShipped = state.Uploaded
		if err := u.saveState(dir, state); err != nil {
			return err
		}
	}
	meta, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(meta)
	if h := hex.EncodeToString(sum[:]); h != state.LiveMeta {
		if err := st.put(ctx, liveMetaKey(id), meta); err != nil {
			return err
		}
		state.LiveMeta = h
		return u.saveState(dir, state)
	}
	return nil
}

// dropLive removes the live objects of a recording sealed in the store;
// what is left behind is only clutter.
func (s *S3Store) dropLive(ctx context.Context, id string) {
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: id + "/live/", Recursive: true}) {
		if obj.Err != nil {
			return
		}
		s.client.RemoveObject(ctx, s.cfg.Bucket, obj.Key, minio.RemoveObjectOptions{})
	}
}

// shippedChain returns the chain records shipped live, in order, up to
// the first gap.
func (s *S3Store) shippedChain(ctx context.Context, id string) ([]ChainRecord, error) {
	var keys []string
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: id + "/live/chain/", Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("recording store %s: list the chain of %s: %w", s.cfg.Name, id, obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	sort.Strings(keys)
	bySeq := map[int]ChainRecord{}
	for _, k := range keys {
		b, err := s.get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("recording store %s: %s: %w", s.cfg.Name, k, err)
		}
		for line := range bytes.SplitSeq(b, []byte("\n")) {
			var r ChainRecord
			if len(line) == 0 || json.Unmarshal(line, &r) != nil {
				continue
			}
			if _, ok := bySeq[r.Seq]; !ok {
				bySeq[r.Seq] = r
			}
		}
	}
	var out []ChainRecord
	for seq := 1; ; seq++ {
		r, ok := bySeq[seq]
		if !ok {
			return out, nil
		}
		out = append(out, r)
	}
}

// SealShipped seals recording meta.ID as incomplete from what reached
// the store while its session was live, signs the seal with key, and
// stores it there: the node that made the recording was lost. The chain
// is kept up to the last chunk whose record links to the one before and
// whose bytes reached the store and match it; reason is given the count.
// work is a scratch directory; the recording is rebuilt in it.
//
// A recording the store holds sealed already (its node sealed and shipped
// it before it was lost, or another node sealed it first) is not sealed
// again: its own seal is returned once it verifies with key. One whose
// seal reached the store without its chain and metadata is finished from
// the live objects, if they are what the seal vouches for.
func (s *S3Store) SealShipped(ctx context.Context, meta Meta, work string, key ed25519.PrivateKey, reason string) (Seal, error) {
	id := meta.ID
	dir, err := SessionDir(work, id)
	if err != nil {
		return Seal{}, err
	}
	if s.Has(ctx, id) {
		if seal, err := s.sealedThere(ctx, id, work, key); err == nil {
			return seal, nil
		}
		// Sealed there by its node, cut off before the rest was stored:
		// the rest is in the live objects.
		os.RemoveAll(dir)
		if seal, err := s.finishSealed(ctx, id, work, key); err == nil {
			return seal, nil
		}
		// Sealed there by an earlier try of ours cut off before the rest
		// was stored: rebuilt below, the same but for its seal's time.
		os.RemoveAll(dir)
	}
	recs, err := s.shippedChain(ctx, id)
	if err != nil {
		return Seal{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Seal{}, err
	}
	if b, err := s.get(ctx, liveMetaKey(id)); err == nil {
		var m Meta
		if json.Unmarshal(b, &m) == nil && m.ID == id {
			meta = m
		}
	}
	// The chunks, in chain order, each checked against its record.
	files := map[string]*os.File{}
	size := map[string]int64{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var good []ChainRecord
	prev := ""
	for _, r := range recs {
		if r.Prev != prev || r.hash() != r.Hash || !channelFileRe.MatchString(r.File) || r.Off != size[r.File] || r.Len < 0 || r.Len > 64<<20 {
			break
		}
		b, err := s.get(ctx, chunkKey(id, r.Seq))
		if err != nil || int64(len(b)) != r.Len {
			break
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != r.SHA256 {
			break
		}
		f := files[r.File]
		if f == nil {
			if f, err = os.OpenFile(filepath.Join(dir, r.File), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
				return Seal{}, err
			}
			files[r.File] = f
		}
		if _, err := f.Write(b); err != nil {
			return Seal{}, err
		}
		size[r.File] += r.Len
		good = append(good, r)
		prev = r.Hash
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return Seal{}, err
		}
	}
	// The metadata names the channels that have bytes, and how it ended.
	var chans []string
	for _, c := range meta.Channels {
		if _, ok := files[c]; ok {
			chans = append(chans, c)
		}
	}
	for _, r := range good {
		// The channels are their event streams; a data file (.raw) is
		// named by its channel's header.
		if filepath.Ext(r.File) == ".cast" && !slices.Contains(chans, r.File) {
			chans = append(chans, r.File)
		}
	}
	meta.Channels = chans
	// What is known of the end is when the last chunk was chained; a
	// second try makes the same metadata.
	meta.End = meta.Start
	if len(good) > 0 {
		if at, err := time.Parse(time.RFC3339Nano, good[len(good)-1].At); err == nil {
			meta.End = at.UTC()
		}
	}
	meta.EndReason = reason
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := writeSync(filepath.Join(dir, "session.json"), append(mb, '\n')); err != nil {
		return Seal{}, err
	}
	var cb bytes.Buffer
	for _, r := range good {
		j, _ := json.Marshal(r)
		cb.Write(append(j, '\n'))
	}
	if err := writeSync(filepath.Join(dir, chainFile), cb.Bytes()); err != nil {
		return Seal{}, err
	}
	why := fmt.Sprintf("%s; verified up to chunk %d, the last that reached recording store %s", reason, len(good), s.cfg.Name)
	seal, err := writeSeal(dir, id, &chain{seq: len(good), head: prev}, false, why, key)
	if err != nil {
		return Seal{}, err
	}
	sb, err := os.ReadFile(filepath.Join(dir, sealFile))
	if err != nil {
		return Seal{}, err
	}
	// The seal first, and only if there is none: whoever sealed first wins.
	if err := s.putIfAbsent(ctx, id+"/"+sealFile, sb); err != nil {
		if !errors.Is(err, ErrSealedElsewhere) {
			return Seal{}, err
		}
		there, ok := s.sameSeal(ctx, id, seal, key)
		if !ok {
			os.RemoveAll(dir)
			return s.sealedThere(ctx, id, work, key)
		}
		seal = there
	}
	for _, name := range []string{chainFile, "session.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return Seal{}, err
		}
		if err := s.put(ctx, id+"/"+name, b); err != nil {
			return Seal{}, err
		}
	}
	s.dropLive(ctx, id)
	return seal, nil
}

// sealedThere fetches a recording sealed in the store, checks it with
// key and returns its seal.
func (s *S3Store) sealedThere(ctx context.Context, id, work string, key ed25519.PrivateKey) (Seal, error) {
	dir, err := s.Fetch(ctx, id, work)
	if err != nil {
		return Seal{}, err
	}
	v, err := Verify(dir, key.Public().(ed25519.PublicKey))
	if err != nil {
		return Seal{}, err
	}
	if !v.OK {
		var what []string
		for _, p := range v.Problems {
			what = append(what, p.What)
		}
		return Seal{}, fmt.Errorf("recording %s is sealed in store %s but does not verify: %s", id, s.cfg.Name, strings.Join(what, "; "))
	}
	return ReadSeal(work, id)
}

// sameSeal returns the seal the store holds of id if it seals what
// ours does (an earlier try of ours), signed with key.
func (s *S3Store) sameSeal(ctx context.Context, id string, ours Seal, key ed25519.PrivateKey) (Seal, bool) {
	b, err := s.get(ctx, id+"/"+sealFile)
	if err != nil {
		return Seal{}, false
	}
	var there Seal
	if json.Unmarshal(b, &there) != nil {
		return Seal{}, false
	}
	sig, _ := base64.StdEncoding.DecodeString(there.Signature)
	same := there.Session == ours.Session && there.Complete == ours.Complete && there.Reason == ours.Reason &&
		there.Chunks == ours.Chunks && there.Head == ours.Head && there.MetaSHA256 == ours.MetaSHA256 &&
		ed25519.Verify(key.Public().(ed25519.PublicKey), there.payload(), sig)
	return there, same
}

// finishSealed stores the chain and metadata of a recording whose seal
// (signed with key) reached the store without them: the node that sealed
// it was cut off between the seal and the rest. Both are rebuilt from the
// live objects, and stored only if they are what the seal vouches for:
// the chain records up to its head, the metadata of its hash. The
// recording must then verify as fetched from the store.
func (s *S3Store) finishSealed(ctx context.Context, id, work string, key ed25519.PrivateKey) (Seal, error) {
	seal, err := s.StoredSeal(ctx, id)
	if err != nil {
		return Seal{}, err
	}
	sig, _ := base64.StdEncoding.DecodeString(seal.Signature)
	if seal.Session != id || !ed25519.Verify(key.Public().(ed25519.PublicKey), seal.payload(), sig) {
		return Seal{}, fmt.Errorf("recording store %s: the seal of %s is not signed with the recording key", s.cfg.Name, id)
	}
	// session.json goes last: there, the rest was stored and is not
	// replaced.
	if _, err := s.client.StatObject(ctx, s.cfg.Bucket, id+"/session.json", minio.StatObjectOptions{}); err == nil {
		return Seal{}, fmt.Errorf("recording store %s: %s holds its metadata already", s.cfg.Name, id)
	}
	recs, err := s.shippedChain(ctx, id)
	if err != nil {
		return Seal{}, err
	}
	if len(recs) < seal.Chunks {
		return Seal{}, fmt.Errorf("recording store %s: %d chain records of %s shipped, its seal vouches for %d", s.cfg.Name, len(recs), id, seal.Chunks)
	}
	var chain bytes.Buffer
	prev := ""
	for _, r := range recs[:seal.Chunks] {
		if r.Prev != prev || r.hash() != r.Hash {
			return Seal{}, fmt.Errorf("recording store %s: the shipped chain of %s breaks at chunk %d", s.cfg.Name, id, r.Seq)
		}
		j, _ := json.Marshal(r)
		chain.Write(append(j, '\n'))
		prev = r.Hash
	}
	if prev != seal.Head {
		return Seal{}, fmt.Errorf("recording store %s: the shipped chain of %s does not end at its seal's head", s.cfg.Name, id)
	}
	meta, err := s.get(ctx, liveMetaKey(id))
	if err != nil {
		return Seal{}, fmt.Errorf("recording store %s: shipped metadata of %s: %w", s.cfg.Name, id, err)
	}
	if sum := sha256.Sum256(meta); hex.EncodeToString(sum[:]) != seal.MetaSHA256 {
		return Seal{}, fmt.Errorf("recording store %s: the shipped metadata of %s is not the one sealed", s.cfg.Name, id)
	}
	if err := s.put(ctx, id+"/"+chainFile, chain.Bytes()); err != nil {
		return Seal{}, err
	}
	if err := s.put(ctx, id+"/session.json", meta); err != nil {
		return Seal{}, err
	}
	there, err := s.sealedThere(ctx, id, work, key)
	if err != nil {
		return Seal{}, err
	}
	s.dropLive(ctx, id)
	return there, nil
}

// StoredSeal returns the seal the store holds of recording id.
func (s *S3Store) StoredSeal(ctx context.Context, id string) (Seal, error) {
	b, err := s.get(ctx, id+"/"+sealFile)
	if err != nil {
		return Seal{}, fmt.Errorf("recording store %s: seal of %s: %w", s.cfg.Name, id, err)
	}
	var seal Seal
	if err := json.Unmarshal(b, &seal); err != nil {
		return Seal{}, fmt.Errorf("recording store %s: seal of %s: %w", s.cfg.Name, id, err)
	}
	return seal, nil
}

// Unfinished reports whether the store holds a recording that is not
// whole: objects of it reached the store (chunks, live objects, its
// seal) but not its session.json, which goes last.
func (s *S3Store) Unfinished(ctx context.Context, id string) (bool, error) {
	_, err := s.client.StatObject(ctx, s.cfg.Bucket, id+"/session.json", minio.StatObjectOptions{})
	if err == nil {
		return false, nil
	}
	if code := minio.ToErrorResponse(err).Code; code != "NoSuchKey" {
		return false, fmt.Errorf("recording store %s: %s/session.json: %w", s.cfg.Name, id, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing once one object is seen
	obj, ok := <-s.client.ListObjects(lctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: id + "/", Recursive: true, MaxKeys: 1})
	if ok && obj.Err != nil {
		return false, fmt.Errorf("recording store %s: list %s: %w", s.cfg.Name, id, obj.Err)
	}
	return ok, nil
}
