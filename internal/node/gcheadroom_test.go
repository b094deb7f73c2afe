package node

import "testing"

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},         // nothing measured yet
		{1 << 20, 1000},  // a tiny heap: capped
		{10 << 20, 650},  // 64 MiB of headroom over 10 MiB
		{32 << 20, 200},  // twice
		{63 << 20, 150},  // just under: rounded up to a step
		{64 << 20, 100},  // the default gives as much
		{400 << 20, 100}, // many sessions: the default
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}
