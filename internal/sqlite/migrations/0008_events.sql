-- 0008: events (issue 18, docs/events.md). AUTOINCREMENT so that an ID is
-- never used twice, even after the newest events are purged: a reader
-- resuming after an ID must not miss an event that reused it. The single
-- writer assigns IDs in commit order.
CREATE TABLE events (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	time       INTEGER NOT NULL,
	type       TEXT    NOT NULL,
	session_id TEXT    NOT NULL DEFAULT '',
	server_id  TEXT    NOT NULL DEFAULT '',
	owner      TEXT    NOT NULL DEFAULT '',
	data       TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_time ON events (time);
