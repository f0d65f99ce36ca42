#!/usr/bin/env bash
# Writes a real Buildbot history for the import tests: an unmodified Buildbot
# master and worker from PyPI (in virtual environments cached outside the
# clone) run real builds into the database given, then stop cleanly.
#
#   bash tests/support/buildbot-history.sh DB_URL [DIR]
#
# DB_URL is a SQLAlchemy URL as a Buildbot master.cfg takes it:
#   sqlite:////abs/path/state.sqlite            (the file must not exist yet)
#   postgresql://postgres@127.0.0.1:5432/NAME   (an existing, empty database)
# DIR holds the master's and the worker's base directories and their logs
# (made if missing; must not hold a master already); a temporary folder,
# removed at the end, when not given.
#
# What it runs, in five phases, each with another c['logCompressionMethod']
# (the master is reconfigured between them with SIGHUP, and each phase waits
# for its builds to finish, so each phase's logs end up compressed its way):
#   gz:   change 1 from `buildbot sendchange` (branch main, 3 files, 2 properties)
#   bz2:  change 2 (branch main); plus a change on branch feature that no
#         scheduler takes (a change without builds)
#   zstd: change 3 (branch main)
#   lz4:  a ForceScheduler build of linux-stable (through the REST API)
#   br:   a ForceScheduler build of docs
# Each change on main builds both builders, so 8 builds in all.
#   linux-stable (tags stable, 3.x; project cpython): a 3,000-line stdio log
#     with stderr lines in it (several log chunks), a property from a command,
#     a step recording 5 test results (2 sets) with a text and an HTML log, a
#     URL and build data, and a step skipped by doStepIf.
#   docs (no tags, no project): a step that passes, one that fails (exit 3),
#     one with warnings and one that runs after the failure.
# Prints the database URL on stdout when all is done; the rest goes to stderr.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 DB_URL [DIR]" >&2
  exit 2
fi
db_url="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${BUILDBOT_VERSION:-4.3.0}"
root="${CASCADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade}"
venv="$root/buildbot-$version"

log() { echo "buildbot-history: $*" >&2; }

# --- the master's virtual environment (shared with other scripts) ----------
# Pins as in Buildbot 4.3.0's own CI (requirements-ci.txt) for what matters to
# the database; the compressors make every logCompressionMethod available.
deps=(
  "buildbot==$version" "buildbot-www==$version"
  "SQLAlchemy==2.0.36" "alembic==1.14.0" "Twisted==24.11.0"
  "psycopg2-binary==2.9.10" "zstandard==0.23.0" "lz4==4.3.3" "Brotli==1.1.0" "Markdown==3.7"
)
mkdir -p "$root"
(
  flock 9
  if [ ! -x "$venv/bin/buildbot" ] || ! "$venv/bin/python" -c "import buildbot" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${deps[@]}" >&2
  elif ! "$venv/bin/python" -c "import buildbot_www, psycopg2, zstandard, lz4, brotli, markdown" 2>/dev/null; then
    # made by another script with buildbot alone: add what this one needs
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "buildbot-www==$version" "psycopg2-binary==2.9.10" "zstandard==0.23.0" \
      "lz4==4.3.3" "Brotli==1.1.0" "Markdown==3.7" >&2
  fi
) 9>"$root/.buildbot-$version.lock"
worker_bin="$(BUILDBOT_WORKER_VERSION="$version" bash "$here/buildbot-worker.sh")"
py="$venv/bin/python"

