package web

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/units"
	"github.com/sekisho/sekisho/recording"
)

// Recordings as the console shows them: verified against their seal and
// the register, their channels and timeline, and a channel as asciicast
// for the player.

// channelInfo describes one recorded channel.
type channelInfo struct {
	N     int    `json:"channel"`
	Kind  string `json:"kind"`
	PTY   bool   `json:"pty"`
	Title string `json:"title"`
	Cols  int    `json:"cols"`
	Rows  int    `json:"rows"`
}

// integrity is a recording's verification, in a reviewer's words.
type integrity struct {
	State    string   `json:"state"` // verified, incomplete, tampered, live, missing
	Detail   string   `json:"detail"`
	Problems []string `json:"problems,omitempty"`
}

// recordingFacts is what reading a whole recording tells a session page:
// its verification, channels and timeline.
type recordingFacts struct {
	head      string // the register's seal head it was read under
	integrity integrity
	channels  []channelInfo
	timeline  []recording.TimelineEvent
}

// maxCachedFacts bounds the recordings whose facts are kept.
const maxCachedFacts = 256

// recordingFacts reads a recording whole, for its verification, channels
// and timeline. An ended session's facts are kept (under the seal head the
// register holds, so that a re-sealed recording is read again), and at
// most two recordings are read at once: reloading the page of a large
// recording costs nothing, and many reviewers cannot tie up the node's
// disk and CPU.
func (s *Server) recordingFacts(ctx context.Context, rec broker.SessionRecord) (recordingFacts, error) {
	cacheable := rec.Ended() && rec.RecordingHead != ""
	if cacheable {
		s.factsMu.Lock()
		f, ok := s.facts[rec.ID]
		s.factsMu.Unlock()
		if ok && f.head == rec.RecordingHead {
			return f, nil
		}
	}
	select {
	case s.heavy <- struct{}{}:
		defer func() { <-s.heavy }()
	case <-ctx.Done():
		return recordingFacts{}, ctx.Err()
	}
	f := recordingFacts{head: rec.RecordingHead, integrity: s.verify(rec), channels: []channelInfo{}, timeline: []recording.TimelineEvent{}}
	if f.integrity.State != "missing" {
		f.channels = channels(s.cfg.RecordingDir, rec.ID)
		if tl, err := recording.Timeline(s.cfg.RecordingDir, rec.ID); err == nil && tl != nil {
			f.timeline = tl
		}
	}
	if cacheable && f.integrity.State != "missing" {
		s.factsMu.Lock()
		if len(s.facts) >= maxCachedFacts {
			for k := range s.facts { // any one: the map's order is random
				delete(s.facts, k)
				break
			}
		}
		s.facts[rec.ID] = f
		s.factsMu.Unlock()
	}
	return f, nil
}

// channels lists a recording's channels with their headers.
func channels(root, id string) []channelInfo {
	files, err := recording.Channels(root, id)
	if err != nil {
		return []channelInfo{}
	}
	out := []channelInfo{}
	for i, cf := range files {
		c := channelInfo{N: i + 1}
		if f, err := os.Open(cf.Path); err == nil {
			if cr, err := recording.NewCastReader(f, cf.Name); err == nil {
				h := cr.Header()
				c.Kind, c.PTY, c.Title, c.Cols, c.Rows = h.Kind, h.PTY, h.Title, h.Width, h.Height
				if c.Title == "" {
					c.Title = h.Command
				}
			}
			f.Close()
		}
		out = append(out, c)
	}
	return out
}

