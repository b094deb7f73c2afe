// Package web is sekisho's browser console and its JSON API, for security
// reviewers, approvers and admins: live and past sessions, recordings
// played in the browser, access requests, locks and the cross-border
// report.
//
// # Sign-in
//
// There is no password store. A person signs in with the SSH identity
// they already have: `ssh -p 2222 kenji@bastion login` prints a one-time
// link, valid for about a minute and usable once, that opens a browser
// session bound to that technician and the SSH key that asked for it.
// Their role (admin, approver, reviewer), their locks and their keys are
// read from the config and the store on every request, so a change of
// groups, a lock or a removed key takes effect at once (a live view
// checks every second), and a technician with none of those roles gets
// no link.
//
// With single sign-on configured (OIDCConfig), a person may sign in
// through an OpenID provider instead: the authorization code flow with
// PKCE, state and nonce. The provider names the technician; their roles
// are those sekisho's config gives them that the provider's groups also
// give, so the provider can take a role away but never add one. The
// state is kept in the store and taken once, by whichever node the
// provider sends the browser back to, and only for the browser whose
// cookie started it; the session records the roles granted, and every
// request gets those the config still gives.
//
// Links and browser sessions are kept in the state store, under the
// hashes of their tokens: a link printed by one node signs in through
// any, a browser stays signed in whichever node the load balancer sends
// it to, and signing out through one node ends the session on all. Of
// several uses of one link at once, on any nodes, one signs in.
//
// # Guarantees
//
//   - Every page and API call except the sign-in page needs a browser
//     session; sessions expire after an idle time and an absolute time
//     and can be signed out.
//   - Every state-changing request (POST, DELETE) carries the session's
//     CSRF token and a same-origin Origin header, when the browser sends
//     one; cookies are HttpOnly, SameSite=Strict, and Secure over TLS.
//   - Every response carries a strict Content-Security-Policy: scripts
//     and styles from this server only, no inline script, no framing.
//   - Everything that comes from a technician or a recording (names,
//     reasons, commands, terminal output) is data: html/template escapes
//     it in pages, the player renders terminal output as text, and
//     recorded control sequences that could act on a viewer (OSC 8
//     hyperlinks among them) are removed before the player sees them.
//   - A person limited to residencies (review_residency in the config)
//     sees and acts on those residencies only, on pages and in the API
//     alike, as over SSH: sessions, recordings, searches and reports,
//     access requests they see and decide, locks they add and remove (a
//     lock on an affiliate or a technician, which reaches every residency,
//     is for admins of all of them). The broker's scope check decides and
//     audits it; a session outside the scope answers 404 as if it did not
//     exist, a decision or a lock outside it 403 with why.
//   - Every sign-in, refusal, decision, lock change, session viewed,
//     replayed, searched, watched or ended from the console is audited
//     with the person who did it, as from SSH; refused sign-ins, which
//     anyone can send, once per source address per 10 s with a count.
package web
