-- 0010: events (issue 18, docs/events.md). Every transaction that inserts
-- events takes the advisory lock 'berth-events' just before the insert and
-- holds it to its commit, so that IDs are assigned in commit order across
-- brokers (postgres/events.go).
CREATE TABLE events (
	id         BIGSERIAL PRIMARY KEY,
	time       BIGINT NOT NULL,
	type       TEXT   NOT NULL,
	session_id TEXT   NOT NULL DEFAULT '',
	server_id  TEXT   NOT NULL DEFAULT '',
	owner      TEXT   NOT NULL DEFAULT '',
	data       TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX events_time ON events (time);
