-- Readiness: each node writes its row when a health check asks whether
-- the database takes writes (a read-only replica or a full disk does not).

CREATE TABLE health (
	node       text PRIMARY KEY,
	checked_at timestamptz NOT NULL
);
