// Package broker is sekisho's domain: technicians and their affiliates,
// targets and where their data resides, the rules that decide who may reach
// what, the Vault certificate issuer, and the state store that keeps the
// register of every session and every refusal.
//
// Invariants:
//   - A decision is deny unless a rule explicitly allows it; an explicit deny
//     beats every allow.
//   - Every decision names the rule that made it, so a refusal can be
//     explained to the technician and audited in full.
//   - A certificate is only handed out after it has been checked against what
//     was asked for: principal, key, validity window, extensions and the CA
//     that signed it.
//
// The package knows nothing about the SSH wire protocol or terminals; it
// uses golang.org/x/crypto/ssh only for key and certificate types.
package broker
