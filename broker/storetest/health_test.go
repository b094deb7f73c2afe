package storetest

import (
	"context"
	"testing"
)

// A readiness probe writes: again and again, from several nodes.
func TestProbeWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		a, b := e.open(t), e.open(t)
		ctx := context.Background()
		for range 2 {
			if err := a.ProbeWrite(ctx, "node-a"); err != nil {
				t.Fatalf("ProbeWrite on node-a: %v", err)
			}
			if err := b.ProbeWrite(ctx, "node-b"); err != nil {
				t.Fatalf("ProbeWrite on node-b: %v", err)
			}
		}
		a.Close()
		if err := a.ProbeWrite(ctx, "node-a"); err == nil {
			t.Fatal("ProbeWrite on a closed store: no error")
		}
	})
}
