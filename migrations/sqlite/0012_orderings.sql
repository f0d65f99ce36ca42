-- Buildbot's rebuilt_buildid: the build a rebuild's buildset repeats, so
-- clients can find a build's reruns (buildsets?rebuilt_buildid=N).
ALTER TABLE buildsets ADD COLUMN rebuilt_build_id BIGINT;
CREATE INDEX buildsets_rebuilt ON buildsets (rebuilt_build_id) WHERE rebuilt_build_id IS NOT NULL;

-- The orderings clients use answer from an index, not a scan and a sort:
-- Buildbot's UI lists recent builds by start and end, release tooling asks
-- each builder for its latest finished build, and pending-request views
-- sort by submission.
CREATE INDEX builds_started_at ON builds (started_at);
CREATE INDEX builds_complete_at ON builds (complete_at);
CREATE INDEX builds_builder_complete_at ON builds (builder_id, complete_at);
CREATE INDEX buildrequests_submitted_at ON buildrequests (submitted_at);
CREATE INDEX buildsets_submitted_at ON buildsets (submitted_at);
