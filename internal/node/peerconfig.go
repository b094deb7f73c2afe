package node

import (
	"net"
	"net/netip"
)

// cluster.listen opens a node to the other nodes of its cluster, for
// what one node asks of another: following a live session it serves.
// Without it, a session this node serves can be watched only through this
// node. cluster.advertise is the address the others dial, written in the
// node's heartbeat; default cluster.listen, which must then name a host.
//
// The link is SSH, authenticated both ways by the cluster's host key,
// which every node holds: a node admits only a client that proves it,
// and believes only a node that presents it. Keep it on the nodes'
// private network all the same.

// validatePeer checks the node-to-node listener's addresses.
func (c *Config) validatePeer() error {
	p := c.Cluster
	if p.Listen == "" {
		if p.Advertise != "" {
			return c.errf(0, "cluster.advertise %q without cluster.listen: the node takes no connections from other nodes to advertise", p.Advertise)
		}
		return nil
	}
	if !c.Postgres() {
		return c.errf(0, "cluster.listen %q: the state is a SQLite file, so there are no other nodes; put the state on PostgreSQL (database.url) or remove it", p.Listen)
	}
	host, _, err := net.SplitHostPort(p.Listen)
	if err != nil {
		return c.errf(0, "cluster.listen %q: write host:port, e.g. 10.0.0.11:2223", p.Listen)
	}
	if p.Advertise == "" {
		if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
			return c.errf(0, "cluster.listen %q names no host other nodes can dial: set cluster.advertise to this node's address (host:port) on the nodes' network", p.Listen)
		}
		return nil
	}
	if h, port, err := net.SplitHostPort(p.Advertise); err != nil || h == "" || port == "" {
		return c.errf(0, "cluster.advertise %q: write host:port, the address other nodes dial", p.Advertise)
	}
	return nil
}

// PeerAddress is the address other nodes dial for this node's
// node-to-node listener, as written in its heartbeat; empty when it has
// none.
func (c *Config) PeerAddress() string {
	if c.Cluster.Advertise != "" {
		return c.Cluster.Advertise
	}
	return c.Cluster.Listen
}
