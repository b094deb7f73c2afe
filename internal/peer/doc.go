// Package peer is the path between the nodes of a cluster: an SSH server
// each node may open to the others, and the client that uses it. Over it
// a node follows a live session that another node serves (watch).
//
// Every node of a cluster holds the same host key, and nothing else is
// shared that could prove membership, so the host key is the cluster's
// credential. A server presents it and admits a client only if the client
// proves the same key: no password, no other key, no second way in. A
// client pins the server's host key to it too. Only a holder of the
// cluster's host key can ask a node for anything, and only a node
// holding it is believed.
//
// Invariants:
//   - The server has no unauthenticated request; every refused attempt
//     reaches the Refused callback (at most one per source per
//     refusalWindow, with the count of those held back), and sources are
//     bounded in handshakes under way and in failures, as the main
//     listener bounds them.
//   - What a node asks another to do is decided where the person is: the
//     serving node checks only that the session is live on it. Who may
//     watch is checked by the node the watcher uses, before it asks.
//   - A stream is read-only by construction: the server runs the watch
//     callback, which reads the recording; nothing the client sends
//     reaches a session.
package peer
