-- What the janitor removed of a finished build, and when (Unix seconds;
-- NULL: still there): its logs' contents (log_horizon), its artifact
-- folder (artifact_horizon), its steps, logs and test results
-- (build_horizon). The build row itself always stays. Each partial index
-- holds only what is still there, so a sweep finds the oldest at once
-- (artifacts per master: they are on the disk of the master that ran the build).
ALTER TABLE builds ADD COLUMN logs_removed_at BIGINT;
ALTER TABLE builds ADD COLUMN artifacts_removed_at BIGINT;
ALTER TABLE builds ADD COLUMN steps_removed_at BIGINT;
CREATE INDEX builds_logs_kept ON builds (complete_at) WHERE logs_removed_at IS NULL AND complete_at IS NOT NULL;
CREATE INDEX builds_artifacts_kept ON builds (master_id, complete_at) WHERE artifacts_removed_at IS NULL AND complete_at IS NOT NULL;
CREATE INDEX builds_steps_kept ON builds (complete_at) WHERE steps_removed_at IS NULL AND complete_at IS NOT NULL;
