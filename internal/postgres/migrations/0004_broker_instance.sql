-- 0004: each running broker process marks its row of brokers with a random
-- instance token and says where it runs, so that a second process started
-- with the same broker-id is refused while the first one's heartbeat is fresh
-- (internal/cluster Node.Start).
ALTER TABLE brokers ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE brokers ADD COLUMN address TEXT NOT NULL DEFAULT '';