// verify checks a recording against its seal and the register.
func (s *Server) verify(rec broker.SessionRecord) integrity {
	dir, err := recording.SessionDir(s.cfg.RecordingDir, rec.ID)
	if err != nil {
		return integrity{State: "missing", Detail: err.Error()}
	}
	if _, err := os.Stat(dir); err != nil {
		return integrity{State: "missing", Detail: "the recording is not on this node (another node, or uploaded to its zone's store: sekisho fetch " + rec.ID + ")"}
	}
	if !rec.Ended() {
		return integrity{State: "live", Detail: "the session is live; its recording is sealed when it ends"}
	}
	if s.cfg.RecordingKey == nil {
		return integrity{State: "incomplete", Detail: "no recording key to verify with"}
	}
	v, err := recording.Verify(dir, s.cfg.RecordingKey)
	if err != nil {
		return integrity{State: "tampered", Detail: err.Error()}
	}
	v.CheckRegister(true, rec.Ended(), rec.RecordingHead, rec.RecordingChunks)
	in := integrity{}
	for _, p := range v.Problems {
		msg := p.What
		if p.File != "" {
			msg = p.File + ": " + msg
		}
		in.Problems = append(in.Problems, msg)
	}
	switch {
	case !v.OK:
		in.State, in.Detail = "tampered", "the recording does not match its signed seal or the register"
	case !v.Complete:
		in.State, in.Detail = "incomplete", "signed, but incomplete: "+v.Reason
	default:
		in.State, in.Detail = "verified", strconv.Itoa(v.Chunks)+" chunks, "+units.Bytes(v.Bytes)+", seal signed by "+recording.KeyFingerprint(s.cfg.RecordingKey)
	}
	return in
}

// maxCastBytes bounds what the browser player is given of one channel:
// a player holds the whole recording in memory, and a target that printed
// gigabytes must not hang the reviewer's browser. Beyond it the player
// shows a note; sekisho replay and export have no such bound.
const maxCastBytes = 32 << 20

// cast serves one channel as asciicast v2 for the player, with recorded
// control sequences that could act on a viewer removed, and cut at
// maxCastBytes.
func (s *Server) cast(w http.ResponseWriter, r *request) {
	rec, err := s.visibleSession(r, r.PathValue("id"), "replay")
	if err != nil {
		s.fail(w, r, true, err)
		return
	}
	n, _ := strconv.Atoi(r.URL.Query().Get("channel"))
	s.cfg.Broker.Audit(r.Context(), broker.AuditEvent{Kind: broker.EventWebReplay, Technician: r.p.Name, Target: rec.Target, Source: "web", Session: rec.ID,
		Detail: broker.JSONDetail(map[string]int{"channel": n})})
	pr, pw := io.Pipe()
	go func() {
		_, err := recording.ExportCast(pw, s.cfg.RecordingDir, rec.ID, recording.CastOptions{Channel: n})
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Cache-Control", "no-store")
	if err := copyCast(w, pr, maxCastBytes); err != nil {
		s.log.Warn("web: cast export failed", "session", rec.ID, "err", err)
	}
}

// copyCast copies an asciicast line by line until limit bytes, then ends
// it with an event that says where the rest is.
func copyCast(w io.Writer, r io.Reader, limit int) error {
	br := bufio.NewReaderSize(r, 64<<10)
	written, last := 0, "0"
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// An event longer than the buffer: read it whole (the
			// recorder's events are bounded by its relay buffer).
			rest, err2 := br.ReadBytes('\n')
			line, err = append(slices.Clone(line), rest...), err2
		}
		if len(line) > 0 {
			if written+len(line) > limit && written > 0 {
				note := fmt.Sprintf("[%s, \"o\", \"\\r\\n[sekisho: the recording goes on beyond %s; the browser player stops here. sekisho replay and sekisho export show all of it.]\\r\\n\"]\n", last, units.Bytes(int64(limit)))
				_, werr := io.WriteString(w, note)
				return werr
			}
			if written > 0 && len(line) > 1 && line[0] == '[' {
				if i := bytes.IndexByte(line, ','); i > 1 {
					last = string(line[1:i])
				}
			}
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			written += len(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *Server) timeline(w http.ResponseWriter, r *request) (any, error) {
	rec, err := s.visibleSession(r, r.PathValue("id"), "view")
	if err != nil {
		return nil, err
	}
	facts, err := s.recordingFacts(r.Context(), rec)
	if err != nil {
		return nil, err
	}
	tl := facts.timeline
	if n, err := strconv.Atoi(r.URL.Query().Get("channel")); err == nil {
		tl = slices.DeleteFunc(slices.Clone(tl), func(e recording.TimelineEvent) bool { return e.Channel != n })
	}
	if tl == nil {
		tl = []recording.TimelineEvent{}
	}
	return tl, nil
}
