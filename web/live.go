package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// A live session is streamed to the browser as server-sent events in the
// form asciinema-player's "eventsource" driver reads:
//
//	data: {"cols":80,"rows":24}          first: the terminal's size
//	data: [0.153,"o","text"]             output, seconds since the stream began
//	data: [2.5,"r",{"cols":120,"rows":40}] the technician's terminal was resized
//	: keep-alive                         a comment every liveKeepAlive
//	data: {"state":"offline"}            no live recording of it here, nor on the node that serves it
//	event: done                          last: the stream ended, do not reconnect
//	data: ended
//
// The output is what recording.Watch shows: sanitized terminal output of
// the session from its live point, read-only by construction. A session
// another node serves is relayed from that node (Config.Peers), which
// runs the same watch on its recording. A browser
// that loses the connection reconnects by itself and gets a fresh stream.
const (
	liveKeepAlive    = 15 * time.Second
	liveWriteTimeout = 30 * time.Second // a browser that reads nothing for this long is dropped
)

// maxLiveSize is the most columns or rows a live view passes to the player.
const maxLiveSize = 1000

// liveRecheck is how often a live view checks that its watcher may still
// watch: signed in, not locked, key still registered, the session within
// their residencies.
const liveRecheck = time.Second

// liveWatch follows a live session and writes its terminal to w, as
// recording.Watch does: from this node's recordings, or relayed from the
// node that serves it.
type liveWatch func(ctx context.Context, w io.Writer, opt recording.WatchOptions) error

// Peers follows live sessions that other nodes serve, over the cluster's
// node-to-node link. A session the node does not serve (any more) is
// recording.ErrNoRecording.
type Peers interface {
	Watch(ctx context.Context, node, id, watcher string, w io.Writer, opt recording.WatchOptions) error
}

// serveLive streams the terminal of live session id until the session
// ends, the browser goes away, or allowed reports that the person may no
// longer watch it (checked every liveRecheck). watch follows it; cols
// and rows are the terminal's size as far as known, which a size the
// watch reports before any output replaces. The caller has checked that
// the person may watch it now.
func (s *Server) serveLive(w http.ResponseWriter, r *http.Request, id string, watch liveWatch, cols, rows int, allowed func() bool) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	st := &liveStream{w: w, rc: http.NewResponseController(w), cols: cols, rows: rows}
	// A live view outlasts the request's read deadline.
	_ = st.rc.SetReadDeadline(time.Time{})

	var wg sync.WaitGroup
	wg.Go(func() { st.keepAlive(ctx) })
	revoked := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(liveRecheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !allowed() {
				close(revoked)
				cancel()
				return
			}
		}
	})
	err := watch(ctx, st, recording.WatchOptions{Resize: st.resize, StopHint: "leave this page to stop watching"})
	cancel()
	wg.Wait()

	select {
	case <-revoked:
		st.end("\r\n[sekisho: you may no longer watch this session]\r\n")
		return
	default:
	}
	switch {
	case err == nil:
		st.end("")
	case r.Context().Err() != nil, errors.Is(err, errWatcherGone):
		// The browser went away: there is nobody to tell.
	case errors.Is(err, recording.ErrNoRecording) && !st.started:
		st.offline()
	case !st.started:
		s.log.Error("live view", "session", id, "err", err)
		http.Error(w, "the live view failed; see the server log", http.StatusInternalServerError)
	default:
		s.log.Error("live view", "session", id, "err", err)
		st.end("\r\n[sekisho: the live view stopped on an error; reload to watch again]\r\n")
	}
}

// errWatcherGone is returned by liveStream's writes once the browser does
// not take what is sent.
var errWatcherGone = errors.New("live view: browser gone")

// liveStream turns the terminal stream Watch writes into server-sent
// events. Watch writes from one goroutine and keepAlive from another, so
// every write to the response holds mu.
type liveStream struct {
	w          http.ResponseWriter
	rc         *http.ResponseController
	cols, rows int

	mu      sync.Mutex
	started bool      // the headers and the size event are sent
	start   time.Time // when the size event was sent
	carry   []byte    // an incomplete UTF-8 sequence at the end of the last write
	err     error     // sticky: the first failed write
}

