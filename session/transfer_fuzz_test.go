package session

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// chunks cuts b into pieces of 1 to 64 bytes, as rng says.
func chunks(b []byte, rng *rand.Rand) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(1+rng.IntN(64), len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// checkEvents fails unless every event's data is a JSON object.
func checkEvents(t *testing.T, list []string) {
	t.Helper()
	for _, e := range list {
		code, data, _ := strings.Cut(e, " ")
		var v map[string]any
		if !strings.HasPrefix(code, "x-file") || json.Unmarshal([]byte(data), &v) != nil {
			t.Fatalf("bad event %q", e)
		}
	}
}

func FuzzSFTPObserver(f *testing.F) {
	rounds, _ := sftpConversation()
	var up, down []byte
	for _, r := range rounds {
		up, down = append(up, r.up...), append(down, r.down...)
	}
	f.Add(up, down, uint64(1))
	f.Add(rounds[1].up, rounds[1].down, uint64(2))
	f.Add([]byte{0, 0, 0, 0}, []byte{}, uint64(3))
	f.Fuzz(func(t *testing.T, up, down []byte, seed uint64) {
		// Each direction whole, then the same cut at random and the two
		// directions interleaved: the first two must agree.
		var whole, cut, mixed events
		a, b, c := newSFTPObserver(whole.emit), newSFTPObserver(cut.emit), newSFTPObserver(mixed.emit)
		a.technician(up)
		a.target(down)
		rng := rand.New(rand.NewPCG(seed, 0))
		for _, p := range chunks(up, rng) {
			b.technician(p)
		}
		for _, p := range chunks(down, rng) {
			b.target(p)
		}
		ups, downs := chunks(up, rng), chunks(down, rng)
		for len(ups)+len(downs) > 0 {
			if len(downs) == 0 || (len(ups) > 0 && rng.IntN(2) == 0) {
				c.technician(ups[0])
				ups = ups[1:]
			} else {
				c.target(downs[0])
				downs = downs[1:]
			}
		}
		for _, o := range []*sftpObserver{a, b, c} {
			if len(o.files) > maxTracked || len(o.opens) > maxTracked || len(o.reads) > maxTracked ||
				cap(o.requests.pkt) > maxSFTPPacket || cap(o.replies.pkt) > maxSFTPPacket {
				t.Fatalf("unbounded state: %d files, %d opens, %d reads, buffers %d and %d",
					len(o.files), len(o.opens), len(o.reads), cap(o.requests.pkt), cap(o.replies.pkt))
			}
			for _, f := range o.files {
				if len(f.path) > maxTrackedPath {
					t.Fatalf("a path of %d bytes kept", len(f.path))
				}
			}
			o.end()
		}
		if !slices.Equal(whole.list, cut.list) {
			t.Fatalf("events depend on how the stream is cut:\n%q\n%q", whole.list, cut.list)
		}
		checkEvents(t, whole.list)
		checkEvents(t, mixed.list)
	})
}

func FuzzSCPObserver(f *testing.F) {
	f.Add([]byte("D0755 0 dir\n"+scpFile("a", "x\x00\n")+"E\n"), true, uint64(1))
	f.Add([]byte("\x01scp: no\n"+scpFile("app.log", "hello")), false, uint64(2))
	f.Add([]byte("C0644 10 x\nabc"), true, uint64(3))
	f.Fuzz(func(t *testing.T, stream []byte, upload bool, seed uint64) {
		command := "scp -r -t /tmp/dest"
		if !upload {
			command = "scp -r -f /a /b/c"
		}
		var whole, cut events
		a := newSCPObserver(strings.Fields(command)[1:], whole.emit)
		b := newSCPObserver(strings.Fields(command)[1:], cut.emit)
		feed := func(o *scpObserver, p []byte) {
			o.technician(p)
			o.target(p)
			if len(o.line) > maxSCPLine || len(o.dir) > maxSCPDir || len(o.depth) > maxSCPDir {
				t.Fatalf("unbounded state: line %d, dir %d, depth %d", len(o.line), len(o.dir), len(o.depth))
			}
		}
		feed(a, stream)
		for _, p := range chunks(stream, rand.New(rand.NewPCG(seed, 0))) {
			feed(b, p)
		}
		a.end()
		b.end()
		if !slices.Equal(whole.list, cut.list) {
			t.Fatalf("events depend on how the stream is cut:\n%q\n%q", whole.list, cut.list)
		}
		for i, e := range whole.list {
			if strings.HasPrefix(e, "x-file-parse-error") != (a.stopped && i == len(whole.list)-1) {
				t.Fatalf("a parse error not last, or stopped without one: %q", whole.list)
			}
		}
		checkEvents(t, whole.list)
	})
}
