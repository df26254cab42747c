-- 0009: a template's lifetime policies and quotas (broker.SessionLimits as
-- JSON, its snake_case keys) and the GPUs each of its sessions counts
-- against GPU quotas (issue 17).
ALTER TABLE templates ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE templates ADD COLUMN gpus INTEGER NOT NULL DEFAULT 0;

-- The quota counts (postgres/quota.go) of templates and of the sessions
-- launched with identity provider groups, without a scan of all sessions.
CREATE INDEX sessions_template ON sessions ((spec::jsonb->>'tpl')) WHERE strpos(spec, '"tpl":') > 0;
CREATE INDEX sessions_launch_groups ON sessions (seq) WHERE strpos(spec, '"groups":') > 0;
