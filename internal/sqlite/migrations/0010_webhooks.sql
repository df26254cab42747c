-- 0010: webhooks (issue 18): registered endpoints, each with its durable
-- delivery cursor (the ID of the last event it acknowledged) and retry
-- state, and a bounded log of delivery attempts per webhook. Times are Unix
-- milliseconds, 0 for none; event_types is a JSON array of strings.
CREATE TABLE webhooks (
	id              TEXT    PRIMARY KEY,
	url             TEXT    NOT NULL,
	event_types     TEXT    NOT NULL DEFAULT '[]',
	secret          TEXT    NOT NULL,
	created_at      INTEGER NOT NULL,
	state           TEXT    NOT NULL,
	disabled_reason TEXT    NOT NULL DEFAULT '',
	cursor          INTEGER NOT NULL DEFAULT 0,
	attempts        INTEGER NOT NULL DEFAULT 0,
	failing_since   INTEGER NOT NULL DEFAULT 0,
	next_attempt    INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE webhook_deliveries (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	webhook_id  TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	event_id    INTEGER NOT NULL,
	event_type  TEXT    NOT NULL,
	attempt     INTEGER NOT NULL,
	at          INTEGER NOT NULL,
	status      INTEGER NOT NULL,
	error       TEXT    NOT NULL DEFAULT '',
	duration_us INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);
