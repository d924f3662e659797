#!/usr/bin/env bash
# Runs the libFuzzer targets of a LEGATE_FUZZ=ON build, one at a time: for
# each, first its whole corpus as regression inputs (every file once), then
# fuzzing for a bounded time, starting from a scratch copy of the corpus (the
# committed corpus never grows by itself). Fails on any crash, leak, timeout
# or out-of-memory, and says where the input that caused it is.
#   tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET]    (default 20)
# FUZZ_TARGETS="http1 h2" runs some targets only; FUZZ_KEEP=1 keeps the
# scratch directory (corpora grown by the run, logs) even when all passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET]}" && pwd) || exit 2
secs=${2:-20}
targets=${FUZZ_TARGETS:-http1 h2 convert xds xfcc}

max_len() {
  case $1 in
    http1 | h2) echo 8192 ;;
    convert) echo 16384 ;;
    xds) echo 32768 ;;
    *) echo 8192 ;;
  esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/legate-fuzz.XXXXXX")
passed=0
failed=0
start=$SECONDS

# Reports a failed target: the log's end, the input, how to reproduce it.
report() { # report TARGET LOG INPUT
  local t=$1 log=$2 input=$3
  echo "FAIL fuzz_$t"
  grep -E "ERROR|SUMMARY|fuzz_[a-z0-9]+:|==[0-9]+==|#[0-9]+ 0x" "$log" | head -40 | sed 's/^/    /'
  echo "    full log: $log"
  if [ -n "$input" ]; then
    echo "    input: $input"
    echo "    reproduce: $build/tests/fuzz/fuzz_$t $input"
    echo "    once fixed, keep it: cp $input $here/corpus/$t/regress-<what-it-was>"
  fi
}

for t in $targets; do
  bin=$build/tests/fuzz/fuzz_$t
  echo "== fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "FAIL fuzz_$t: $bin is missing (configure with CC=clang-14 -DLEGATE_FUZZ=ON)"
    failed=$((failed + 1))
    continue
  fi
  t0=$SECONDS

  # 1. Every corpus file once. The xDS seeds carry private keys: they are
  # made now, with a fresh PKI, next to the committed regression inputs.
  log=$work/$t-corpus.log
  files=()
  [ -d "$here/corpus/$t" ] && files=("$here/corpus/$t"/*)
  if [ "$t" = xds ]; then
    if ! "$here/make-seeds.sh" "$build" xds "$work/xds-seeds" >"$work/xds-seeds.log" 2>&1; then
      echo "FAIL fuzz_xds: making the seeds failed:"; tail -5 "$work/xds-seeds.log"
      failed=$((failed + 1))
      continue
    fi
    files+=("$work/xds-seeds"/*)
  fi
  if ! (cd "$work" && "$bin" -timeout=30 -rss_limit_mb=2048 "${files[@]}") >"$log" 2>&1; then
    input=$(grep -o "^Running: .*" "$log" | tail -1 | cut -d' ' -f2-)
    report "$t" "$log" "$input"
    failed=$((failed + 1))
    continue
  fi

  # 2. Fuzzing, bounded.
  mkdir -p "$work/$t-corpus" "$work/$t-run"
  cp "${files[@]}" "$work/$t-corpus/"
  dict=()
  [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  (cd "$work/$t-run" && "$bin" -max_total_time="$secs" -jobs=1 -workers=1 -timeout=10 -rss_limit_mb=2048 \
     -max_len="$(max_len "$t")" "${dict[@]}" -artifact_prefix="$work/$t-" -print_final_stats=1 \
     "$work/$t-corpus") >"$work/$t-jobs.log" 2>&1
  rc=$?
  log=$work/$t-run/fuzz-0.log
  [ -f "$log" ] || log=$work/$t-jobs.log
  input=$(ls "$work/$t-"{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null | head -1)
  if [ $rc -ne 0 ] || [ -n "$input" ]; then
    report "$t" "$log" "$input"
    failed=$((failed + 1))
    continue
  fi
  runs=$(grep -o "stat::number_of_executed_units: [0-9]*" "$log" | awk '{print $2}')
  cov=$(grep -o "cov: [0-9]*" "$log" | tail -1 | awk '{print $2}')
  n=$(ls "$work/$t-corpus" | wc -l)
  echo "ok   fuzz_$t: ${#files[@]} corpus files, then ${runs:-?} runs in ${secs}s" \
       "($(( ${runs:-0} / (secs > 0 ? secs : 1) )) exec/s), coverage ${cov:-?}, corpus ${#files[@]} -> $n" \
       "($((SECONDS - t0))s)"
  passed=$((passed + 1))
done

if [ $failed -eq 0 ] && [ -z "${FUZZ_KEEP:-}" ]; then
  rm -rf "$work"
else
  echo "scratch directory kept: $work"
fi
echo "fuzzing took $((SECONDS - start))s"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
