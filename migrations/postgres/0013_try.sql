-- `buildbot try` jobs: a diff built on top of a revision. Buildbot keeps it
-- in a `patches` table the source stamp points at; here each patched stamp
-- holds its own (one per try job), so every query that reads a stamp has it.
ALTER TABLE sourcestamps ADD COLUMN patch_level BIGINT;
ALTER TABLE sourcestamps ADD COLUMN patch_body TEXT;
ALTER TABLE sourcestamps ADD COLUMN patch_author TEXT;
ALTER TABLE sourcestamps ADD COLUMN patch_comment TEXT;

-- A try request builds its own diff: it never merges with another request.
ALTER TABLE buildrequests ADD COLUMN patched BIGINT NOT NULL DEFAULT 0;
