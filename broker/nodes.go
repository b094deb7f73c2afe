package broker

import "time"

// EndNodeLost is the end reason of a session whose node went silent: a
// surviving node ended it in the register and sealed its recording from
// what had reached the object store.
const EndNodeLost = "node lost"

// NodeBeat is a node's row in the nodes' register of heartbeats.
type NodeBeat struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	// Silent is how long ago the node last beat, by the store's clock.
	Silent time.Duration `json:"silent"`
}
