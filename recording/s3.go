package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Object stores. Every recording is first written to the local spool
// (the recordings directory): that is what record-before-forward and
// crash recovery rely on. When the target's residency zone has an
// S3-compatible store, the recording is streamed there as it is made:
// each chunk becomes an object as soon as it is chained
// (<id>/chunks/<seq>), and session.json, chain.jsonl and seal.json follow
// once the session is sealed. Progress is kept in the spool
// (upload.json), so uploads resume after a restart. A store that cannot
// be reached refuses new sessions of its zone, and ends live ones whose
// chunks it stops taking.

// S3Config configures one S3-compatible store.
type S3Config struct {
	Name      string
	Endpoint  string // host:port
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	Insecure  bool // plain http, for a store on loopback
	// KeepLocal keeps the spool copy after the upload completed.
	KeepLocal bool
	// StallTimeout is how long the store may fail to take a live
	// session's chunks before the session is ended; default 30s.
	StallTimeout time.Duration
}

// S3Store is an S3-compatible recording store.
type S3Store struct {
	cfg    S3Config
	client *minio.Client
}

// NewS3Store returns a store for cfg; it does not contact it.
func NewS3Store(cfg S3Config) (*S3Store, error) {
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("recording store %s: %w", cfg.Name, err)
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	return &S3Store{cfg: cfg, client: c}, nil
}

// Name names the store.
func (s *S3Store) Name() string { return s.cfg.Name }

// Check reports whether the store takes recordings now.
func (s *S3Store) Check(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("recording store %s (bucket %s at %s) unreachable: %w", s.cfg.Name, s.cfg.Bucket, s.cfg.Endpoint, err)
	}
	if !ok {
		return fmt.Errorf("recording store %s: bucket %s does not exist", s.cfg.Name, s.cfg.Bucket)
	}
	return nil
}

func (s *S3Store) put(ctx context.Context, key string, b []byte) error {
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return fmt.Errorf("recording store %s: put %s: %w", s.cfg.Name, key, err)
	}
	return nil
}

func chunkKey(id string, seq int) string { return fmt.Sprintf("%s/chunks/%08d", id, seq) }

// uploadState is upload.json in the spool directory of a recording. It
// names the store chosen when the session started: a resumed upload goes
// there or nowhere, whatever the config says by then.
type uploadState struct {
	Store     string `json:"store"`
	Endpoint  string `json:"endpoint"`
	Bucket    string `json:"bucket"`
	Residency string `json:"residency"`
	Uploaded  int    `json:"uploaded"` // chunks uploaded, in chain order
	Done      bool   `json:"done"`
	// ChainShipped is how many chain records were shipped live, and
	// LiveMeta the SHA-256 of the metadata shipped live.
	ChainShipped int    `json:"chain_shipped,omitempty"`
	LiveMeta     string `json:"live_meta,omitempty"`
	// SealedElsewhere: another node sealed the recording in the store
	// first (this node was taken for lost); the spool copy is kept.
	SealedElsewhere bool `json:"sealed_elsewhere,omitempty"`
}

func (s *S3Store) same(st uploadState) bool {
	return st.Store == s.cfg.Name && st.Endpoint == s.cfg.Endpoint && st.Bucket == s.cfg.Bucket
}

const uploadFile = "upload.json"

// Uploader streams recordings from the spool to their zone's store.
type Uploader struct {
	root   string
	routes *Routes
	log    *slog.Logger
	poll   time.Duration

	mu     sync.Mutex
	active map[string]context.CancelFunc
	wg     sync.WaitGroup
}

// NewUploader returns an uploader for the spool at root that streams
// each recording to the object store routes give its residency zone; a
// zone routed to the local spool keeps its recordings here.
func NewUploader(root string, routes *Routes, log *slog.Logger) *Uploader {
	if log == nil {
		log = slog.Default()
	}
	return &Uploader{root: root, routes: routes, log: log, poll: 250 * time.Millisecond, active: map[string]context.CancelFunc{}}
}

// Route returns the route of residency's recordings.
func (u *Uploader) Route(residency string) Route { return u.routes.For(residency) }

// StoreFor returns the object store of residency, or nil for the spool.
func (u *Uploader) StoreFor(residency string) *S3Store { return u.routes.For(residency).S3 }

// Start checks the store of the session's zone and starts streaming its
// recording there. An unreachable store refuses the session. onFail is
// called (once) if the store stops taking the session's chunks for
// longer than the stall limit, so that the session can be ended.
func (u *Uploader) Start(ctx context.Context, id, residency string, onFail func(error)) error {
	st := u.StoreFor(residency)
	if st == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := st.Check(cctx)
	cancel()
	if err != nil {
		return err
	}
	state := uploadState{Store: st.cfg.Name, Endpoint: st.cfg.Endpoint, Bucket: st.cfg.Bucket, Residency: strings.ToUpper(residency)}
	if err := u.saveState(filepath.Join(u.root, id), &state); err != nil {
		return fmt.Errorf("recording store %s: %w", st.Name(), err)
	}
	u.track(id, st, onFail)
	return nil
}

