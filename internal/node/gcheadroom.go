package node

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcHeadroom is how much the heap may grow between two collections at
// least. Relaying allocates as it goes (golang.org/x/crypto/ssh copies
// every packet it reads into a new buffer), so a node with a small live
// heap and a bulk transfer would collect every few megabytes: at the
// default GOGC=100 and 10 MB live, about a hundred collections per GiB
// relayed, a tenth of the node's CPU. With at least 64 MiB of headroom
// it collects a few times per GiB; a node whose live heap is larger
// than that (many sessions) keeps GOGC=100, so the memory a session
// costs does not grow.
const gcHeadroom = 64 << 20

// keepGCHeadroom sets GOGC, once a second, so that the heap may grow by
// max(live heap, gcHeadroom) between collections, until ctx is done. An
// operator's GOGC in the environment is left alone.
func keepGCHeadroom(ctx context.Context) {
	if os.Getenv("GOGC") != "" {
		return
	}
	defer debug.SetGCPercent(100)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	current := 100
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if pct := gcPercentFor(sample[0].Value.Uint64()); pct != current {
				debug.SetGCPercent(pct)
				current = pct
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gcPercentFor returns the GOGC that gives a live heap of live bytes at
// least gcHeadroom to grow, rounded to steps of 50 so that it is not
// reset every second, and at most 1000.
func gcPercentFor(live uint64) int {
	if live == 0 || live >= gcHeadroom {
		return 100
	}
	pct := int(gcHeadroom * 100 / live)
	pct = (pct + 49) / 50 * 50
	return min(max(pct, 100), 1000)
}
