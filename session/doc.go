// Package session is sekisho's SSH side: the server that technicians reach
// with plain OpenSSH, their authentication, the naming of targets in the
// login, the upstream connection to the target with a Vault certificate,
// and the relay of every channel through the recorder.
//
// Invariants:
//   - A technician is authenticated by the key that signed the user-auth
//     request (VerifiedPublicKeyCallback); a key merely offered proves
//     nothing and is never remembered as proof.
//   - Nothing is forwarded to a target before the broker allowed it, the
//     recording was created, and the target's host key matched the pinned
//     key or host CA.
//   - Every byte is handed to the recorder before it is forwarded. When the
//     recorder fails, the channel and the connection end with a message.
//   - Agent forwarding, X11, port forwarding and unknown channel types are
//     refused.
package session