# --- where the master and the worker live -----------------------------------
if [ $# -ge 2 ]; then
  dir="$2"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  remove_dir=0
  if [ -e "$dir/master/buildbot.tac" ]; then
    echo "buildbot-history: $dir already holds a master" >&2
    exit 1
  fi
else
  dir="$(mktemp -d "${TMPDIR:-/tmp}/bbhistory.XXXXXX")"
  remove_dir=1
fi
# SQLAlchemy 2.1 takes a bare postgresql:// for psycopg 3, 2.0 for psycopg2:
# name the driver, so that either works with the psycopg2 installed here.
master_db_url="$db_url"
case "$db_url" in
  postgresql://* | postgres://*) master_db_url="postgresql+psycopg2://${db_url#*://}" ;;
esac
case "$db_url" in
  sqlite:///*)
    db_file="${db_url#sqlite:///}"
    if [ -e "$db_file" ]; then
      echo "buildbot-history: $db_file exists already" >&2
      exit 1
    fi
    mkdir -p "$(dirname "$db_file")"
    ;;
esac

master_pid=""
worker_pid=""
cleanup() {
  local rc=$?
  for pid in $worker_pid $master_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ "$rc" -ne 0 ] && [ -f "$dir/master/twistd.log" ]; then
    log "failed; the end of the master's log:"
    tail -n 40 "$dir/master/twistd.log" >&2 || true
  fi
  if [ "$remove_dir" = 1 ]; then rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pb_port="$(free_port)"
www_port="$(free_port)"
while [ "$www_port" = "$pb_port" ]; do www_port="$(free_port)"; done

# --- the master -------------------------------------------------------------
log "master in $dir/master, database $db_url"
tables() { # how many tables the database has
  "$py" - "$master_db_url" <<'EOF'
import sys
import sqlalchemy as sa
print(len(sa.inspect(sa.create_engine(sys.argv[1])).get_table_names()))
EOF
}
if [ "$(tables)" != 0 ]; then
  log "the database $db_url is not empty"
  exit 1
fi
"$venv/bin/buildbot" create-master --quiet -r --db="$master_db_url" "$dir/master" >&2
# create-master exits 0 even when it could not make the tables: look for them
"$py" - "$master_db_url" <<'EOF' || { log "create-master made no database"; exit 1; }
import sys
import sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
names = set(sa.inspect(engine).get_table_names())
sys.exit(0 if {"alembic_version", "builds", "logchunks"} <= names else 1)
EOF

settings() { # compression method -> history.json, which master.cfg reads at every (re)load
  "$py" - "$dir/master/history.json" "$master_db_url" "$pb_port" "$www_port" "$1" <<'EOF'
import json, sys
path, db_url, pb, www, comp = sys.argv[1:]
with open(path, "w") as f:
    json.dump({"db_url": db_url, "pb_port": int(pb), "www_port": int(www), "compression": comp}, f)
EOF
}
settings gz

cat >"$dir/master/master.cfg" <<'EOF'
# -*- python -*-
# Written by Cascade's tests/support/buildbot-history.sh.
import json
import os

from twisted.internet import defer

from buildbot.plugins import changes, schedulers, steps, util, worker
from buildbot.process import buildstep
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS

with open(os.path.join(basedir, "history.json")) as f:
    settings = json.load(f)

c = BuildmasterConfig = {}
c["title"] = "bbhistory"
c["titleURL"] = "http://example.org/"
c["buildbotURL"] = "http://127.0.0.1:%d/" % settings["www_port"]
c["buildbotNetUsageData"] = None
c["db"] = {"db_url": settings["db_url"]}
c["logCompressionMethod"] = settings["compression"]
c["collapseRequests"] = False
c["protocols"] = {"pb": {"port": "tcp:%d:interface=127.0.0.1" % settings["pb_port"]}}
c["www"] = {"port": "tcp:%d:interface=127.0.0.1" % settings["www_port"], "plugins": {}}
c["workers"] = [worker.Worker("bb-worker", "pass", max_builds=2, properties={"os": "linux"})]
c["change_source"] = [changes.PBChangeSource(user="change", passwd="changepw")]
c["projects"] = [
    util.Project(name="cpython", slug="cpython", description="The *CPython* interpreter",
                 description_format="markdown"),
]


class UnitTests(buildstep.ShellMixin, buildstep.BuildStep):
    """Runs a command printing 'PASS|FAIL name path line duration_ns' lines and records
    them as test results, with a text log, an HTML log, a URL and build data."""

    name = "unit tests"

    def __init__(self, **kwargs):
        kwargs = self.setupShellMixin(kwargs)
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def addTestResultSets(self):
        self._tests = yield self.addTestResultSet("unit tests", "pass_fail", "boolean")
        self._timings = yield self.addTestResultSet("timings", "performance", "ns")

    @defer.inlineCallbacks
    def run(self):
        cmd = yield self.makeRemoteShellCommand(collectStdout=True)
        yield self.runCommand(cmd)
        passed = failed = 0
        for line in cmd.stdout.splitlines():
            parts = line.split()
            if len(parts) != 5 or parts[0] not in ("PASS", "FAIL"):
                continue
            ok = parts[0] == "PASS"
            passed += ok
            failed += not ok
            self.addTestResult(self._tests, "1" if ok else "0", test_name=parts[1],
                               test_code_path=parts[2], line=int(parts[3]),
                               duration_ns=int(parts[4]))
            self.addTestResult(self._timings, parts[4], test_name=parts[1])
        yield self.addCompleteLog("summary", "%d passed\n%d failed\n" % (passed, failed))
        yield self.addHTMLLog("report", "<h1>Tests</h1>\n<p>%d passed, %d failed</p>\n"
                              % (passed, failed))
        yield self.addURL("coverage", "http://example.org/coverage/%d" % self.build.buildid)
        yield self.setBuildData("test-summary", json.dumps({"passed": passed}).encode(),
                                "UnitTests")
        return cmd.results()


long_output = (
    "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); "
    "echo \"compiling module $i of 3000: Objects/obj$i.c -> build/obj$i.o [ok]\"; "
    "if [ $((i % 500)) -eq 0 ]; then echo \"warning: $i objects so far\" >&2; fi; done"
)

stable = util.BuildFactory()
stable.addStep(steps.ShellCommand(name="compile", command=["sh", "-c", long_output],
                                  description="compiling", descriptionDone="compiled"))
stable.addStep(steps.SetPropertyFromCommand(name="answer", command="echo 42",
                                            property="answer"))
stable.addStep(UnitTests(command=["sh", "-c",
    "echo 'PASS test_int Lib/test/test_int.py 10 1500';"
    "echo 'PASS test_str Lib/test/test_str.py 20 2500';"
    "echo 'FAIL test_dict Lib/test/test_dict.py 30 3500';"
    "echo 'PASS test_list Lib/test/test_list.py 40 4500';"
    "echo 'PASS test_set Lib/test/test_set.py 50 5500'"],
    decodeRC={0: SUCCESS, 1: FAILURE}))
stable.addStep(steps.ShellCommand(name="never", command=["true"], doStepIf=False))

docs = util.BuildFactory()
docs.addStep(steps.ShellCommand(name="sphinx", command=["sh", "-c",
    "echo building docs; echo 'WARNING: a reference' >&2; echo done"]))
docs.addStep(steps.ShellCommand(name="linkcheck", command=["sh", "-c",
    "echo checking links; echo 'broken: http://example.invalid/' >&2; exit 3"]))
docs.addStep(steps.ShellCommand(name="spelling", command=["sh", "-c", "echo typo; exit 1"],
                                decodeRC={0: SUCCESS, 1: WARNINGS}))
docs.addStep(steps.ShellCommand(name="upload", command=["echo", "uploaded"]))

c["builders"] = [
    util.BuilderConfig(name="linux-stable", workernames=["bb-worker"], factory=stable,
                       tags=["stable", "3.x"], project="cpython",
                       description="Linux, the *stable* branch", description_format="markdown",
                       properties={"flavour": "release"}),
    util.BuilderConfig(name="docs", workernames=["bb-worker"], factory=docs),
]
c["schedulers"] = [
    schedulers.SingleBranchScheduler(name="main", builderNames=["linux-stable", "docs"],
                                     change_filter=util.ChangeFilter(branch="main"),
                                     treeStableTimer=None),
    schedulers.ForceScheduler(name="force", builderNames=["linux-stable", "docs"],
                              properties=[util.StringParameter(name="extra", default="")]),
]
EOF

"$venv/bin/buildbot" checkconfig "$dir/master" >&2

# --- the worker -------------------------------------------------------------
"$worker_bin" create-worker --quiet -r "$dir/worker" "127.0.0.1:$pb_port" bb-worker pass >&2
echo "Cascade test <cascade@example.org>" >"$dir/worker/info/admin"
echo "bbhistory test worker" >"$dir/worker/info/host"

# --- helpers ----------------------------------------------------------------
cat >"$dir/api.py" <<'EOF'
# api.py PORT wait-worker | wait-builds N | force BUILDER REASON
import json, sys, time, urllib.request
port, what = int(sys.argv[1]), sys.argv[2]
base = "http://127.0.0.1:%d/api/v2/" % port
def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)
deadline = time.time() + 120
if what == "wait-worker":
    while time.time() < deadline:
        try:
            ws = get("workers")["workers"]
            if ws and ws[0]["connected_to"]:
                sys.exit(0)
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("worker did not connect")
if what == "wait-builds":
    want = int(sys.argv[3])
    while time.time() < deadline:
        done = get("builds?complete=true")["meta"]["total"]
        pending = get("buildrequests?complete=false")["meta"]["total"]
        running = get("builds?complete=false")["meta"]["total"]
        if done >= want and not pending and not running:
            sys.exit(0)
        time.sleep(0.5)
    sys.exit("builds did not finish: %d of %d done" % (done, want))
