-- What each master's configuration serves. A master rewrites only its own
-- rows at start and on reload, so masters sharing a database with
-- different configurations no longer overwrite each other; a builder or
-- worker is configured while some master's rows name it.
CREATE TABLE builder_masters (
    builder_id BIGINT NOT NULL REFERENCES builders (id),
    master_id BIGINT NOT NULL REFERENCES masters (id),
    PRIMARY KEY (builder_id, master_id)
);
CREATE INDEX builder_masters_master ON builder_masters (master_id);

CREATE TABLE worker_masters (
    worker_id BIGINT NOT NULL REFERENCES workers (id),
    master_id BIGINT NOT NULL REFERENCES masters (id),
    PRIMARY KEY (worker_id, master_id)
);
CREATE INDEX worker_masters_master ON worker_masters (master_id);

-- Which workers serve which builders, per master.
CREATE TABLE configured_workers (
    worker_id BIGINT NOT NULL REFERENCES workers (id),
    builder_id BIGINT NOT NULL REFERENCES builders (id),
    master_id BIGINT NOT NULL REFERENCES masters (id),
    PRIMARY KEY (worker_id, builder_id, master_id)
);
CREATE INDEX configured_workers_master ON configured_workers (master_id);

-- What the masters running at the upgrade served, until each starts again
-- and writes its own. builder_workers is no longer read; it stays for
-- masters of the previous version still running during a rolling upgrade.
INSERT INTO builder_masters (builder_id, master_id)
    SELECT b.id, m.id FROM builders b, masters m WHERE b.configured = 1 AND m.active = 1;
INSERT INTO worker_masters (worker_id, master_id)
    SELECT w.id, m.id FROM workers w, masters m WHERE w.configured = 1 AND m.active = 1;
INSERT INTO configured_workers (worker_id, builder_id, master_id)
    SELECT bw.worker_id, bw.builder_id, m.id FROM builder_workers bw, masters m WHERE m.active = 1;
