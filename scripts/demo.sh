#!/usr/bin/env bash
# The main job. For now: check every shipped example bootstrap, and show a
# broken one being rejected with the field at fault.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
legate="$build/dataplane/legate"
fail=0
for f in docs/examples/*.yaml docs/examples/*.json; do
  if "$legate" --mode validate -c "$f"; then :; else fail=1; fi
done
bad=tests/fixtures/bootstrap-bad/bad-duration.yaml
echo "-- a broken bootstrap is rejected with the path of the bad field:"
if "$legate" --mode validate -c "$bad"; then
  echo "demo: $bad was accepted" >&2; fail=1
fi
exit $fail
