// Package node runs one sekisho bastion from its configuration: it loads
// and validates the config file, wires the state store, Vault issuer,
// broker, SSH server, web console and metrics together, and runs the
// jobs beside them (the lock watch, expiry of pending requests, retention
// of recordings, recovery of what a crash left). The command line parses
// flags and signals and hands a Config to Start; tests start several
// nodes in one process the same way.
//
// Invariants:
//   - A Config is validated once, by LoadConfig or ParseConfig, and Start
//     takes only one of theirs: a Config made by hand is not valid.
//   - OpenStore is the one place that chooses the state store's backend,
//     for a node and for the commands that read or change its state.
//   - Before a node serves, recordings a crash left unsealed are sealed
//     as incomplete and their sessions ended in the register; a broken
//     recording does not stop the others, nor the node.
//   - A node that cannot reach Vault, open its store or write its
//     recordings directory refuses to start rather than refuse every
//     session.
//   - Stop ends the node's sessions, listeners and lock watch, then
//     closes the store.
//   - On PostgreSQL a node is never taken for lost while it records: it
//     stops taking sessions and ends its live ones after half of
//     cluster.node_lost_after without a heartbeat. A lost node's sessions
//     are claimed once, by one survivor, and a node started again under
//     its name leaves what a survivor took over.
//   - Jobs that concern the whole cluster (retention of the object stores,
//     request expiry, lost nodes) run under an advisory lock, on one node
//     at a time; each node re-checks only its own live sessions.
package node
