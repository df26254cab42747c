-- 0001: initial schema. Times are unix milliseconds (UTC) in BIGINT columns;
-- 0 means "never". IDs, owners and other keys use the "C" collation: byte
-- order, the same on every server, and cheaper to compare than a locale's.

-- Every change to a server row other than last_seen and broker_id takes a new
-- value from this sequence, so that a version is never reused, not even by a
-- server deleted and registered again.
CREATE SEQUENCE server_versions;

CREATE TABLE servers (
	seq                   BIGSERIAL PRIMARY KEY,
	id                    TEXT COLLATE "C" NOT NULL UNIQUE,
	agent_client_id       TEXT    NOT NULL,
	open                  BOOLEAN NOT NULL,
	last_seen             BIGINT  NOT NULL DEFAULT 0, -- 0: never seen or link lost
	broker_id             TEXT    NOT NULL DEFAULT '',
	created_at            BIGINT  NOT NULL,
	version               BIGINT  NOT NULL DEFAULT nextval('server_versions'),
	max_virtual_sessions  INTEGER NOT NULL DEFAULT 0, -- 0: unlimited
	max_sessions_per_user INTEGER NOT NULL DEFAULT 0, -- 0: unlimited
	tags                  TEXT    NOT NULL DEFAULT '{}', -- canonical JSON of info.tags, to skip unchanged rewrites
	info                  TEXT    NOT NULL DEFAULT '{}'  -- broker.ServerInfo as JSON
);

CREATE TABLE server_tags (
	server_id TEXT COLLATE "C" NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
	key       TEXT COLLATE "C" NOT NULL,
	value     TEXT COLLATE "C" NOT NULL,
	PRIMARY KEY (server_id, key)
);

-- Servers by tag (ListSessions with Tags).
CREATE INDEX server_tags_key_value ON server_tags (key, value, server_id);

CREATE TABLE sessions (
	seq                     BIGSERIAL PRIMARY KEY,
	id                      TEXT COLLATE "C" NOT NULL UNIQUE,
	owner                   TEXT COLLATE "C" NOT NULL,
	name                    TEXT    NOT NULL DEFAULT '',
	type                    TEXT COLLATE "C" NOT NULL,
	server_id               TEXT COLLATE "C" NOT NULL DEFAULT '', -- '': not placed yet
	state                   TEXT COLLATE "C" NOT NULL,
	substate                TEXT    NOT NULL DEFAULT '',
	state_reason            TEXT    NOT NULL DEFAULT '',
	max_concurrent_clients  BIGINT  NOT NULL DEFAULT 0,
	storage_root            TEXT    NOT NULL DEFAULT '',
	creation_time           BIGINT  NOT NULL DEFAULT 0,
	last_disconnection_time BIGINT  NOT NULL DEFAULT 0,
	num_connections         BIGINT  NOT NULL DEFAULT 0,
	updated_at              BIGINT  NOT NULL DEFAULT 0,
	attempts                INTEGER NOT NULL DEFAULT 0,
	excluded                TEXT    NOT NULL DEFAULT '[]', -- JSON array of server IDs
	enqueued                BOOLEAN NOT NULL DEFAULT false,
	enqueued_at             BIGINT  NOT NULL DEFAULT 0,
	spec                    TEXT    NOT NULL DEFAULT '{}'  -- broker.SessionSpec as JSON
);

-- DescribeSessions pages of one owner: a range scan in Seq order.
CREATE INDEX sessions_owner_seq ON sessions (owner, seq);
-- Capacity re-checks of placements, CountSessions, ListSessions by server and
-- DeleteServer (covering the counts).
CREATE INDEX sessions_server_state ON sessions (server_id, state, type, owner);
-- CountByState and PurgeDeleted.
CREATE INDEX sessions_state ON sessions (state, updated_at);
-- The placement queue: sessions waiting for a server, in Seq order.
CREATE INDEX sessions_queue ON sessions (seq) WHERE server_id = '';

CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

CREATE TABLE clients (
	seq         BIGSERIAL PRIMARY KEY,
	id          TEXT    NOT NULL UNIQUE,
	name        TEXT    NOT NULL DEFAULT '',
	kind        TEXT    NOT NULL,
	secret_hash BYTEA,
	salt        BYTEA,
	active      BOOLEAN NOT NULL,
	created_at  BIGINT  NOT NULL,
	statement   TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX clients_kind ON clients (kind, created_at, seq);

CREATE TABLE signing_keys (
	seq         BIGSERIAL PRIMARY KEY,
	id          TEXT    NOT NULL UNIQUE,
	algorithm   TEXT    NOT NULL,
	private_pem BYTEA   NOT NULL,
	created_at  BIGINT  NOT NULL,
	retired_at  BIGINT  NOT NULL DEFAULT 0 -- 0: active
);

CREATE TABLE software_statements (
	seq       BIGSERIAL PRIMARY KEY,
	id        TEXT    NOT NULL UNIQUE,
	statement TEXT    NOT NULL,
	issued_at BIGINT  NOT NULL,
	active    BOOLEAN NOT NULL
);

CREATE INDEX software_statements_statement ON software_statements (statement);
