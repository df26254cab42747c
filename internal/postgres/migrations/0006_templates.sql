-- 0006: session templates (issue 16: launchable recipes published to users
-- and groups) and session shares (the users another owner's session is shared
-- with, derived from its permissions file).
CREATE TABLE templates (
	id                     TEXT COLLATE "C" PRIMARY KEY,
	name                   TEXT COLLATE "C" NOT NULL UNIQUE,
	description            TEXT    NOT NULL DEFAULT '',
	type                   TEXT    NOT NULL,
	requirements           TEXT    NOT NULL DEFAULT '',
	init_file              TEXT    NOT NULL DEFAULT '',
	autorun_file           TEXT    NOT NULL DEFAULT '',
	autorun_args           TEXT[]  NOT NULL DEFAULT '{}',
	max_concurrent_clients BIGINT  NOT NULL DEFAULT 0,
	dcv_gl_enabled         BOOLEAN NOT NULL DEFAULT false,
	storage_root           TEXT    NOT NULL DEFAULT '',
	user_names             TEXT[]  NOT NULL DEFAULT '{}',
	group_names            TEXT[]  NOT NULL DEFAULT '{}',
	created_at             BIGINT  NOT NULL,
	updated_at             BIGINT  NOT NULL
);

-- A share goes with its session: deleting or purging the session removes it.
CREATE TABLE session_shares (
	session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	user_name  TEXT COLLATE "C" NOT NULL,
	level      TEXT NOT NULL,
	PRIMARY KEY (session_id, user_name)
);
CREATE INDEX session_shares_user ON session_shares (user_name);
