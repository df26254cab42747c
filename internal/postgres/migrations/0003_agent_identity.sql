-- 0003: agent identity. Software statements are kept as SHA-256 hashes (like
-- client secrets), with an optional expiry and use count; statements from
-- before are hashed here and marked legacy (their text follows from their ID
-- and issue time, which older versions logged). Agent clients record when
-- they first linked as a server, so that those that never do can be pruned.
-- A server ID stays bound to the agent client that linked it after the
-- server's row is gone (an unreachable server is forgotten), until that
-- client is deactivated or deleted.

ALTER TABLE software_statements
	ADD COLUMN hash       BYTEA,
	ADD COLUMN expires_at BIGINT  NOT NULL DEFAULT 0, -- 0: never
	ADD COLUMN max_uses   BIGINT  NOT NULL DEFAULT 0, -- 0: no limit
	ADD COLUMN uses       BIGINT  NOT NULL DEFAULT 0,
	ADD COLUMN legacy     BOOLEAN NOT NULL DEFAULT false;
UPDATE software_statements SET hash = sha256(convert_to(statement, 'UTF8')), legacy = true;
ALTER TABLE software_statements DROP COLUMN statement; -- drops its index too
ALTER TABLE software_statements ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX software_statements_hash ON software_statements (hash);

ALTER TABLE clients ADD COLUMN linked_at BIGINT NOT NULL DEFAULT 0; -- 0: never linked
-- Whether older agent clients ever linked is not known: count them as linked,
-- so that pruning never removes an agent that was working.
UPDATE clients SET linked_at = created_at WHERE kind = 'agent';
CREATE INDEX clients_unlinked ON clients (created_at) WHERE kind = 'agent' AND linked_at = 0;

CREATE TABLE server_bindings (
	server_id       TEXT   PRIMARY KEY,
	agent_client_id TEXT   NOT NULL,
	bound_at        BIGINT NOT NULL
);

INSERT INTO server_bindings (server_id, agent_client_id, bound_at)
	SELECT id, agent_client_id, created_at FROM servers;
