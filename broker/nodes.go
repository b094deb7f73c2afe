package broker

import (
	"errors"
	"time"
)

// EndNodeLost is the end reason of a session whose node went silent: a
// surviving node ended it in the register and sealed its recording from
// what had reached the object store.
const EndNodeLost = "node lost"

// ErrTakenOver is returned by a Store for the end or the seal of a session
// that a survivor has ended "node lost" and sealed: the node that served
// it, back after being taken for lost, does not overwrite what the
// survivor recorded, which matches the seal in the object store.
var ErrTakenOver = errors.New("ended \"node lost\" and sealed by another node")

// NodeBeat is a node's row in the nodes' register of heartbeats.
type NodeBeat struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	// Silent is how long ago the node last beat, by the store's clock.
	Silent time.Duration `json:"silent"`
}
