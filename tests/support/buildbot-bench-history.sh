#!/usr/bin/env bash
# A Buildbot 4.3 database with a long history, for the import benchmark
# (docs/performance.md): a real master's history (buildbot-history.sh: the
# schema, builders, worker and 8 real builds), then BUILDS more builds made
# by SQL in Buildbot's shape, in CPython-like proportions:
#   per build: 1 build request (with its claim), 10 properties, 5 steps,
#   one stdio log per step, of one chunk each (~40 lines; the chunks
#   cycle through every compression code 0-5, compressed by the Python
#   modules Buildbot uses);
#   per 4 builds: 1 change (2 files, 2 properties), its source stamp, and
#   1 buildset (3 properties) whose 4 requests the builds ran.
#
#   bash tests/support/buildbot-bench-history.sh DB_URL BUILDS
#
# DB_URL as for buildbot-history.sh (a SQLite file that does not exist yet,
# or an existing empty PostgreSQL database).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 DB_URL BUILDS" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/buildbot-history.sh" "$1" >/dev/null
py="$(dirname "$(bash "$here/buildbot.sh")")/python"
"$py" - "$1" "$2" <<'PY'
import bz2, sys, time, zlib
import brotli, lz4.block, zstandard

url, builds = sys.argv[1], int(sys.argv[2])
if url.startswith("sqlite"):
    import sqlite3
    db = sqlite3.connect(url.split(":///", 1)[1])
    def series(n):
        return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s) AS g"
    def blob(b):
        return f"X'{b.hex()}'"
    i_col = "g.i"
else:
    import psycopg2
    db = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    def series(n):
        return f"generate_series(1, {n}) AS g(i)"
    def blob(b):
        return f"'\\x{b.hex()}'::bytea"
    i_col = "g.i"
cur = db.cursor()

def top(table, col="id"):
    cur.execute(f"SELECT COALESCE(MAX({col}), 0) FROM {table}")
    return cur.fetchone()[0]

text = "\n".join(
    ["hmake -j2 test", "h in dir /home/worker/build (timeout 1200 secs)"]
    + [f"o0:{i:02d} load avg: 1.{i % 10} [{i:3d}/400] test_module_{i} passed" for i in range(36)]
    + ["e== Tests result: SUCCESS ==", "hprogram finished with exit code 0"]
).encode()
stream = zstandard.ZstdCompressor(level=9).compressobj()
chunks = [text, zlib.compress(text), bz2.compress(text), lz4.block.compress(text),
          stream.compress(text) + stream.flush(), brotli.compress(text)]
lines = text.count(b"\n") + 1

