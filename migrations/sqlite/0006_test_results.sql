-- Test results (SQLite): Buildbot 4's four tables, served in its Data
-- API shapes, and Cascade's additions beside them (what a run's output said:
-- seed, command, order; each test that did not simply pass, with its
-- traceback). Kept identical to PostgreSQL's but for the id type.

CREATE TABLE test_names (
    id INTEGER PRIMARY KEY,
    builderid BIGINT NOT NULL REFERENCES builders (id),
    name TEXT NOT NULL,
    UNIQUE (builderid, name)
);

CREATE TABLE test_code_paths (
    id INTEGER PRIMARY KEY,
    builderid BIGINT NOT NULL REFERENCES builders (id),
    path TEXT NOT NULL,
    UNIQUE (builderid, path)
);

-- category and value_unit as Buildbot's ('pass_fail' and 'boolean' here);
-- complete is 0/1.
CREATE TABLE test_result_sets (
    id INTEGER PRIMARY KEY,
    builderid BIGINT NOT NULL REFERENCES builders (id),
    buildid BIGINT NOT NULL REFERENCES builds (id),
    stepid BIGINT NOT NULL REFERENCES steps (id),
    description TEXT,
    category TEXT NOT NULL,
    value_unit TEXT NOT NULL,
    tests_passed BIGINT,
    tests_failed BIGINT,
    complete BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX test_result_sets_build ON test_result_sets (buildid);
CREATE INDEX test_result_sets_step ON test_result_sets (stepid);

-- value '1' passed, '0' failed (Buildbot's pass_fail/boolean).
CREATE TABLE test_results (
    id INTEGER PRIMARY KEY,
    builderid BIGINT NOT NULL REFERENCES builders (id),
    test_result_setid BIGINT NOT NULL REFERENCES test_result_sets (id),
    test_nameid BIGINT REFERENCES test_names (id),
    test_code_pathid BIGINT REFERENCES test_code_paths (id),
    line BIGINT,
    duration_ns BIGINT,
    value TEXT NOT NULL
);
CREATE INDEX test_results_set ON test_results (test_result_setid, id);

-- Cascade: what the runner's output said, one row per set.
-- runner: cascade_diagnosis::TestRunner ('regrtest', 'junit');
-- test_order, leaks, fatal: one entry per line.
CREATE TABLE test_runs (
    test_result_setid BIGINT PRIMARY KEY REFERENCES test_result_sets (id),
    buildid BIGINT NOT NULL REFERENCES builds (id),
    runner TEXT NOT NULL,
    python TEXT,
    seed TEXT,
    command TEXT,
    parallel BIGINT NOT NULL,
    test_order TEXT NOT NULL,
    summary TEXT,
    leaks TEXT NOT NULL,
    fatal TEXT NOT NULL,
    truncated BIGINT NOT NULL
);
CREATE INDEX test_runs_build ON test_runs (buildid);

-- Cascade: every test that did not simply pass. method is NULL for the
-- file's own row; outcome and rerun are cascade_diagnosis::Outcome names;
-- flaky = 1 when it failed, then passed on re-run.
CREATE TABLE test_problems (
    id INTEGER PRIMARY KEY,
    test_result_setid BIGINT NOT NULL REFERENCES test_result_sets (id),
    buildid BIGINT NOT NULL REFERENCES builds (id),
    builderid BIGINT NOT NULL REFERENCES builders (id),
    file TEXT NOT NULL,
    method TEXT,
    outcome TEXT NOT NULL,
    rerun TEXT,
    flaky BIGINT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX test_problems_build ON test_problems (buildid, id);
CREATE INDEX test_problems_file ON test_problems (builderid, file, buildid);
