package web

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// indexPoll is how often ended sessions are looked for to index.
const indexPoll = time.Second

// maxIndexedText bounds the text indexed per session, typed and shown
// each: search finds what happened in the first megabytes of a session.
const maxIndexedText = 2 << 20

// RunIndexer indexes the text of ended sessions for search, as they end
// and, at the first run, those that ended before; it returns when ctx
// ends. A recording that is not on this node (another node's, or
// uploaded away) is indexed as empty, so that it is not read again.
func (s *Server) RunIndexer(ctx context.Context) {
	t := time.NewTicker(indexPoll)
	defer t.Stop()
	failing := false
	for {
		err := s.indexSome(ctx)
		if err != nil && !failing && ctx.Err() == nil {
			s.log.Error("web: session text cannot be indexed; search misses recent sessions", "err", err)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// indexSome indexes the ended sessions not indexed yet, a batch at a time.
func (s *Server) indexSome(ctx context.Context) error {
	for {
		ids, err := s.cfg.Store.SessionsToIndex(ctx, 50)
		if err != nil || len(ids) == 0 {
			return err
		}
		for _, id := range ids {
			txt, err := recording.SessionText(s.cfg.RecordingDir, id, maxIndexedText)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("web: recording cannot be read for search; indexed as empty", "session", id, "err", err)
			}
			doc := broker.SessionText{Typed: txt.Typed, Shown: txt.Shown, Files: txt.Files, Commands: txt.Commands}
			if err := s.cfg.Store.IndexSessionText(ctx, id, doc); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
