# Shared helpers for integration tests. Source it; it sets up a private work
# dir, counts checks, and cleans up processes on exit.
set -uo pipefail
BIN=${1:?usage: test.sh BUILD_BIN_DIR SOURCE_DIR}
SRC=${2:?usage: test.sh BUILD_BIN_DIR SOURCE_DIR}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/legate-test.XXXXXX")
PASS=0
FAIL=0
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ "$FAIL" -eq 0 ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
not_ok() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
  if [ "$2" == "$3" ]; then ok "$1"; else not_ok "$1"; echo "     expected: $2"; echo "     actual:   $3"; fi
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
