#!/usr/bin/env bash
# The README's main job (scripts/demo.sh) runs and proves every step.
source "$(dirname "$0")/lib.sh"
out=$(bash "$SRC/scripts/demo.sh" "$BIN/.." 2>&1); rc=$?
expect_eq "the demo exits 0" "0" "$rc"
expect_eq "the demo proves its 6 claims" "6" "$(grep -c 'PROVED' <<<"$out")"
check "the demo reports no failed step" bash -c "! grep -q 'NOT PROVED' <<<\"\$1\"" _ "$out"
check "the demo leaves nothing running" bash -c "! pgrep -f 'legate-demo\.' >/dev/null"
[ "$FAIL" -eq 0 ] || echo "$out"
finish
