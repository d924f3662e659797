#!/usr/bin/env bash
# Installs the Node.js test peers (@grpc/grpc-js, ws; exact versions in
# tests/peers/package-lock.json) into tests/peers/node_modules with `npm ci`.
# Idempotent: exits 0 quietly when node_modules is there and newer than the
# lockfile. Safe to run from several tests at once (they take turns).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stamp=$here/node_modules/.legate-installed

up_to_date() {
  [ -f "$stamp" ] && [ ! "$here/package-lock.json" -nt "$stamp" ] && [ ! "$here/package.json" -nt "$stamp" ]
}
up_to_date && exit 0

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tests/peers/install.sh: node and npm are needed for the gRPC and WebSocket test peers" \
       "(Debian: apt-get install nodejs npm)" >&2
  exit 1
fi

# One install at a time (ctest runs tests in parallel); the loser finds it done.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/legate-peers-install.$(id -u).lock"
  flock 9
  up_to_date && exit 0
fi

echo "tests/peers/install.sh: npm ci in $here" >&2
log=$(mktemp)
if ! (cd "$here" && npm ci --no-audit --no-fund >"$log" 2>&1); then
  cat "$log" >&2
  rm -f "$log"
  echo "tests/peers/install.sh: npm ci failed" >&2
  exit 1
fi
rm -f "$log"
touch "$stamp"
