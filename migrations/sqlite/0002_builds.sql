-- Builds running (SQLite): steps, their logs, log chunks, build properties.
-- Kept identical to migrations/postgres/0002_builds.sql but for id and blob types.

CREATE TABLE steps (
    id INTEGER PRIMARY KEY,
    build_id BIGINT NOT NULL REFERENCES builds (id),
    number BIGINT NOT NULL,
    name TEXT NOT NULL,
    started_at BIGINT,
    complete_at BIGINT,
    state_string TEXT NOT NULL DEFAULT '',
    results BIGINT,
    hidden BIGINT NOT NULL DEFAULT 0,
    UNIQUE (build_id, number)
);

-- type: 's' for a stdio log (each line starts with its stream: o, e or h), 't' for text.
CREATE TABLE logs (
    id INTEGER PRIMARY KEY,
    step_id BIGINT NOT NULL REFERENCES steps (id),
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    type TEXT NOT NULL,
    num_lines BIGINT NOT NULL DEFAULT 0,
    complete BIGINT NOT NULL DEFAULT 0,
    UNIQUE (step_id, slug)
);

-- Lines first_line..=last_line of a log, joined by \n; compressed = 1 when deflated.
CREATE TABLE log_chunks (
    log_id BIGINT NOT NULL REFERENCES logs (id),
    first_line BIGINT NOT NULL,
    last_line BIGINT NOT NULL,
    compressed BIGINT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (log_id, first_line)
);

CREATE TABLE build_properties (
    build_id BIGINT NOT NULL REFERENCES builds (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (build_id, name)
);

CREATE INDEX builds_builder ON builds (builder_id, id);
