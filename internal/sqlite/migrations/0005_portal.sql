-- 0005: the web portal (issue 16): signed-in users' portal sessions and
-- single-use tokens (portal links, sign-ins in progress at the identity
-- provider). Both are keyed by the SHA-256 of their secret, never the secret;
-- data is the portal's JSON. Expired rows are purged by the portal.
CREATE TABLE portal_sessions (
	key        BLOB    PRIMARY KEY,
	data       BLOB    NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);

CREATE TABLE portal_tokens (
	key        BLOB    PRIMARY KEY,
	data       BLOB    NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX portal_tokens_expires ON portal_tokens (expires_at);