func (u *Uploader) track(id string, st *S3Store, onFail func(error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.active[id]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	u.active[id] = cancel
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() {
			u.mu.Lock()
			delete(u.active, id)
			u.mu.Unlock()
			cancel()
		}()
		u.follow(ctx, id, st, onFail)
	}()
}

// Resume restarts the uploads the spool holds unfinished, after a restart.
// An upload goes on only to the store it started to, and only if the
// zone residencyOf gives for the session (from the register) is still the
// one it was made for; otherwise the recording stays in the spool and the
// error is logged.
func (u *Uploader) Resume(residencyOf func(id string) (string, error)) {
	ents, err := os.ReadDir(u.root)
	if err != nil {
		return
	}
	for _, e := range ents {
		dir, err := SessionDir(u.root, e.Name())
		if err != nil {
			continue
		}
		var st uploadState
		b, err := os.ReadFile(filepath.Join(dir, uploadFile))
		if err != nil {
			continue // its zone had no store when it started: it stays here
		}
		if json.Unmarshal(b, &st) != nil || st.Done || st.SealedElsewhere {
			continue
		}
		zone, err := residencyOf(e.Name())
		store := u.StoreFor(zone)
		switch {
		case err != nil:
			u.log.Error("recording upload not resumed: the register does not know the session", "session", e.Name(), "err", err)
		case !strings.EqualFold(zone, st.Residency):
			u.log.Error("recording upload not resumed: its zone changed; it stays in the spool", "session", e.Name(), "zone", zone, "upload_zone", st.Residency)
		case store == nil || !store.same(st):
			u.log.Error("recording upload not resumed: its store is no longer the zone's store; it stays in the spool", "session", e.Name(), "store", st.Store)
		default:
			u.log.Info("resuming a recording upload", "session", e.Name(), "store", store.Name())
			u.track(e.Name(), store, nil)
		}
	}
}