n_b, n_c = builds, max(1, builds // 4)
ss0, ch0, bs0, br0, b0 = top("sourcestamps"), top("changes", "changeid"), top("buildsets"), top("buildrequests"), top("builds")
st0, lg0 = top("steps"), top("logs")
cur.execute("SELECT id FROM builders ORDER BY id")
builders = [r[0] for r in cur.fetchall()]
nb = len(builders)
cur.execute("SELECT MIN(id) FROM workers")
worker = cur.fetchone()[0]
cur.execute("SELECT MIN(id) FROM masters")
master = cur.fetchone()[0]
builder_of = f"CASE (g.i % {nb}) " + " ".join(f"WHEN {k} THEN {b}" for k, b in enumerate(builders)) + " END"
t = 1700000000
statements = [
    f"""INSERT INTO sourcestamps (id, ss_hash, branch, revision, repository, codebase, project, created_at)
        SELECT {ss0} + g.i, 'bench' || g.i, 'main', 'rev' || g.i, 'https://example.org/cpython.git', '', 'cpython', {t} + g.i * 60
        FROM {series(n_c)}""",
    f"""INSERT INTO changes (changeid, author, committer, comments, branch, revision, revlink, when_timestamp, category,
        repository, codebase, project, sourcestampid, parent_changeids)
        SELECT {ch0} + g.i, 'Dev ' || (g.i % 97) || ' <dev@example.org>', NULL, 'gh-' || g.i || ': a fix', 'main', 'rev' || g.i,
        NULL, {t} + g.i * 60, NULL, 'https://example.org/cpython.git', '', 'cpython', {ss0} + g.i, NULL FROM {series(n_c)}""",
    f"""INSERT INTO change_files (changeid, filename) SELECT {ch0} + g.i, 'Lib/mod' || g.i || '.py' FROM {series(n_c)}""",
    f"""INSERT INTO change_files (changeid, filename) SELECT {ch0} + g.i, 'Lib/test/test_mod' || g.i || '.py' FROM {series(n_c)}""",
    f"""INSERT INTO change_properties (changeid, property_name, property_value)
        SELECT {ch0} + g.i, 'issue', '["gh-' || g.i || '", "Change"]' FROM {series(n_c)}""",
    f"""INSERT INTO change_properties (changeid, property_name, property_value)
        SELECT {ch0} + g.i, 'reviewed', '["yes", "Change"]' FROM {series(n_c)}""",
    f"""INSERT INTO buildsets (id, external_idstring, reason, submitted_at, complete, complete_at, results)
        SELECT {bs0} + g.i, NULL, 'The SingleBranchScheduler scheduler named ''main'' triggered this build',
        {t} + g.i * 60, 1, {t} + g.i * 60 + 600, g.i % 3 FROM {series(n_c)}""",
    f"""INSERT INTO buildset_sourcestamps (buildsetid, sourcestampid) SELECT {bs0} + g.i, {ss0} + g.i FROM {series(n_c)}""",
] + [
    f"""INSERT INTO buildset_properties (buildsetid, property_name, property_value)
        SELECT {bs0} + g.i, '{name}', '["{value}", "{source}"]' FROM {series(n_c)}"""
    for name, value, source in [("scheduler", "main", "Scheduler"), ("issue", "gh", "Change"), ("reviewed", "yes", "Change")]
] + [
    f"""INSERT INTO buildrequests (id, buildsetid, builderid, priority, complete, results, submitted_at, complete_at, waited_for)
        SELECT {br0} + g.i, {bs0} + 1 + (g.i - 1) / 4, {builder_of}, 0, 1, g.i % 3, {t} + g.i * 15, {t} + g.i * 15 + 600, 0
        FROM {series(n_b)}""",
    f"""INSERT INTO buildrequest_claims (brid, masterid, claimed_at) SELECT {br0} + g.i, {master}, {t} + g.i * 15 FROM {series(n_b)}""",
    f"""INSERT INTO builds (id, number, builderid, buildrequestid, workerid, masterid, started_at, complete_at,
        locks_duration_s, state_string, results)
        SELECT {b0} + g.i, 1000 + g.i, {builder_of}, {br0} + g.i, {worker}, {master}, {t} + g.i * 15, {t} + g.i * 15 + 600, 0,
        CASE g.i % 3 WHEN 0 THEN 'build successful' WHEN 1 THEN 'warnings test' ELSE 'failed test' END, g.i % 3
        FROM {series(n_b)}""",
] + [
    f"""INSERT INTO build_properties (buildid, name, value, source)
        SELECT {b0} + g.i, '{name}', {value}, '{source}' FROM {series(n_b)}"""
    for name, value, source in [
        ("buildername", "'\"linux\"'", "Builder"), ("buildnumber", "CAST(1000 + g.i AS TEXT)", "Build"),
        ("branch", "'\"main\"'", "Build"), ("revision", "'\"rev' || g.i || '\"'", "Build"),
        ("workername", "'\"bb-worker\"'", "Worker"), ("scheduler", "'\"main\"'", "Scheduler"),
        ("project", "'\"cpython\"'", "Build"), ("repository", "'\"https://example.org/cpython.git\"'", "Build"),
        ("got_revision", "'\"rev' || g.i || '\"'", "Git"), ("builddir", "'\"/home/worker/build\"'", "Worker"),
    ]
] + [
    f"""INSERT INTO steps (id, number, name, buildid, started_at, locks_acquired_at, complete_at, state_string, results, urls_json, hidden)
        SELECT {st0} + (g.i - 1) * 5 + {k + 1}, {k}, '{name}', {b0} + g.i, {t} + g.i * 15 + {k * 100}, {t} + g.i * 15 + {k * 100},
        {t} + g.i * 15 + {k * 100 + 90}, '{name} done', 0, '[]', 0 FROM {series(n_b)}"""
    for k, name in enumerate(["worker_preparation", "git", "configure", "compile", "test"])
] + [
    f"""INSERT INTO logs (id, name, slug, stepid, complete, num_lines, type)
        SELECT {lg0} + g.i, 'stdio', 'stdio', {st0} + g.i, 1, {lines}, 's' FROM {series(n_b * 5)}""",
] + [
    f"""INSERT INTO logchunks (logid, first_line, last_line, content, compressed)
        SELECT {lg0} + g.i, 0, {lines - 1}, {blob(c)}, {code} FROM {series(n_b * 5)} WHERE g.i % 6 = {code}"""
    for code, c in enumerate(chunks)
]
started = time.time()
for sql in statements:
    cur.execute(sql)
db.commit()
print(f"buildbot-bench-history: {builds} builds added in {time.time() - started:.0f} s", file=sys.stderr)
PY
