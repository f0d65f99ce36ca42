#!/usr/bin/env bash
# Makes sure Debian's ngircd (an IRC server) is installed for the IRC
# reporter's tests. Prints its path.
set -euo pipefail
if ! command -v ngircd >/dev/null && [ ! -x /usr/sbin/ngircd ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends ngircd >&2
  # The package starts a system-wide server; the tests run their own.
  (systemctl stop ngircd || service ngircd stop || pkill -x ngircd) >/dev/null 2>&1 || true
fi
command -v ngircd || echo /usr/sbin/ngircd
