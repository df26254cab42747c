-- 0009: the audit log (issue 18, internal/audit): one row per state-changing
-- call, hash-chained. audit_head keeps the chain's end (so that deleting the
-- last rows is detected) and its anchor (the last row purged by retention).
-- Triggers refuse to update rows and to delete rows that retention has not
-- purged (anchored): tampering needs dropping them first, and then the chain
-- tells (berth-broker audit verify).
CREATE TABLE audit_log (
	seq        INTEGER PRIMARY KEY,
	time       INTEGER NOT NULL,
	actor_kind TEXT    NOT NULL,
	actor      TEXT    NOT NULL,
	action     TEXT    NOT NULL,
	targets    TEXT    NOT NULL,
	source     TEXT    NOT NULL,
	result     TEXT    NOT NULL,
	status     INTEGER NOT NULL,
	error      TEXT    NOT NULL,
	detail     TEXT    NOT NULL,
	broker     TEXT    NOT NULL,
	prev_hash  TEXT    NOT NULL,
	hash       TEXT    NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

CREATE TABLE audit_head (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	seq         INTEGER NOT NULL,
	hash        TEXT    NOT NULL,
	anchor_seq  INTEGER NOT NULL,
	anchor_hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash, anchor_seq, anchor_hash) VALUES
	(1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
	 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > (SELECT anchor_seq FROM audit_head WHERE id = 1)
BEGIN
	SELECT RAISE(ABORT, 'the audit log is append-only: only records older than the retention are deleted');
END;
