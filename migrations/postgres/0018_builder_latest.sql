-- Each builder's newest build and newest finished build, kept as data:
-- written in the transaction that starts or ends a build, so the home,
-- builders, release and console pages read one row per builder instead of
-- searching the builds of each (a plan that changed with the table's size).
CREATE TABLE builder_latest (
    builder_id BIGINT PRIMARY KEY REFERENCES builders (id),
    build_id BIGINT NOT NULL,
    number BIGINT NOT NULL,
    finished_build_id BIGINT,
    finished_number BIGINT
);
INSERT INTO builder_latest (builder_id, build_id, number, finished_build_id, finished_number)
SELECT bl.id,
    (SELECT x.id FROM builds x WHERE x.builder_id = bl.id ORDER BY x.number DESC LIMIT 1),
    (SELECT MAX(x.number) FROM builds x WHERE x.builder_id = bl.id),
    (SELECT x.id FROM builds x WHERE x.builder_id = bl.id AND x.complete_at IS NOT NULL ORDER BY x.number DESC LIMIT 1),
    (SELECT MAX(x.number) FROM builds x WHERE x.builder_id = bl.id AND x.complete_at IS NOT NULL)
FROM builders bl WHERE EXISTS (SELECT 1 FROM builds x WHERE x.builder_id = bl.id);
