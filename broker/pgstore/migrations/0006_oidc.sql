-- Single sign-on for the console. A browser session says how it was
-- started: '' (a link printed by ssh … login) or 'oidc', with the
-- identity provider's issuer and subject, the roles the sign-in granted
-- (joined with commas) and the ID token, the hint sent back to the
-- provider at sign-out.
ALTER TABLE console_sessions
	ADD COLUMN via      text NOT NULL DEFAULT '',
	ADD COLUMN issuer   text NOT NULL DEFAULT '',
	ADD COLUMN subject  text NOT NULL DEFAULT '',
	ADD COLUMN roles    text NOT NULL DEFAULT '',
	ADD COLUMN id_token text NOT NULL DEFAULT '';

-- Sign-ons that have left for the identity provider, under the SHA-256
-- of their state parameter: taken once, on whichever node the browser
-- comes back to, so that a replayed callback finds nothing.
CREATE TABLE oidc_logins (
	state_hash   text PRIMARY KEY,
	browser_hash text NOT NULL,
	nonce        text NOT NULL,
	verifier     text NOT NULL,
	next         text NOT NULL,
	created      timestamptz NOT NULL,
	expires      timestamptz NOT NULL
);
CREATE INDEX oidc_logins_expires ON oidc_logins (expires);
