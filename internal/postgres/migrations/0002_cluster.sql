-- 0002: tables that brokers sharing one database use to cooperate
-- (internal/cluster): who is alive, who holds a lease, and commands relayed to
-- the broker that holds an agent's link.

-- Brokers alive: each broker renews its row every second.
CREATE TABLE brokers (
	id         TEXT        PRIMARY KEY,
	started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	heartbeat  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Leases for work that one broker of the cluster does (queue, expiry, cleanup).
CREATE TABLE leases (
	name       TEXT        PRIMARY KEY,
	holder     TEXT        NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL
);

-- Commands for agents whose link another broker holds. origin waits for the
-- result; target runs the command on its link and writes the result.
CREATE TABLE commands (
	id         BIGSERIAL   PRIMARY KEY,
	origin     TEXT        NOT NULL,
	target     TEXT        NOT NULL,
	server_id  TEXT        NOT NULL,
	body       BYTEA       NOT NULL,
	deadline   TIMESTAMPTZ NOT NULL,
	claimed_at TIMESTAMPTZ,
	done_at    TIMESTAMPTZ,
	result     BYTEA
);

CREATE INDEX commands_pending ON commands (target, id) WHERE claimed_at IS NULL;
CREATE INDEX commands_deadline ON commands (deadline);
