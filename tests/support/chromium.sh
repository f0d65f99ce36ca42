#!/usr/bin/env bash
# Makes sure Debian's Chromium and ChromeDriver are installed for the browser
# tests, from Debian's packages. Prints the chromedriver path.
set -euo pipefail
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
command -v chromedriver
