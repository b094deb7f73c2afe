-- Moderated sessions: whether the rule a session ran under asked for
-- moderators, for the cross-border report. No rule did before
-- moderation came, so older sessions are unmoderated.

ALTER TABLE sessions ADD COLUMN moderated boolean NOT NULL DEFAULT false;
