-- 0013: each broker's row says which process holds it (boot ID, PID
-- namespace, PID and start time), so that a broker restarted after a crash on
-- the same machine sees that the process holding its broker-id is gone and
-- takes the ID over at once, instead of waiting for the dead one's heartbeat
-- to age (internal/cluster Node.Start).
ALTER TABLE brokers ADD COLUMN process TEXT NOT NULL DEFAULT '';
