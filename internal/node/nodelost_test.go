package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/broker/pgstore"
	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/miniotest"
	"github.com/sekisho/sekisho/internal/pgtest"
	"github.com/sekisho/sekisho/recording"
)

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openPG(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// survivor is a node reduced to what recovers lost nodes' sessions, on a
// store of its own.
func survivor(t *testing.T, dsn, name string, lostAfter time.Duration, routes *recording.Routes, key ed25519.PrivateKey) *Node {
	s := openPG(t, dsn)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &Node{store: s, brk: broker.New(broker.Config{Store: s, Logger: log}), log: log, name: name,
		lost: lostNodeJob{lostAfter: lostAfter, routes: routes, key: key}}
}

// lostNodeCluster is what the lost-node tests share: a database, a
// bucket of a real MinIO that every zone's recordings go to, the
// cluster's recording key, and a handle on the database.
type lostNodeCluster struct {
	dsn    string
	m      *miniotest.Server
	st     *recording.S3Store
	routes *recording.Routes
	key    ed25519.PrivateKey
	pub    ed25519.PublicKey
	s      *pgstore.Store
}

func newLostNodeCluster(t *testing.T, bucket string) lostNodeCluster {
	t.Helper()
	c := lostNodeCluster{dsn: pgtest.NewDatabase(t), m: miniotest.Start(t)}
	c.st = c.m.Bucket(t, bucket)
	var err error
	if c.routes, err = recording.NewRoutes([]recording.Route{{Store: bucket, Zones: []string{"*"}, S3: c.st}}); err != nil {
		t.Fatal(err)
	}
	_, c.key, _ = ed25519.GenerateKey(rand.Reader)
	c.pub = c.key.Public().(ed25519.PublicKey)
	c.s = openPG(t, c.dsn)
	return c
}

// liveRecording registers a live session of node and streams its
// recording to st until at least two chunks and their chain records are
// there; then its uploader stops, as when the node dies.
func liveRecording(t *testing.T, s broker.Store, m *miniotest.Server, bucket string, routes *recording.Routes, key ed25519.PrivateKey, node string) broker.SessionRecord {
	t.Helper()
	ctx := context.Background()
	r := broker.SessionRecord{ID: uuid.NewString(), Technician: "aiko", Target: "web-sg-01", Residency: "SG", Source: "192.0.2.7:50000",
		StartedAt: time.Now().UTC().Truncate(time.Second), Node: node, Trace: "[]"}
	if err := s.StartSession(ctx, &r); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	u := recording.NewUploader(spool, routes, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rec, err := recording.CreateSigned(spool, recording.Meta{ID: r.ID, Technician: r.Technician, Target: r.Target, Residency: "SG", Start: r.StartedAt}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(ctx, r.ID, "SG", nil); err != nil {
		t.Fatal(err)
	}
	ch, err := rec.Channel(recording.ChannelInfo{PTY: true, Term: "xterm", Cols: 80, Rows: 24, Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Stdout(bytes.Repeat([]byte("row 42 of the customer table\r\n"), 90000)); err != nil {
		t.Fatal(err)
	}
	// Two chunks with their chain records: the records go in batches
	// after the chunks, named by the last chunk they cover.
	waitFor(t, 30*time.Second, "two chunks and their chain records in the store", func() bool {
		return len(m.Objects(t, bucket, r.ID+"/chunks/")) >= 2 && m.LiveChainCovers(t, bucket, r.ID) >= 2
	})
	u.Close()
	return r
}

// A node that stops beating with a session live: two survivors watch,
// the session is ended "node lost" once, within node_lost_after and a
// few heartbeats, and its recording, sealed from what reached the store,
// verifies against the register as incomplete up to the last chunk
// shipped. A node that beats keeps its live session.
func TestLostNodeSessionEndedOnceAndSealedFromStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newLostNodeCluster(t, "node-lost-sg")
	dsn, m, st, routes, key, pub, s := c.dsn, c.m, c.st, c.routes, c.key, c.pub, c.s
	const lostAfter, beat = 2 * time.Second, 200 * time.Millisecond

	// node-b beats, serves a session, and dies; node-c beats on.
	if err := s.Heartbeat(ctx, "node-b", "127.0.0.1:2222", time.Now()); err != nil {
		t.Fatal(err)
	}
	dead := liveRecording(t, s, m, "node-lost-sg", routes, key, "node-b")
	shipped := len(m.Objects(t, "node-lost-sg", dead.ID+"/chunks/"))
	if err := s.Heartbeat(ctx, "node-b", "127.0.0.1:2222", time.Now()); err != nil {
		t.Fatal(err)
	}
	diedAt := time.Now() // its last heartbeat
	alive := broker.SessionRecord{ID: uuid.NewString(), Technician: "li", Target: "web-sg-01", Residency: "SG", StartedAt: time.Now().UTC(), Node: "node-c"}
	if err := s.StartSession(ctx, &alive); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for wctx.Err() == nil {
			s.Heartbeat(wctx, "node-c", "127.0.0.1:2223", diedAt)
			select {
			case <-wctx.Done():
			case <-time.After(beat):
			}
		}
	}()
	for _, name := range []string{"node-a", "node-d"} {
		n := survivor(t, dsn, name, lostAfter, routes, key)
		wg.Add(1)
		go func() { defer wg.Done(); n.watchLostNodes(wctx, beat) }()
	}

	var got broker.SessionRecord
	waitFor(t, lostAfter+10*time.Second, "the dead node's session ended and its seal registered", func() bool {
		var err error
		got, err = s.Session(ctx, dead.ID)
		return err == nil && got.Ended() && got.RecordingHead != ""
	})
	endedAfter := time.Since(diedAt)
	if got.EndReason != broker.EndNodeLost {
		t.Errorf("end reason %q, want %q", got.EndReason, broker.EndNodeLost)
	}
	if got.RecordingComplete {
		t.Error("the register calls the recording of a lost node's session complete")
	}
	events, err := s.SearchAudit(ctx, broker.AuditFilter{Kinds: []string{"session.node_lost"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Session != dead.ID || !strings.Contains(events[0].Detail, `"node":"node-b"`) {
		t.Fatalf("session.node_lost events: %+v; want one, of %s naming node-b", events, dead.ID)
	}
	if r, err := s.Session(ctx, alive.ID); err != nil || r.Ended() {
		t.Fatalf("the session of a node that beats: ended %v (%q), err %v; want it live", r.Ended(), r.EndReason, err)
	}

	// sekisho verify from any node: the store's recording against the register.
	dir, err := st.Fetch(ctx, dead.ID, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := recording.Verify(dir, pub)
	if err != nil {
		t.Fatal(err)
	}
	v.CheckRegister(true, got.Ended(), got.RecordingHead, got.RecordingChunks)
	if !v.OK || v.Complete || !v.Signed || v.Chunks < 2 || v.Chunks > shipped {
		t.Fatalf("verify: ok %v complete %v signed %v chunks %d problems %v; want ok, incomplete, signed, 2..%d chunks", v.OK, v.Complete, v.Signed, v.Chunks, v.Problems, shipped)
	}
	if !strings.Contains(v.Reason, "verified up to chunk") || !strings.Contains(v.Reason, "node-b") {
		t.Errorf("seal reason %q: want the node and how far it verifies", v.Reason)
	}
	again, _ := s.Session(ctx, dead.ID)
	if again.RecordingHead != got.RecordingHead || again.EndedAt != got.EndedAt {
		t.Errorf("the register changed after the seal: %+v, was %+v", again, got)
	}
	hardening.Report(t, "33", "a node stopped beating with a session live: of two survivors one ended it \"node lost\" %.1f s after its last heartbeat (node_lost_after %s), audited once; its recording sealed from the %d of %d chunks in S3 verifies as incomplete against the register; a node that beats kept its session",
		endedAfter.Seconds(), lostAfter, v.Chunks, shipped)
}

// A job under its advisory lock runs on one node at a time, and a job
// with an interval once per interval for the whole cluster.
func TestRunJobOnOneNodeAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	a, b := openPG(t, dsn), openPG(t, dsn)
	// inside has room for the job's signal: a job that starts before the
	// test waits for it must not drop it.
	inside := make(chan struct{}, 1)
	release := make(chan struct{})
	var running, most atomic.Int32
	job := func(ctx context.Context) error {
		if n := running.Add(1); n > most.Load() {
			most.Store(n)
		}
		defer running.Add(-1)
		select {
		case inside <- struct{}{}:
		default:
		}
		<-release
		return nil
	}
	done := make(chan bool)
	go func() {
		ran, err := a.RunJob(ctx, "retention", 0, job)
		if err != nil {
			t.Error(err)
		}
		done <- ran
	}()
	<-inside
	for range 5 {
		ran, err := b.RunJob(ctx, "retention", 0, job)
		if err != nil || ran {
			t.Fatalf("second node while the first runs the job: ran %v, err %v; want it skipped", ran, err)
		}
	}
	close(release)
	if !<-done {
		t.Fatal("the first node did not run the job")
	}
	if most.Load() != 1 {
		t.Fatalf("%d nodes ran the job at once", most.Load())
	}
	// The lock is free again, and an interval counts across nodes.
	if ran, err := b.RunJob(ctx, "hourly", time.Hour, func(context.Context) error { return nil }); err != nil || !ran {
		t.Fatalf("first hourly run: ran %v, err %v", ran, err)
	}
	if ran, err := a.RunJob(ctx, "hourly", time.Hour, func(context.Context) error { return nil }); err != nil || ran {
		t.Fatalf("hourly job on another node within the hour: ran %v, err %v; want it skipped", ran, err)
	}
	// A node whose connection dies while it holds a lock releases it.
	// (Only this test's database: the server is shared, and another
	// test's migration holds an advisory lock too.)
	c := openPG(t, dsn)
	held, gone := make(chan struct{}), make(chan struct{})
	defer close(gone)
	go c.RunJob(ctx, "request-expiry", 0, func(context.Context) error { close(held); <-gone; return nil })
	<-held
	if _, err := a.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the dead node's job lock to be released", func() bool {
		ran, err := a.RunJob(ctx, "request-expiry", 0, func(context.Context) error { return nil })
		return err == nil && ran
	})
}

// A node that cannot write its heartbeat closes its door and ends its
// live sessions by half of node_lost_after, well before a survivor may
// take it for lost; once it beats again it takes sessions again.
func TestNodeWithoutDatabaseStandsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dsn, err := srv.Database(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := openPG(t, dsn)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fence := &fenceListener{Listener: ln}
	defer fence.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := &Node{store: s, log: log, name: "node-b", started: time.Now(), fence: fence, ln: fence}
	var ended atomic.Int32
	standBack := make(chan time.Time, 1)
	const lostAfter, beat = 3 * time.Second, 200 * time.Millisecond
	wctx, cancel := context.WithCancel(ctx)
	hb := make(chan struct{})
	go func() {
		defer close(hb)
		n.heartbeat(wctx, beat, lostAfter, time.Now(), func(why string) int {
			ended.Add(1)
			standBack <- time.Now()
			return 1
		})
	}()
	defer func() { cancel(); <-hb }()
	waitFor(t, 10*time.Second, "a heartbeat", func() bool {
		nodes, err := s.Nodes(ctx)
		return err == nil && len(nodes) == 1 && nodes[0].Silent < time.Second
	})
	if err := srv.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	var at time.Time
	select {
	case at = <-standBack:
	case <-time.After(lostAfter + 5*time.Second):
		t.Fatal("the node did not stand back without its database")
	}
	if d := at.Sub(lostAt); d >= lostAfter {
		t.Fatalf("stood back %s after losing the database; want it before node_lost_after (%s)", d, lostAfter)
	}
	// Its door is closed: a connection is closed at once.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go fence.Accept()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a node standing back kept a connection open")
	}
	c.Close()
	// Balancers' checks say why.
	h := &health{node: "node-b", vault: func(context.Context) error { return nil }, recDir: func() error { return nil },
		store: func(ctx context.Context) error { return s.ProbeWrite(ctx, "node-b") }, standing: fence.closed.Load, log: log}
	readyz := func() (int, string) {
		w := httptest.NewRecorder()
		h.serve(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return w.Code, w.Body.String()
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, `"store":"not writable"`) || !strings.Contains(body, `"node":"standing back`) {
		t.Errorf("/readyz of a node standing back without its database: %d %s", code, body)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the node to take sessions again", func() bool { return !fence.closed.Load() })
	waitFor(t, 30*time.Second, "/readyz to say ready", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if ended.Load() != 1 {
		t.Errorf("live sessions ended %d times, want once", ended.Load())
	}
}

// A node frozen past half of node_lost_after (suspended, starved) finds
// out at its next heartbeat and ends what it still relays: another node
// may have taken those sessions for lost and sealed their recordings.
func TestNodeFrozenEndsItsSessionsWhenItWakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openPG(t, pgtest.NewDatabase(t))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fence := &fenceListener{Listener: ln}
	defer fence.Close()
	n := &Node{store: s, log: log, name: "node-f", started: time.Now(), fence: fence, ln: fence}
	const lostAfter, beat = 3 * time.Second, 100 * time.Millisecond
	why := make(chan string, 4)
	wctx, cancel := context.WithCancel(ctx)
	hb := make(chan struct{})
	go func() {
		defer close(hb)
		// Its last heartbeat was asked for a node_lost_after ago.
		n.heartbeat(wctx, beat, lostAfter, time.Now().Add(-lostAfter), func(w string) int { why <- w; return 1 })
	}()
	defer func() { cancel(); <-hb }()
	select {
	case w := <-why:
		if w != silentReason {
			t.Errorf("ended its sessions because %q, want %q", w, silentReason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a node that woke after a long silence kept its live sessions")
	}
	// Beating on time afterwards, it ends nothing more.
	select {
	case w := <-why:
		t.Errorf("ended sessions again while beating on time: %q", w)
	case <-time.After(5 * beat):
	}
}
