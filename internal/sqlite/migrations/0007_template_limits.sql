-- 0007: a template's lifetime policies and quotas (broker.SessionLimits as
-- JSON, its snake_case keys) and the GPUs each of its sessions counts
-- against GPU quotas (issue 17).
ALTER TABLE templates ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE templates ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;
