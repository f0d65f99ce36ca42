#!/usr/bin/env bash
# Makes sure Debian's InspIRCd (an IRC server) and Anope (IRC services, the
# accounts SASL logs in to) are installed for the IRC reporter's TLS and
# SASL test. Prints the path of inspircd, then of anope.
set -euo pipefail
missing() { ! command -v "$1" >/dev/null && [ ! -x "/usr/sbin/$1" ]; }
if missing inspircd || missing anope; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends inspircd anope >&2
  # The packages start system-wide servers; the tests run their own.
  for s in inspircd anope; do
    (systemctl stop "$s" || service "$s" stop || pkill -x "$s") >/dev/null 2>&1 || true
  done
fi
command -v inspircd || echo /usr/sbin/inspircd
command -v anope || echo /usr/sbin/anope
