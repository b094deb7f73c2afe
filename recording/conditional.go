package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
)

// ErrNoConditionalWrites is returned by CheckConditionalWrites for a store
// that takes a second put of one key with If-None-Match: *.
var ErrNoConditionalWrites = errors.New("the store does not honour If-None-Match: * (conditional writes)")

// CheckConditionalWrites puts a probe object twice with If-None-Match: *
// and removes it. Several nodes rely on the store refusing the second:
// the first node to put a recording's seal wins, and a store that takes
// both would let two nodes each take their seal for the winner. An error
// other than ErrNoConditionalWrites says the probe could not be made.
func (s *S3Store) CheckConditionalWrites(ctx context.Context) error {
	key := ".sekisho-probe/" + uuid.NewString()
	defer s.client.RemoveObject(context.WithoutCancel(ctx), s.cfg.Bucket, key, minio.RemoveObjectOptions{})
	for i := range 2 {
		opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
		opts.SetMatchETagExcept("*")
		body := []byte("sekisho probe")
		_, err := s.client.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(body), int64(len(body)), opts)
		switch {
		case i == 0 && err != nil:
			return fmt.Errorf("recording store %s: probe of conditional writes: %w", s.cfg.Name, err)
		case i == 1 && err == nil:
			return fmt.Errorf("recording store %s (bucket %s at %s): %w: with several nodes, two could each take their seal of a recording for the one that won; use a store that honours it (Amazon S3, MinIO)",
				s.cfg.Name, s.cfg.Bucket, s.cfg.Endpoint, ErrNoConditionalWrites)
		case i == 1 && minio.ToErrorResponse(err).Code != "PreconditionFailed":
			return fmt.Errorf("recording store %s: probe of conditional writes: %w", s.cfg.Name, err)
		}
	}
	return nil
}
