-- What a node needs from another and kept in memory before: the console's
-- unused sign-in links and signed-in browsers (under the SHA-256 of their
-- tokens, never the tokens), so that a link printed by one node works on
-- any and a browser stays signed in whichever node it reaches; and the
-- failed second-factor attempts the throttle counts, so that its limits
-- hold over all nodes together. n orders rows as they were stored: the
-- oldest link or session goes first when a technician has too many.

CREATE TABLE console_links (
	n               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	token_hash      text NOT NULL UNIQUE,
	technician      text NOT NULL,
	key_fingerprint text NOT NULL,
	created         timestamptz NOT NULL,
	expires         timestamptz NOT NULL
);
CREATE INDEX console_links_technician ON console_links (technician);
CREATE INDEX console_links_expires ON console_links (expires);

-- idle_until is seen plus the idle timeout; a touch moves both.
CREATE TABLE console_sessions (
	n               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	token_hash      text NOT NULL UNIQUE,
	technician      text NOT NULL,
	key_fingerprint text NOT NULL,
	csrf            text NOT NULL,
	created         timestamptz NOT NULL,
	seen            timestamptz NOT NULL,
	idle_until      timestamptz NOT NULL,
	expires         timestamptz NOT NULL
);
CREATE INDEX console_sessions_technician ON console_sessions (technician);
CREATE INDEX console_sessions_idle_until ON console_sessions (idle_until);
CREATE INDEX console_sessions_expires ON console_sessions (expires);

-- subject is what is throttled: "t:" and a technician, "s:" and an address.
CREATE TABLE failed_attempts (
	n       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	subject text NOT NULL,
	at      timestamptz NOT NULL
);
CREATE INDEX failed_attempts_subject ON failed_attempts (subject, at);
CREATE INDEX failed_attempts_at ON failed_attempts (at);
