"""Kills its process with SIGABRT, so faulthandler prints "Fatal Python error".

Run it under regrtest with -j N (or --slow-ci/--fast-ci): only the worker dies
and regrtest reports "test_crash crashed (Exit code -6)" (spelling varies by
version).  Without -j the test runs inside the regrtest main process, which then
dies with no summary at all.
"""
import os
import unittest

try:
    import resource
except ImportError:  # Windows
    resource = None


class CrashTests(unittest.TestCase):
    def test_abort(self):
        if resource is not None:
            # No core file, whatever the shell's ulimit -c says.
            try:
                _, hard = resource.getrlimit(resource.RLIMIT_CORE)
                resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
            except (ValueError, OSError):
                pass
        os.abort()


if __name__ == "__main__":
    unittest.main()
