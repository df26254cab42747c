-- 0002: agent identity. Software statements are kept as SHA-256 hashes (like
-- client secrets), with an optional expiry and use count; statements from
-- before are hashed here and marked legacy (their text follows from their ID
-- and issue time, which older versions logged). Agent clients record when
-- they first linked as a server, so that those that never do can be pruned.
-- A server ID stays bound to the agent client that linked it after the
-- server's row is gone (an unreachable server is forgotten), until that
-- client is deactivated or deleted. berth_sha256 is a function the store
-- registers with the driver.

ALTER TABLE software_statements ADD COLUMN hash BLOB;
ALTER TABLE software_statements ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0; -- 0: never
ALTER TABLE software_statements ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 0;   -- 0: no limit
ALTER TABLE software_statements ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE software_statements ADD COLUMN legacy INTEGER NOT NULL DEFAULT 0;
UPDATE software_statements SET hash = berth_sha256(statement), legacy = 1;
DROP INDEX software_statements_statement;
ALTER TABLE software_statements DROP COLUMN statement;
CREATE UNIQUE INDEX software_statements_hash ON software_statements (hash);

ALTER TABLE clients ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0; -- 0: never linked
-- Whether older agent clients ever linked is not known: count them as linked,
-- so that pruning never removes an agent that was working.
UPDATE clients SET linked_at = created_at WHERE kind = 'agent';
CREATE INDEX clients_unlinked ON clients (created_at) WHERE kind = 'agent' AND linked_at = 0;

CREATE TABLE server_bindings (
	server_id       TEXT    PRIMARY KEY,
	agent_client_id TEXT    NOT NULL,
	bound_at        INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO server_bindings (server_id, agent_client_id, bound_at)
	SELECT id, agent_client_id, created_at FROM servers;
