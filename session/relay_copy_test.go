package session

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// chunkedReader returns its data in reads of random sizes up to max, or
// up to the caller's buffer when max is 0 (as an ssh channel with a full
// window does).
type chunkedReader struct {
	data []byte
	rnd  *rand.Rand
	max  int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if r.max > 0 {
		n = min(n, 1+r.rnd.IntN(r.max))
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// sink is a writer that records what arrived, guarded for the writer
// goroutine of copyOverlapped.
type sink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	failAt int // fail the write that would pass this many bytes (0: never)
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAt > 0 && s.buf.Len()+len(p) > s.failAt {
		return 0, errors.New("technician gone")
	}
	return s.buf.Write(p)
}

func (s *sink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

// recordBefore returns a record function that keeps what it is given and
// fails the test if dst ever holds more than was recorded: nothing is
// relayed before it is recorded.
func recordBefore(t *testing.T, dst *sink) (func([]byte) error, *bytes.Buffer) {
	var recorded bytes.Buffer
	return func(p []byte) error {
		if got := dst.len(); got > recorded.Len() {
			t.Errorf("%d bytes relayed but only %d recorded", got, recorded.Len())
		}
		recorded.Write(p)
		return nil
	}, &recorded
}

func testData(n int) []byte {
	b := make([]byte, n)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// TestCopyRecordedBulkAndInteractive: every byte arrives in order and is
// recorded, and never reaches the other side before the recording holds
// it, for interactive-sized reads and for a bulk transfer (which switches
// to overlapped writing once the buffer is at its largest).
func TestCopyRecordedBulkAndInteractive(t *testing.T) {
	var sent, relayed, recordedAll int
	for _, tc := range []struct {
		name string
		n    int
		max  int
	}{
		{"keystrokes", 64 << 10, 16},
		{"bulk", 8 << 20, 0},
		{"mixed reads", 8 << 20, 300 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := testData(tc.n)
			src := &chunkedReader{data: data, rnd: rand.New(rand.NewPCG(3, 4)), max: tc.max}
			dst := &sink{}
			record, recorded := recordBefore(t, dst)
			var n atomic.Int64
			eof, err := copyRecorded(src, dst, record, &n)
			if !eof || err != nil {
				t.Fatalf("copyRecorded = eof %v, err %v; want EOF and no error", eof, err)
			}
			if !bytes.Equal(dst.bytes(), data) {
				t.Fatalf("relayed %d bytes that differ from the %d sent", dst.len(), len(data))
			}
			if !bytes.Equal(recorded.Bytes(), data) {
				t.Fatalf("recorded %d bytes that differ from the %d sent", recorded.Len(), len(data))
			}
			if n.Load() != int64(len(data)) {
				t.Fatalf("counted %d bytes, relayed %d", n.Load(), len(data))
			}
			sent += len(data)
			relayed += dst.len()
			recordedAll += recorded.Len()
		})
	}
	hardening.Report(t, "14", "keystroke-sized reads, an 8 MiB bulk copy and 8 MiB in mixed reads: %d of %d relayed bytes recorded (%d sent), none relayed before it was recorded", recordedAll, relayed, sent)
}

// TestCopyRecordedStopsWhenRecordingFails: after the recording refuses a
// read, nothing of it or after it reaches the other side, in the bulk
// (overlapped) path too.
func TestCopyRecordedStopsWhenRecordingFails(t *testing.T) {
	data := testData(8 << 20)
	src := &chunkedReader{data: data}
	dst := &sink{}
	recorded := 0
	boom := errors.New("disk full")
	record := func(p []byte) error {
		if recorded+len(p) > 5<<20 {
			return boom
		}
		recorded += len(p)
		return nil
	}
	var n atomic.Int64
	eof, err := copyRecorded(src, dst, record, &n)
	if eof || !errors.Is(err, boom) {
		t.Fatalf("copyRecorded = eof %v, err %v; want the recording's error", eof, err)
	}
	// The failure is reported at once, while the last recorded buffer
	// may still be on its way to the other side (whose session is ended
	// next): what was relayed is what was recorded, but for at most that
	// one buffer.
	got := dst.len()
	if got > recorded || got < recorded-relayBufMax {
		t.Fatalf("relayed %d bytes, recorded %d: nothing unrecorded may be relayed, and no more than one buffer (%d) of the recorded held back", got, recorded, relayBufMax)
	}
	if !bytes.Equal(dst.bytes()[:got], data[:got]) {
		t.Fatal("the relayed bytes differ from the recorded ones")
	}
	hardening.Report(t, "15", "an 8 MiB transfer whose recording fails after 5 MiB: %d bytes relayed of the %d recorded, nothing after the failure", got, recorded)
}

// TestCopyRecordedStopsWhenTheOtherSideFails: a write error ends the copy
// without an error of the recording's, in the bulk path too.
func TestCopyRecordedStopsWhenTheOtherSideFails(t *testing.T) {
	data := testData(8 << 20)
	src := &chunkedReader{data: data}
	dst := &sink{failAt: 3 << 20}
	var n atomic.Int64
	eof, err := copyRecorded(src, dst, func([]byte) error { return nil }, &n)
	if eof || err != nil {
		t.Fatalf("copyRecorded = eof %v, err %v; want neither", eof, err)
	}
	if got := dst.len(); got > 3<<20 || n.Load() != int64(got) {
		t.Fatalf("relayed %d bytes, counted %d; want at most %d, counted as relayed", got, n.Load(), 3<<20)
	}
	if len(src.data) == 0 {
		t.Fatal("the copy read its source to the end after the other side failed")
	}
}

// stuckSink takes writes until it holds limit bytes and then blocks
// every write until released, as a technician who stopped reading.
type stuckSink struct {
	mu      sync.Mutex
	n       int
	limit   int
	once    sync.Once
	stuck   chan struct{} // closed when a write first blocks
	release chan struct{}
}

func (s *stuckSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	full := s.n >= s.limit
	if !full {
		s.n += len(p)
	}
	s.mu.Unlock()
	if !full {
		return len(p), nil
	}
	s.once.Do(func() { close(s.stuck) })
	<-s.release
	return 0, errors.New("technician gone")
}

// TestCopyRecordedReportsRecordingFailureWhileTheOtherSideIsStuck: in a
// bulk copy whose writer is stuck on a technician who reads nothing, a
// recording failure of the buffer read meanwhile is reported at once, so
// the session can be ended (which is what unblocks the writer).
func TestCopyRecordedReportsRecordingFailureWhileTheOtherSideIsStuck(t *testing.T) {
	src := &chunkedReader{data: testData(16 << 20)}
	dst := &stuckSink{limit: 1 << 20, stuck: make(chan struct{}), release: make(chan struct{})}
	defer close(dst.release)
	boom := errors.New("disk full")
	recorded := 0
	record := func(p []byte) error {
		if recorded+len(p) > 1<<20+600<<10 {
			// Fail only once the writer is stuck on what came before.
			select {
			case <-dst.stuck:
			case <-time.After(5 * time.Second):
				t.Error("the writer never got stuck")
			}
			return boom
		}
		recorded += len(p)
		return nil
	}
	done := make(chan error, 1)
	go func() {
		var n atomic.Int64
		_, err := copyRecorded(src, dst, record, &n)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("copyRecorded = %v; want the recording's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a recording failure was not reported while the other side was stuck")
	}
}

// phasedReader serves a bulk phase (reads fill the buffer), then small
// reads, then bulk again, and notes the buffer size of each read.
type phasedReader struct {
	data  []byte
	small int // reads of 10 bytes after the first bulk phase
	bulk  int // bytes of the first bulk phase
	sizes []int
	reads int
}

func (r *phasedReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if r.reads >= r.bulk && r.small > 0 {
		n = 10
		r.small--
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	r.reads += n
	return n, nil
}

// A bulk copy that turns interactive gives its large buffers back (its
// reads get a small buffer again), and grows them again for the next bulk
// transfer; every byte arrives in order, recorded first.
func TestCopyRecordedShrinksAfterBulk(t *testing.T) {
	data := testData(12 << 20)
	src := &phasedReader{data: data, bulk: 4 << 20, small: 2 * relayIdleReads}
	dst := &sink{}
	record, recorded := recordBefore(t, dst)
	var n atomic.Int64
	if eof, err := copyRecorded(src, dst, record, &n); !eof || err != nil {
		t.Fatalf("copyRecorded = eof %v, err %v", eof, err)
	}
	if !bytes.Equal(dst.bytes(), data) || !bytes.Equal(recorded.Bytes(), data) {
		t.Fatal("relayed or recorded bytes differ from what was sent")
	}
	// The reads: growing to relayBufMax, large during the first bulk
	// phase, small again within relayIdleReads+1 small reads, large again.
	sawMax, shrunk, grewAgain := false, false, false
	for _, s := range src.sizes {
		switch {
		case s == relayBufMax && !shrunk:
			sawMax = true
		case s == relayBufSize && sawMax:
			shrunk = true
		case s == relayBufMax && shrunk:
			grewAgain = true
		}
	}
	if !sawMax || !shrunk || !grewAgain {
		t.Errorf("buffer sizes: reached the maximum %v, small again %v, large again %v", sawMax, shrunk, grewAgain)
	}
}