// Write sends p as one output event. The event's text is whole UTF-8
// characters: a character split across writes is sent with the next.
func (st *liveStream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.begin(); err != nil {
		return 0, err
	}
	b := append(st.carry, p...)
	n := completeUTF8(b)
	st.carry = slices.Clone(b[n:])
	if n == 0 {
		return len(p), nil
	}
	t := math.Round(time.Since(st.start).Seconds()*1000) / 1000
	ev, err := json.Marshal([]any{t, "o", string(b[:n])})
	if err != nil {
		return 0, err
	}
	if err := st.send("data: " + string(ev) + "\n\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}

// resize tells the player the terminal's new size. Sizes the player
// could not draw (over maxLiveSize) are not passed on.
func (st *liveStream) resize(cols, rows int) error {
	if cols > maxLiveSize || rows > maxLiveSize {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started && st.err == nil {
		// Told before any output: the size to start with.
		st.cols, st.rows = cols, rows
		return st.begin()
	}
	if err := st.begin(); err != nil {
		return err
	}
	if cols == st.cols && rows == st.rows {
		return nil
	}
	st.cols, st.rows = cols, rows
	t := math.Round(time.Since(st.start).Seconds()*1000) / 1000
	// The eventsource driver hands the data to the terminal as it is: an
	// object, not the "COLSxROWS" of a recording file.
	return st.send(fmt.Sprintf("data: [%g,\"r\",{\"cols\":%d,\"rows\":%d}]\n\n", t, cols, rows))
}

// begin sends the response headers and the terminal's size, once.
func (st *liveStream) begin() error {
	if st.started || st.err != nil {
		return st.err
	}
	st.started = true
	h := st.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a reverse proxy must not hold events back
	st.w.WriteHeader(http.StatusOK)
	st.start = time.Now()
	return st.send(fmt.Sprintf("data: {\"cols\":%d,\"rows\":%d}\n\n", st.cols, st.rows))
}

// send writes one event and flushes it to the browser, within
// liveWriteTimeout.
func (st *liveStream) send(event string) error {
	if st.err != nil {
		return st.err
	}
	// Not every ResponseWriter supports deadlines; the request's context
	// still ends the stream when the connection closes.
	_ = st.rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout))
	_, err := st.w.Write([]byte(event))
	if err == nil {
		err = st.rc.Flush()
	}
	if err != nil {
		st.err = fmt.Errorf("%w: %w", errWatcherGone, err)
	}
	return st.err
}

// keepAlive sends a comment every liveKeepAlive until ctx is done, so that
// proxies and browsers keep a quiet stream open.
func (st *liveStream) keepAlive(ctx context.Context) {
	tick := time.NewTicker(liveKeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st.mu.Lock()
		if st.started {
			_ = st.send(": keep-alive\n\n") // a failure is sticky: Watch's next write returns it
		}
		st.mu.Unlock()
	}
}

// end shows text, if any, and tells the player that the stream ended, so
// that it does not reconnect.
func (st *liveStream) end(text string) {
	if text != "" {
		_, _ = st.Write([]byte(text))
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.begin() == nil {
		_ = st.send("event: done\ndata: ended\n\n")
	}
}

// offline tells the player that there is no live recording of the
// session here (it has not started, or runs on another node), then ends.
func (st *liveStream) offline() {
	st.mu.Lock()
	err := st.begin()
	if err == nil {
		err = st.send("data: {\"state\":\"offline\"}\n\n")
	}
	st.mu.Unlock()
	if err == nil {
		st.end("")
	}
}

// completeUTF8 returns the length of b without an incomplete UTF-8
// sequence at its end. Invalid bytes count as complete: JSON encoding
// replaces them.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

// liveSize returns the terminal size of the session's most recent
// terminal channel in root, the one a watch joins, or 80x24 before it has
// one or when the player could not draw it.
func liveSize(root, id string) (cols, rows int) {
	cols, rows, ok := recording.TerminalSize(root, id)
	if !ok || cols > maxLiveSize || rows > maxLiveSize {
		return 80, 24
	}
	return cols, rows
}

// liveSource says where the live view of rec comes from: this node's
// recordings, or, for a live session another node serves, that node over
// the cluster's link; detail says which, for the audit log.
func (s *Server) liveSource(rec broker.SessionRecord, watcher string) (watch liveWatch, cols, rows int, detail string) {
	if rec.Node != "" && rec.Node != s.cfg.NodeName && !rec.Ended() && s.cfg.Peers != nil {
		return func(ctx context.Context, w io.Writer, opt recording.WatchOptions) error {
			return s.cfg.Peers.Watch(ctx, rec.Node, rec.ID, watcher, w, opt)
		}, 80, 24, "served by node " + rec.Node
	}
	cols, rows = liveSize(s.cfg.RecordingDir, rec.ID)
	if rec.Node != "" {
		detail = "served by node " + rec.Node
	}
	return localWatch(s.cfg.RecordingDir, rec.ID), cols, rows, detail
}

// localWatch follows session id in this node's recordings under root.
func localWatch(root, id string) liveWatch {
	return func(ctx context.Context, w io.Writer, opt recording.WatchOptions) error {
		return recording.Watch(ctx, w, root, id, opt)
	}
}
