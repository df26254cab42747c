-- 0001: initial schema. Times are unix milliseconds (UTC); 0 means "never".

CREATE TABLE servers (
	seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
	id                    TEXT    NOT NULL UNIQUE,
	agent_client_id       TEXT    NOT NULL,
	open                  INTEGER NOT NULL,
	last_seen             INTEGER NOT NULL DEFAULT 0, -- 0: never seen or link lost
	broker_id             TEXT    NOT NULL DEFAULT '',
	created_at            INTEGER NOT NULL,
	max_virtual_sessions  INTEGER NOT NULL DEFAULT 0, -- 0: unlimited
	max_sessions_per_user INTEGER NOT NULL DEFAULT 0, -- 0: unlimited
	tags                  TEXT    NOT NULL DEFAULT '{}', -- canonical JSON of info.tags, to skip unchanged rewrites
	info                  TEXT    NOT NULL DEFAULT '{}'  -- broker.ServerInfo as JSON
);

CREATE TABLE server_tags (
	server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
	key       TEXT NOT NULL,
	value     TEXT NOT NULL,
	PRIMARY KEY (server_id, key)
) WITHOUT ROWID;

CREATE INDEX server_tags_key_value ON server_tags (key, value, server_id);

CREATE TABLE sessions (
	seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
	id                      TEXT    NOT NULL UNIQUE,
	owner                   TEXT    NOT NULL,
	name                    TEXT    NOT NULL DEFAULT '',
	type                    TEXT    NOT NULL,
	server_id               TEXT    NOT NULL DEFAULT '', -- '': not placed yet
	state                   TEXT    NOT NULL,
	substate                TEXT    NOT NULL DEFAULT '',
	state_reason            TEXT    NOT NULL DEFAULT '',
	max_concurrent_clients  INTEGER NOT NULL DEFAULT 0,
	storage_root            TEXT    NOT NULL DEFAULT '',
	creation_time           INTEGER NOT NULL DEFAULT 0,
	last_disconnection_time INTEGER NOT NULL DEFAULT 0,
	num_connections         INTEGER NOT NULL DEFAULT 0,
	updated_at              INTEGER NOT NULL DEFAULT 0,
	attempts                INTEGER NOT NULL DEFAULT 0,
	excluded                TEXT    NOT NULL DEFAULT '[]', -- JSON array of server IDs
	enqueued                INTEGER NOT NULL DEFAULT 0,
	enqueued_at             INTEGER NOT NULL DEFAULT 0,
	spec                    TEXT    NOT NULL DEFAULT '{}'  -- broker.SessionSpec as JSON
);

-- DescribeSessions pages of one owner.
CREATE INDEX sessions_owner_seq ON sessions (owner, seq);
-- Capacity re-checks, CountSessions and DeleteServer (covering).
CREATE INDEX sessions_server_state ON sessions (server_id, state, type, owner);
-- CountByState and PurgeDeleted.
CREATE INDEX sessions_state ON sessions (state, updated_at);
-- The placement queue: sessions waiting for a server, in Seq order.
CREATE INDEX sessions_queue ON sessions (seq) WHERE server_id = '';

CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE clients (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	name        TEXT    NOT NULL DEFAULT '',
	kind        TEXT    NOT NULL,
	secret_hash BLOB,
	salt        BLOB,
	active      INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	statement   TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX clients_kind ON clients (kind, created_at);

CREATE TABLE signing_keys (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	algorithm   TEXT    NOT NULL,
	private_pem BLOB    NOT NULL,
	created_at  INTEGER NOT NULL,
	retired_at  INTEGER NOT NULL DEFAULT 0 -- 0: active
);

CREATE TABLE software_statements (
	seq       INTEGER PRIMARY KEY AUTOINCREMENT,
	id        TEXT    NOT NULL UNIQUE,
	statement TEXT    NOT NULL,
	issued_at INTEGER NOT NULL,
	active    INTEGER NOT NULL
);

CREATE INDEX software_statements_statement ON software_statements (statement);
