-- 0011: the audit log (issue 18, internal/audit): one row per state-changing
-- call, hash-chained, linear across brokers (appends take a transaction-scoped
-- advisory lock, postgres/audit.go). audit_head keeps the chain's end (so
-- that deleting the last rows is detected) and its anchor (the last row
-- purged by retention). Triggers refuse to update rows and to delete rows
-- that retention has not purged: tampering needs dropping them first, and
-- then the chain tells (berth-broker audit verify).
CREATE TABLE audit_log (
	seq        BIGINT PRIMARY KEY,
	time       BIGINT NOT NULL,
	actor_kind TEXT   NOT NULL,
	actor      TEXT   NOT NULL,
	action     TEXT   NOT NULL,
	targets    TEXT   NOT NULL,
	source     TEXT   NOT NULL,
	result     TEXT   NOT NULL,
	status     INTEGER NOT NULL,
	error      TEXT   NOT NULL,
	detail     TEXT   NOT NULL,
	broker     TEXT   NOT NULL,
	prev_hash  TEXT   NOT NULL,
	hash       TEXT   NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

CREATE TABLE audit_head (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	seq         BIGINT NOT NULL,
	hash        TEXT   NOT NULL,
	anchor_seq  BIGINT NOT NULL,
	anchor_hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash, anchor_seq, anchor_hash) VALUES
	(1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
	 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		RAISE EXCEPTION 'the audit log is append-only';
	END IF;
	IF OLD.seq > (SELECT anchor_seq FROM audit_head WHERE id = 1) THEN
		RAISE EXCEPTION 'the audit log is append-only: only records older than the retention are deleted';
	END IF;
	RETURN OLD;
END
$$;
CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION audit_log_guard();
