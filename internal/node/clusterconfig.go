package node

import "time"

// ClusterSection tunes how nodes sharing a PostgreSQL state watch each
// other. A node on SQLite is alone, and ignores it.
type ClusterSection struct {
	// Heartbeat is how often the node writes its heartbeat; default 2s.
	Heartbeat Duration `yaml:"heartbeat"`
	// NodeLostAfter is how long a node may go without a heartbeat before
	// a survivor ends its sessions as "node lost" and seals their
	// recordings from what reached the object store; default 15s. A node
	// that cannot write its heartbeat for half of it stops taking
	// sessions and ends its live ones, so that nothing is still being
	// recorded on it when a survivor seals.
	NodeLostAfter Duration `yaml:"node_lost_after"`
	// Listen and Advertise open the node to the other nodes (see
	// validatePeer): the address it takes their connections on
	// (host:port; none when empty), and the one they dial, written in
	// its heartbeat (default Listen).
	Listen    string `yaml:"listen"`
	Advertise string `yaml:"advertise"`
}

// validateCluster sets the defaults and checks that a node has time to
// step back before it can be taken for lost.
func (c *Config) validateCluster() error {
	k := &c.Cluster
	if k.Heartbeat == 0 {
		k.Heartbeat = Duration(2 * time.Second)
	}
	if k.NodeLostAfter == 0 {
		k.NodeLostAfter = Duration(15 * time.Second)
	}
	switch {
	case k.Heartbeat < Duration(100*time.Millisecond):
		return c.errf(0, "cluster.heartbeat %s: use at least 100ms (default 2s)", time.Duration(k.Heartbeat))
	case k.NodeLostAfter < 6*k.Heartbeat:
		// A node stands back half of node_lost_after after its last
		// heartbeat was asked for, noticed when a failing one returns (up
		// to a heartbeat later); it then ends its sessions and ships their
		// seals before a survivor may claim them.
		return c.errf(0, "cluster.node_lost_after %s: use at least six heartbeats (%s), so that a node that loses the database steps back before it can be taken for lost",
			time.Duration(k.NodeLostAfter), 6*time.Duration(k.Heartbeat))
	}
	return c.validatePeer()
}