// Close stops following live recordings (their uploads resume at the
// next start) and waits for the uploaders.
func (u *Uploader) Close() {
	u.mu.Lock()
	for _, c := range u.active {
		c()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// follow uploads id's chunks as they are chained, then its metadata once
// sealed.
func (u *Uploader) follow(ctx context.Context, id string, st *S3Store, onFail func(error)) {
	dir := filepath.Join(u.root, id)
	state := uploadState{Store: st.Name()}
	if b, err := os.ReadFile(filepath.Join(dir, uploadFile)); err == nil {
		json.Unmarshal(b, &state)
	}
	var failingSince time.Time
	failed := false
	t := time.NewTicker(u.poll)
	defer t.Stop()
	for {
		err := u.step(ctx, dir, id, st, &state)
		switch {
		case err == nil && state.Done:
			u.log.Info("recording uploaded", "session", id, "store", st.Name(), "chunks", state.Uploaded)
			if !st.cfg.KeepLocal {
				u.dropSpool(ctx, dir, id, st)
			}
			return
		case err == nil:
			failingSince = time.Time{}
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrSealedElsewhere):
			state.SealedElsewhere = true
			u.saveState(dir, &state)
			u.log.Error("another node sealed this recording in the store first, taking this node for lost: the spool copy is kept, the store's recording is the one of record",
				"session", id, "store", st.Name())
			return
		default:
			if failingSince.IsZero() {
				failingSince = time.Now()
				u.log.Warn("recording upload failing; retrying", "session", id, "store", st.Name(), "err", err)
			}
			if !failed && onFail != nil && time.Since(failingSince) > st.cfg.StallTimeout {
				failed = true
				onFail(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dropSpool removes the spool copy of an uploaded recording once it
// verifies here and its seal is in the store.
func (u *Uploader) dropSpool(ctx context.Context, dir, id string, st *S3Store) {
	v, err := Verify(dir, nil)
	if err != nil || !v.OK {
		u.log.Error("uploaded recording does not verify in the spool: the spool copy is kept", "session", id, "err", err, "problems", len(v.Problems))
		return
	}
	if _, err := st.client.StatObject(ctx, st.cfg.Bucket, id+"/"+sealFile, minio.StatObjectOptions{}); err != nil {
		u.log.Error("uploaded recording's seal not found in the store: the spool copy is kept", "session", id, "store", st.Name(), "err", err)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		u.log.Error("spool copy of an uploaded recording not removed", "session", id, "err", err)
	}
}

// step uploads what is new: chunks, then (once sealed) the metadata.
func (u *Uploader) step(ctx context.Context, dir, id string, st *S3Store, state *uploadState) error {
	recs, _, err := readChain(dir)
	if err != nil {
		return err
	}
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, r := range recs[min(state.Uploaded, len(recs)):] {
		f := files[r.File]
		if f == nil {
			if f, err = os.Open(filepath.Join(dir, r.File)); err != nil {
				return err
			}
			files[r.File] = f
		}
		if r.Len > 64<<20 {
			return fmt.Errorf("chunk %d of %s: %d bytes is not a chunk sekisho writes", r.Seq, r.File, r.Len)
		}
		b := make([]byte, r.Len)
		if _, err := f.ReadAt(b, r.Off); err != nil {
			return fmt.Errorf("read chunk %d of %s: %w", r.Seq, r.File, err)
		}
		// Only what the chain vouches for leaves the node.
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != r.SHA256 {
			return fmt.Errorf("chunk %d of %s does not match the chain: not uploaded (check the recording with sekisho verify)", r.Seq, r.File)
		}
		if err := st.put(ctx, chunkKey(id, r.Seq), b); err != nil {
			return err
		}
		state.Uploaded = r.Seq
		if err := u.saveState(dir, state); err != nil {
			return err
		}
	}
	if err := u.shipLive(ctx, dir, id, st, state, recs); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, sealFile)); err != nil {
		return nil // live: more chunks to come
	}
	if recs2, _, _ := readChain(dir); len(recs2) != state.Uploaded {
		return nil // chained while we uploaded
	}
	// The metadata as sealed goes live before the seal: a node cut off
	// after the seal leaves what it vouches for in the live objects.
	if err := u.shipLive(ctx, dir, id, st, state, recs); err != nil {
		return err
	}
	// The seal first, unless another node's is there; session.json
	// last: its presence in the store means the rest is there.
	seal, err := os.ReadFile(filepath.Join(dir, sealFile))
	if err != nil {
		return err
	}
	if err := st.putIfAbsent(ctx, id+"/"+sealFile, seal); err != nil {
		return err
	}
	for _, name := range []string{chainFile, "session.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := st.put(ctx, id+"/"+name, b); err != nil {
			return err
		}
	}
	state.Done = true
	if err := u.saveState(dir, state); err != nil {
		return err
	}
	st.dropLive(ctx, id)
	return nil
}

func (u *Uploader) saveState(dir string, st *uploadState) error {
	b, _ := json.Marshal(st)
	tmp := filepath.Join(dir, uploadFile+".tmp")
	if err := writeSync(tmp, b); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, uploadFile))
}

// Fetch rebuilds the recording id from st into dir/<id>, ready for
// Verify and Replay: the channel files are put together from their
// chunks in chain order.
func (s *S3Store) Fetch(ctx context.Context, id, dir string) (string, error) {
	out, err := SessionDir(dir, id)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", err
	}
	get := func(key string) ([]byte, error) {
		obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		defer obj.Close()
		// A hostile or broken store cannot make this read without end.
		b, err := io.ReadAll(io.LimitReader(obj, 64<<20+1))
		if err == nil && len(b) > 64<<20 {
			err = errors.New("object larger than any sekisho writes")
		}
		return b, err
	}
	for _, name := range []string{"session.json", chainFile, sealFile} {
		b, err := get(id + "/" + name)
		if err != nil {
			return "", fmt.Errorf("recording store %s: %s of %s: %w", s.cfg.Name, name, id, err)
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			return "", err
		}
	}
	recs, _, err := readChain(out)
	if err != nil {
		return "", err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, r := range recs {
		b, err := get(chunkKey(id, r.Seq))
		if err != nil {
			return "", fmt.Errorf("recording store %s: chunk %d of %s: %w", s.cfg.Name, r.Seq, id, err)
		}
		f := files[r.File]
		if f == nil {
			if strings.ContainsAny(r.File, `/\`) || r.File == ".." {
				return "", errors.New("chain names a file outside the recording")
			}
			if f, err = os.OpenFile(filepath.Join(out, r.File), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
				return "", err
			}
			files[r.File] = f
		}
		if _, err := f.Write(b); err != nil {
			return "", err
		}
	}
	return out, nil
}

// Delete removes recording id from the store.
func (s *S3Store) Delete(ctx context.Context, id string) error {
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: id + "/", Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if err := s.client.RemoveObject(ctx, s.cfg.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// Has reports whether the store holds a sealed recording id.
func (s *S3Store) Has(ctx context.Context, id string) bool {
	_, err := s.client.StatObject(ctx, s.cfg.Bucket, id+"/"+sealFile, minio.StatObjectOptions{})
	return err == nil
}
