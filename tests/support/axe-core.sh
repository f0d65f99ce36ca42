#!/usr/bin/env bash
# Makes sure axe-core (Deque's accessibility checker) from the npm registry
# is installed for the browser tests, in a folder cached outside the clone.
# Prints the path of its axe.min.js, which the tests inject into each page.
set -euo pipefail
version="${AXE_CORE_VERSION:-4.10.3}"
root="${CASCADE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cascade}"
dir="$root/axe-core-$version"
script="$dir/node_modules/axe-core/axe.min.js"
if [ ! -s "$script" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "axe-core@$version" >&2
fi
echo "$script"