if what == "force":
    body = json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1, "params": {
        "builderNames": [sys.argv[3]], "reason": sys.argv[4],
        "username": "Force User <force@example.org>", "extra": "forced-" + sys.argv[3]}})
    req = urllib.request.Request(base + "forceschedulers/force", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        res = json.load(r)
    if "error" in res:
        sys.exit("force failed: %r" % res)
    sys.exit(0)
sys.exit("unknown command " + what)
EOF

api() { # api.py in the background, so that a signal is not held up until it ends
  "$py" "$dir/api.py" "$www_port" "$@" &
  wait $!
}

wait_log() { # PATTERN COUNT: until the master's log has COUNT lines matching PATTERN
  for _ in $(seq 1 600); do
    if [ "$(grep -c -- "$1" "$dir/master/twistd.log" 2>/dev/null || true)" -ge "$2" ]; then return 0; fi
    kill -0 "$master_pid" 2>/dev/null || { log "the master died"; return 1; }
    sleep 0.2
  done
  log "timed out waiting for '$1' in the master's log"
  return 1
}

reconfigs=0
phase() { # COMPRESSION: reconfigure the master to compress logs this way
  settings "$1"
  reconfigs=$((reconfigs + 1))
  kill -HUP "$master_pid"
  wait_log "configuration update complete" "$reconfigs"
  log "logCompressionMethod = $1"
}

sendchange() { # WHEN REVISION BRANCH WHO ISSUE COMMENTS FILES...
  local when="$1" rev="$2" branch="$3" who="$4" issue="$5" comments="$6"
  shift 6
  "$venv/bin/buildbot" sendchange --master "127.0.0.1:$pb_port" --auth change:changepw \
    --who "$who" --vc git --repository https://example.org/cpython.git --project cpython \
    --branch "$branch" --revision "$rev" --revlink "https://example.org/cpython/commit/$rev" \
    --category core --when "$when" --comments "$comments" \
    --property "issue:$issue" --property "reviewed:yes" "$@" >&2
}

# --- run --------------------------------------------------------------------
(cd "$dir/master" && exec "$venv/bin/buildbot" start --nodaemon .) >"$dir/master.out" 2>&1 &
master_pid=$!
wait_log "BuildMaster is running" 1
log "master running (pb $pb_port, www $www_port)"
# a clean environment: the worker writes its environment into every stdio log
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$dir/worker" \
  LANG=C.UTF-8 TZ=UTC "$worker_bin" start --nodaemon "$dir/worker" >"$dir/worker.out" 2>&1 &
worker_pid=$!
api wait-worker
log "worker connected"

now="$(date +%s)"
sendchange $((now - 300)) 1f0e5a3c9b7d4e2f8a6b0c1d2e3f405162738495 main \
  "Alice Example <alice@example.org>" gh-101 $'gh-101: fix the parser\n\nA longer body, with "quotes".' \
  Parser/parser.c Lib/test/test_parser.py "Doc/what's new.rst"
api wait-builds 2
log "phase gz done"

phase bz2
sendchange $((now - 200)) 2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d main \
  "Bob Example <bob@example.org>" gh-102 "gh-102: speed up dict lookups" Objects/dictobject.c
sendchange $((now - 150)) 9999999999999999999999999999999999999999 feature \
  "Carol Example <carol@example.org>" gh-0 "WIP: not built by any scheduler" Misc/NEWS.d/wip.rst
api wait-builds 4
log "phase bz2 done"

phase zstd
sendchange $((now - 100)) 3b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e main \
  "Alice Example <alice@example.org>" gh-103 "gh-103: docs typo (ünïcödé ✓)" Doc/library/os.rst
api wait-builds 6
log "phase zstd done"

phase lz4
api force linux-stable "forced with lz4"
api wait-builds 7
log "phase lz4 done"

phase br
api force docs "forced with brotli"
api wait-builds 8
log "phase br done"

# --- stop cleanly -----------------------------------------------------------
kill -TERM "$worker_pid"
wait "$worker_pid" 2>/dev/null || true
worker_pid=""
kill -TERM "$master_pid"
wait "$master_pid" 2>/dev/null || true
master_pid=""
grep -q "BuildMaster is stopped\|Server Shut Down" "$dir/master/twistd.log" ||
  log "warning: no clean shutdown line in the master's log"
log "done"
echo "$db_url"
