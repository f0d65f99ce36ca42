-- Cascade schema, version 1 (PostgreSQL). Kept column-for-column identical to
-- migrations/sqlite/0001_init.sql: only the id column type differs.
-- Times are Unix seconds (BIGINT), flags are 0/1 BIGINT, JSON is TEXT:
-- the portable subset that one query text can serve on both backends.

CREATE TABLE masters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    active BIGINT NOT NULL DEFAULT 0,
    last_active BIGINT NOT NULL
);

CREATE TABLE builders (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    branch TEXT,
    description TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    configured BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE workers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL DEFAULT '{}',
    paused BIGINT NOT NULL DEFAULT 0,
    pause_reason TEXT,
    graceful BIGINT NOT NULL DEFAULT 0,
    configured BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE builder_workers (
    builder_id BIGINT NOT NULL REFERENCES builders (id),
    worker_id BIGINT NOT NULL REFERENCES workers (id),
    PRIMARY KEY (builder_id, worker_id)
);

CREATE TABLE worker_connections (
    worker_id BIGINT NOT NULL REFERENCES workers (id),
    master_id BIGINT NOT NULL REFERENCES masters (id),
    connected_at BIGINT NOT NULL,
    PRIMARY KEY (worker_id, master_id)
);

CREATE TABLE sourcestamps (
    id BIGSERIAL PRIMARY KEY,
    ss_key TEXT NOT NULL UNIQUE,
    branch TEXT,
    revision TEXT,
    repository TEXT NOT NULL,
    project TEXT NOT NULL,
    codebase TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE changes (
    id BIGSERIAL PRIMARY KEY,
    author TEXT NOT NULL,
    committer TEXT,
    comments TEXT NOT NULL,
    branch TEXT,
    revision TEXT,
    revlink TEXT,
    when_timestamp BIGINT NOT NULL,
    category TEXT,
    repository TEXT NOT NULL,
    codebase TEXT NOT NULL,
    project TEXT NOT NULL,
    sourcestamp_id BIGINT NOT NULL REFERENCES sourcestamps (id),
    parent_change_id BIGINT REFERENCES changes (id),
    received_at BIGINT NOT NULL
);
CREATE INDEX changes_branch ON changes (branch, id);
CREATE INDEX changes_revision ON changes (revision);
CREATE INDEX changes_author ON changes (author, id);
CREATE INDEX changes_sourcestamp ON changes (sourcestamp_id);

CREATE TABLE change_files (
    change_id BIGINT NOT NULL REFERENCES changes (id),
    filename TEXT NOT NULL
);
CREATE INDEX change_files_change ON change_files (change_id);

CREATE TABLE change_properties (
    change_id BIGINT NOT NULL REFERENCES changes (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (change_id, name)
);

CREATE TABLE schedulers (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    last_fired_at BIGINT
);

-- Changes a scheduler has classified but not yet turned into a buildset:
-- the tree-stable timer's whole state, so it survives a restart.
CREATE TABLE scheduler_changes (
    scheduler_id BIGINT NOT NULL REFERENCES schedulers (id),
    change_id BIGINT NOT NULL REFERENCES changes (id),
    important BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (scheduler_id, change_id)
);
CREATE INDEX scheduler_changes_timer ON scheduler_changes (scheduler_id, important, received_at);

CREATE TABLE buildsets (
    id BIGSERIAL PRIMARY KEY,
    external_idstring TEXT,
    reason TEXT NOT NULL,
    scheduler_id BIGINT REFERENCES schedulers (id),
    submitted_at BIGINT NOT NULL,
    complete BIGINT NOT NULL DEFAULT 0,
    complete_at BIGINT,
    results BIGINT,
    parent_build_id BIGINT,
    parent_relationship TEXT
);
CREATE INDEX buildsets_complete ON buildsets (complete, id);

CREATE TABLE buildset_properties (
    buildset_id BIGINT NOT NULL REFERENCES buildsets (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (buildset_id, name)
);

CREATE TABLE buildset_sourcestamps (
    buildset_id BIGINT NOT NULL REFERENCES buildsets (id),
    sourcestamp_id BIGINT NOT NULL REFERENCES sourcestamps (id),
    PRIMARY KEY (buildset_id, sourcestamp_id)
);

CREATE TABLE buildset_changes (
    buildset_id BIGINT NOT NULL REFERENCES buildsets (id),
    change_id BIGINT NOT NULL REFERENCES changes (id),
    PRIMARY KEY (buildset_id, change_id)
);
CREATE INDEX buildset_changes_change ON buildset_changes (change_id);

CREATE TABLE builds (
    id BIGSERIAL PRIMARY KEY,
    number BIGINT NOT NULL,
    builder_id BIGINT NOT NULL REFERENCES builders (id),
    build_request_id BIGINT NOT NULL,
    worker_id BIGINT REFERENCES workers (id),
    master_id BIGINT NOT NULL REFERENCES masters (id),
    started_at BIGINT NOT NULL,
    complete_at BIGINT,
    state_string TEXT NOT NULL DEFAULT '',
    results BIGINT,
    UNIQUE (builder_id, number)
);
CREATE INDEX builds_worker ON builds (worker_id, id);
CREATE INDEX builds_incomplete ON builds (master_id) WHERE complete_at IS NULL;

-- branch and repository are copied from the buildset's source stamp so that
-- a builder can find the requests it may merge with one index lookup.
-- pinned_revision: set when the request asks for one exact commit with no
-- changes behind it (a forced build); such requests merge only with their like.
CREATE TABLE buildrequests (
    id BIGSERIAL PRIMARY KEY,
    buildset_id BIGINT NOT NULL REFERENCES buildsets (id),
    builder_id BIGINT NOT NULL REFERENCES builders (id),
    priority BIGINT NOT NULL DEFAULT 0,
    repository TEXT NOT NULL,
    branch TEXT,
    pinned_revision TEXT,
    submitted_at BIGINT NOT NULL,
    complete BIGINT NOT NULL DEFAULT 0,
    complete_at BIGINT,
    results BIGINT NOT NULL DEFAULT -1,
    waited_for BIGINT NOT NULL DEFAULT 0,
    claimed_by_master_id BIGINT REFERENCES masters (id),
    claimed_at BIGINT,
    build_id BIGINT REFERENCES builds (id),
    merged_into BIGINT REFERENCES buildrequests (id)
);
CREATE INDEX buildrequests_pending ON buildrequests (builder_id, id) WHERE complete = 0 AND claimed_by_master_id IS NULL;
CREATE INDEX buildrequests_pending_branch ON buildrequests (branch) WHERE complete = 0 AND claimed_by_master_id IS NULL;
CREATE INDEX buildrequests_builder ON buildrequests (builder_id, id);
CREATE INDEX buildrequests_buildset ON buildrequests (buildset_id);
CREATE INDEX buildrequests_build ON buildrequests (build_id);
CREATE INDEX buildrequests_complete ON buildrequests (complete, id);

CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    hook_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (hook_id, delivery_id)
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
