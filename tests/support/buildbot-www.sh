#!/usr/bin/env bash
# Makes sure Buildbot's own web UI (buildbot-www with the console, waterfall
# and grid view plugins) from PyPI is installed for the browser tests of
# `[www] buildbot_ui`, in a virtual environment cached outside the clone.
# Prints the folder of the installed static bundle (the one holding
# index.html); the plugins' bundles sit beside it in site-packages.
set -euo pipefail
version="${BUILDBOT_WWW_VERSION:-4.3.0}"
root="${CASCADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade}"
venv="$root/buildbot-www-$version"
static() {
  "$venv/bin/python" - <<'PY'
import os, buildbot_www, buildbot_console_view, buildbot_waterfall_view, buildbot_grid_view
print(os.path.join(os.path.dirname(buildbot_www.__file__), "static"))
PY
}
if ! dir="$(static 2>/dev/null)" || [ ! -f "$dir/index.html" ]; then
  rm -rf "$venv"
  mkdir -p "$root"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "buildbot-www==$version" "buildbot-console-view==$version" \
    "buildbot-waterfall-view==$version" "buildbot-grid-view==$version" >&2
  dir="$(static)"
fi
echo "$dir"
