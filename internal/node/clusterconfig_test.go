package node

import (
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/node/nodetest"
)

func TestClusterHeartbeatSettings(t *testing.T) {
	for _, tc := range []struct {
		name, section, err   string
		heartbeat, lostAfter time.Duration
	}{
		{name: "defaults", heartbeat: 2 * time.Second, lostAfter: 15 * time.Second},
		{name: "set", section: "cluster:\n  heartbeat: 1s\n  node_lost_after: 6s\n", heartbeat: time.Second, lostAfter: 6 * time.Second},
		{name: "lost after too few beats", section: "cluster:\n  heartbeat: 2s\n  node_lost_after: 11s\n", err: "cluster.node_lost_after 11s: use at least six heartbeats (12s)"},
		{name: "heartbeat too fast", section: "cluster:\n  heartbeat: 10ms\n", err: "cluster.heartbeat 10ms: use at least 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := nodetest.WriteConfig(t, func(cfg string) string { return cfg + tc.section })
			cfg, err := LoadConfig(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Duration(cfg.Cluster.Heartbeat); got != tc.heartbeat {
				t.Errorf("heartbeat %s, want %s", got, tc.heartbeat)
			}
			if got := time.Duration(cfg.Cluster.NodeLostAfter); got != tc.lostAfter {
				t.Errorf("node_lost_after %s, want %s", got, tc.lostAfter)
			}
		})
	}
}
