-- Jobs that run once per cluster (retention, request expiry, recovery of
-- lost nodes' sessions): when each last ran, so that a node that takes a
-- job's advisory lock knows whether another node ran it already.

CREATE TABLE jobs (
	name   text PRIMARY KEY,
	ran_at timestamptz NOT NULL
);

CREATE INDEX nodes_heartbeat ON nodes (heartbeat_at);
