#!/usr/bin/env bash
# Makes sure an unmodified buildbot (master package, which ships the
# `buildbot sendchange` and `buildbot try` clients) from PyPI is installed for
# the compatibility tests, in a virtual environment cached outside the clone.
# Prints the path of its `buildbot` executable.
set -euo pipefail
version="${BUILDBOT_VERSION:-4.3.0}"
root="${CASCADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade}"
venv="$root/buildbot-$version"
if [ ! -x "$venv/bin/buildbot" ] || ! "$venv/bin/python" -c "import buildbot.scripts.runner" 2>/dev/null; then
  rm -rf "$venv"
  mkdir -p "$root"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "buildbot==$version" >&2
fi
echo "$venv/bin/buildbot"
