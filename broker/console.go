package broker

import "time"

// ConsoleLink is an unused sign-in link of the web console, as `ssh …
// login` printed it. The store keeps it under the hash of its token, never
// the token: what the store holds cannot be presented by a browser. A link
// printed by one node is used through any.
type ConsoleLink struct {
	// TokenHash is the hex SHA-256 of the link's token.
	TokenHash  string
	Technician string
	// KeyFingerprint is the SHA256 fingerprint of the SSH key that asked
	// for the link; the browser session it starts is bound to it.
	KeyFingerprint string
	Created        time.Time
	Expires        time.Time
}

// Valid reports whether the link may still be used at now.
func (l ConsoleLink) Valid(now time.Time) bool { return !now.After(l.Expires) }

// ConsoleSession is a browser signed in to the console, kept under the
// hash of its cookie, so that a browser stays signed in whichever node the
// load balancer sends it to, and signing out through one node ends it on
// all.
type ConsoleSession struct {
	// TokenHash is the hex SHA-256 of the session cookie's value.
	TokenHash      string
	Technician     string
	KeyFingerprint string // of the SSH key whose link started the session
	// CSRF is the token the session's pages put in their forms. It is
	// stored as is: pages on every node show it, and without the cookie
	// it is worth nothing.
	CSRF    string
	Created time.Time
	// Seen is the last request that was the person at work, as last
	// written by TouchConsoleSession.
	Seen time.Time
	// IdleTimeout ends the session that long after Seen; Expires ends it
	// however active it is.
	IdleTimeout time.Duration
	Expires     time.Time
}

// InForce reports whether the session is still signed in at now.
func (s ConsoleSession) InForce(now time.Time) bool {
	return !now.After(s.Seen.Add(s.IdleTimeout)) && !now.After(s.Expires)
}
