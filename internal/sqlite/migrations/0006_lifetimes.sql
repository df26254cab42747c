-- 0006: session lifetime policies (issue 17). last_input_time is the last
-- client input the agent reported (unix ms, 0: none); due_at the next time a
-- policy may act on the session (unix ms, 0: none), which the leader's
-- policy loop finds through the partial index; life the broker's lifetime
-- bookkeeping (broker.SessionLife as JSON: the extension granted, the
-- warnings sent).
ALTER TABLE sessions ADD COLUMN last_input_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN due_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN life TEXT NOT NULL DEFAULT '{}';
CREATE INDEX sessions_due ON sessions (due_at) WHERE due_at > 0;
