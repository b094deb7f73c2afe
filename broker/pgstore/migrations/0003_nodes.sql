-- Several nodes: which node served each session, and the nodes' own
-- register, where each beats its heart so that a survivor can tell a
-- node is lost.

ALTER TABLE sessions ADD COLUMN node text NOT NULL DEFAULT '';
CREATE INDEX sessions_node_live ON sessions (node) WHERE ended_at IS NULL;

CREATE TABLE nodes (
	name         text PRIMARY KEY,
	address      text NOT NULL DEFAULT '',
	started_at   timestamptz NOT NULL,
	heartbeat_at timestamptz NOT NULL
);
