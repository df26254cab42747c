-- 0004: session templates (issue 16: launchable recipes published to users
-- and groups) and session shares (the users another owner's session is shared
-- with, derived from its permissions file). Lists are JSON arrays of strings.
CREATE TABLE templates (
	id                     TEXT    PRIMARY KEY,
	name                   TEXT    NOT NULL UNIQUE,
	description            TEXT    NOT NULL DEFAULT '',
	type                   TEXT    NOT NULL,
	requirements           TEXT    NOT NULL DEFAULT '',
	init_file              TEXT    NOT NULL DEFAULT '',
	autorun_file           TEXT    NOT NULL DEFAULT '',
	autorun_args           TEXT    NOT NULL DEFAULT '[]',
	max_concurrent_clients INTEGER NOT NULL DEFAULT 0,
	dcv_gl_enabled         INTEGER NOT NULL DEFAULT 0,
	storage_root           TEXT    NOT NULL DEFAULT '',
	user_names             TEXT    NOT NULL DEFAULT '[]',
	group_names            TEXT    NOT NULL DEFAULT '[]',
	created_at             INTEGER NOT NULL,
	updated_at             INTEGER NOT NULL
);

-- A share goes with its session: deleting or purging the session removes it.
CREATE TABLE session_shares (
	session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	user_name  TEXT NOT NULL,
	level      TEXT NOT NULL,
	PRIMARY KEY (session_id, user_name)
);
CREATE INDEX session_shares_user ON session_shares (user_name);
