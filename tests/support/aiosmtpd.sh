#!/usr/bin/env bash
# Makes sure aiosmtpd (a real SMTP server) from PyPI is installed for the
# mail reporter's tests, in a virtual environment cached outside the clone.
# Prints the path of that environment's python.
set -euo pipefail
version="${AIOSMTPD_VERSION:-1.4.6}"
root="${CASCADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade}"
venv="$root/aiosmtpd-$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import aiosmtpd" 2>/dev/null; then
  rm -rf "$venv"
  mkdir -p "$root"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$version" >&2
fi
echo "$venv/bin/python"
