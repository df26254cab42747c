-- 0012: webhooks (issue 18): registered endpoints, each with its durable
-- delivery cursor (the ID of the last event it acknowledged) and retry
-- state, and a bounded log of delivery attempts per webhook. Times are Unix
-- milliseconds, 0 for none.
CREATE TABLE webhooks (
	id              TEXT COLLATE "C" PRIMARY KEY,
	url             TEXT    NOT NULL,
	event_types     TEXT[]  NOT NULL DEFAULT '{}',
	secret          TEXT    NOT NULL,
	created_at      BIGINT  NOT NULL,
	state           TEXT    NOT NULL,
	disabled_reason TEXT    NOT NULL DEFAULT '',
	cursor          BIGINT  NOT NULL DEFAULT 0,
	attempts        BIGINT  NOT NULL DEFAULT 0,
	failing_since   BIGINT  NOT NULL DEFAULT 0,
	next_attempt    BIGINT  NOT NULL DEFAULT 0,
	last_error      TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE webhook_deliveries (
	seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	webhook_id  TEXT COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
	event_id    BIGINT  NOT NULL,
	event_type  TEXT    NOT NULL,
	attempt     BIGINT  NOT NULL,
	at          BIGINT  NOT NULL,
	status      BIGINT  NOT NULL,
	error       TEXT    NOT NULL DEFAULT '',
	duration_us BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, seq);
