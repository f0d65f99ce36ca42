"""Fails on its first run, passes when regrtest re-runs it (--rerun, -w,
--fast-ci, --slow-ci).  Fixture for Cascade's regrtest output parser.

State lives in a marker file: the first run creates it and fails, the next run
finds it, deletes it and passes.  So every regrtest invocation shows
"fail, then pass on re-run", however often it is started, and nothing is ever
written into this (possibly read-only) folder.

Where the marker lives:

* CASCADE_FLAKY_MARK, if set, is the marker path itself (tests that drive
  regrtest use this to control the state exactly).
* Otherwise it is a file in the system temp dir named after the regrtest *main*
  process: its pid plus its start time (from /proc, when there is one, so a
  reused pid of a later run does not match).  Keying on the main process is
  what makes it survive the re-run, which regrtest does in a *new* process:
    - 3.10: the first run is in a worker (-jN) or in the main process, and
      "Re-running failed tests in verbose mode" runs in the main process;
    - 3.11.7+/3.12+: the re-run always goes to a fresh worker subprocess
      (even without -j), started by the main process.
  So: in a worker (3.10 `-m test.regrtest --worker-args ...`, 3.11.7+
  `-m test.libregrtest.worker JSON`) the main process is our parent, anywhere
  else it is ourselves.  Separate regrtest runs have different main processes,
  so they never see each other's marker.
* Workers of 3.11.7+ get TMPDIR/TMP/TEMP pointing at a per-test
  "test_python_*" directory that regrtest deletes after the test (and it flags
  files left there as "leaked temporary files").  The marker therefore goes
  to the first ancestor of tempfile.gettempdir() that is not such a directory.
"""
import os
import sys
import tempfile
import unittest


def _in_regrtest_worker():
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return "--worker-args" in sys.argv or name.endswith("libregrtest.worker")


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fp:
            stat = fp.read()
    except OSError:
        return "0"
    # Field 22 (starttime), counted after the ")" that closes the comm field.
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else "0"


def _temp_root():
    path = os.path.abspath(tempfile.gettempdir())
    while os.path.basename(path).startswith("test_python_"):
        path = os.path.dirname(path)
    return path


def marker_path():
    explicit = os.environ.get("CASCADE_FLAKY_MARK")
    if explicit:
        return explicit
    pid = os.getppid() if _in_regrtest_worker() else os.getpid()
    name = f"cascade-regrtest-flaky-{pid}-{_start_time(pid)}"
    return os.path.join(_temp_root(), name)


class FlakyTests(unittest.TestCase):
    def test_passes_on_rerun(self):
        mark = marker_path()
        if os.path.exists(mark):
            os.unlink(mark)
            return
        with open(mark, "w") as fp:
            fp.write("first run failed\n")
        self.fail("first run fails on purpose; the re-run passes")


if __name__ == "__main__":
    unittest.main()
