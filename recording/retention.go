package recording

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// RetentionPolicy says how long recordings of a residency zone are kept
// after they end (zero: for ever), and which are under a legal hold.
type RetentionPolicy struct {
	For  func(zone string) time.Duration
	Held func(id string) bool
	// Key, when set, is the recording key: a spool recording is deleted
	// only if it verifies with it, so that its end and zone (which decide
	// the deletion) are the signed ones.
	Key ed25519.PublicKey
}

// expired reports whether a recording that ended at end in zone is past
// its retention at now.
func (p RetentionPolicy) expired(id, zone string, end, now time.Time) bool {
	keep := p.For(zone)
	return keep > 0 && !end.IsZero() && now.After(end.Add(keep)) && !p.Held(id)
}

// ExpireLocal deletes the sealed recordings in the spool at root that are
// past their retention and not held, and returns their metadata. A
// recording still uploading is left until its upload is done.
//
// A recording is known by its directory's name, a UUID, and so is its
// hold: session.json is not verified here, and whoever could change it
// must not move a hold off the recording by changing the ID it holds.
// A recording whose session.json names another ID is kept, and reported
// as possibly tampered with.
func ExpireLocal(root string, p RetentionPolicy, now time.Time) ([]Meta, []error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var (
		out  []Meta
		errs []error
	)
	for _, e := range ents {
		dir, err := SessionDir(root, e.Name())
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, sealFile)); err != nil {
			continue // live, or not recovered yet
		}
		if b, err := os.ReadFile(filepath.Join(dir, uploadFile)); err == nil {
			var st uploadState
			if json.Unmarshal(b, &st) != nil || !st.Done {
				continue
			}
		}
		m, err := readMetaFile(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("recording %s: %w", e.Name(), err))
			continue
		}
		if m.ID != e.Name() {
			errs = append(errs, fmt.Errorf("recording %s: session.json names session %q: kept, possibly tampered with", e.Name(), m.ID))
			continue
		}
		if !p.expired(e.Name(), m.Residency, m.End, now) {
			continue
		}
		if p.Key != nil {
			if v, err := Verify(dir, p.Key); err != nil || !v.OK || !v.Signed {
				errs = append(errs, fmt.Errorf("recording %s: past its retention but does not verify: kept (check it with sekisho verify)", e.Name()))
				continue
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("delete recording %s: %w", e.Name(), err))
			continue
		}
		out = append(out, m)
	}
	return out, errs
}

// Expire deletes the recordings in the store past their retention and
// not held, and returns their metadata.
func (s *S3Store) Expire(ctx context.Context, p RetentionPolicy, now time.Time) ([]Meta, []error) {
	var (
		out  []Meta
		errs []error
	)
	for obj := range s.client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{}) {
		if obj.Err != nil {
			return out, append(errs, obj.Err)
		}
		id := strings.TrimSuffix(obj.Key, "/")
		if _, err := SessionDir("/", id); err != nil {
			continue
		}
		o, err := s.client.GetObject(ctx, s.cfg.Bucket, id+"/session.json", minio.GetObjectOptions{})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := io.ReadAll(o)
		o.Close()
		var m Meta
		if err != nil || json.Unmarshal(b, &m) != nil {
			continue // not sealed yet: the metadata comes last
		}
		if !p.expired(id, m.Residency, m.End, now) {
			continue
		}
		if err := s.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("recording store %s: delete %s: %w", s.cfg.Name, id, err))
			continue
		}
		out = append(out, m)
	}
	return out, errs
}
