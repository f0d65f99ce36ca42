-- `cascade import-buildbot`: per Buildbot database (source: its URL without
-- password) and per table (name), the offset its ids were moved by (0 in a
-- store that was new) and the end of the last batch committed (done_key: a
-- Buildbot id; for log chunks done_key, done_line: log id and first line).
CREATE TABLE buildbot_imports (
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    id_offset BIGINT NOT NULL,
    done_key BIGINT NOT NULL,
    done_line BIGINT NOT NULL,
    PRIMARY KEY (source, name)
);
