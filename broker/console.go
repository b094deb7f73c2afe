package broker

import (
	"strings"
	"time"
)

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
	// Via is how the session was started: "" (a link printed by ssh …
	// login, bound to KeyFingerprint) or "oidc" (single sign-on, bound to
	// Issuer and Subject, its roles at most Roles).
	Via string
	// Issuer and Subject name the identity provider account that signed
	// in through OIDC.
	Issuer  string
	Subject string
	// Roles are the console roles the sign-in granted (admin, approver,
	// reviewer): the config's roles of the technician then, less those
	// the provider's groups did not give. Every request gets those of
	// them that the config still gives.
	Roles []string
	// IDToken is the provider's ID token, sent back to it as the hint
	// when the person signs out there.
	IDToken string
}

// ViaOIDC is ConsoleSession.Via of a session started by single sign-on.
const ViaOIDC = "oidc"

// OIDCLogin is a single sign-on that has left for the identity provider
// and not come back yet. The store keeps it under the hash of its state
// parameter; it is taken once, on whichever node the provider sends the
// browser back to, so that a replayed callback finds nothing.
type OIDCLogin struct {
	// StateHash is the hex SHA-256 of the state parameter.
	StateHash string
	// BrowserHash is the hex SHA-256 of the random value in the cookie
	// of the browser that started the sign-in: a callback from another
	// browser (login CSRF) does not match it.
	BrowserHash string
	// Nonce is the nonce the ID token must carry; Verifier the PKCE code
	// verifier the code is exchanged with.
	Nonce    string
	Verifier string
	// Next is the console path to go to once signed in.
	Next    string
	Created time.Time
	Expires time.Time
}

// InForce reports whether the session is still signed in at now.
func (s ConsoleSession) InForce(now time.Time) bool {
	return !now.After(s.Seen.Add(s.IdleTimeout)) && !now.After(s.Expires)
}

// SplitRoles reads ConsoleSession.Roles as a store keeps them, joined
// with commas.
func SplitRoles(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
