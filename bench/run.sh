#!/usr/bin/env bash
# legate against nginx and HAProxy doing the same job on this machine.
#
#   bench/run.sh [--smoke] [-d SECONDS] [-r ROUNDS] [-s 0,1,2,3,4,5,6,7,8] [--idle N] [--clusters N]
#                [--baseline PATH]
#
# Builds what it needs (legate, legate-control, legate-load), starts every
# party on 127.0.0.1 — the proxy pinned to CPU 0, the load generator and the
# upstream to CPU 1 — runs each scenario for a bounded time, stops
# everything and prints a table of absolute figures and legate/peer ratios.
# Every proxy runs one worker. docs/benchmarks.md explains the scenarios and
# how to read the table. Scenarios 1-4 and 8 run ROUNDS rounds (default 3),
# the proxies taking turns, and report each figure's median, so that a VM's
# drift over minutes does not favour whoever ran first. Scenario 8 (unary
# gRPC over h2c, h2load against nghttpd) first checks that each proxy
# returns the upstream's grpc-status trailer; a proxy that does not is not
# timed and its row says INVALID. Scenario 0 first checks the load
# generator against wrk and h2load (bench/validate.sh). --smoke runs
# everything briefly and small, to prove that the bench works (CI does),
# not to measure. --baseline PATH adds another legate binary (say, main's
# before a change, built elsewhere) to scenarios 1-4 and 8 as "legate-base",
# taking turns with the others, and prints legate/legate-base ratios: a
# regression check side by side in one run.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${LEGATE_BUILD_DIR:-$SRC/build}
DUR=10
ROUNDS=3
SCEN="0,1,2,3,4,5,6,7,8"
IDLE=10000
CLUSTERS=10000
SMOKE=0
BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    -d) DUR=$2; shift ;;
    -r) ROUNDS=$2; shift ;;
    -s) SCEN=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --clusters) CLUSTERS=$2; shift ;;
    --baseline) BASELINE=$(realpath "$2"); shift ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ $SMOKE = 1 ]; then DUR=1; ROUNDS=1; IDLE=300; CLUSTERS=500; SCEN=${SCEN/0,/}; fi
want() { [[ ",$SCEN," == *",$1,"* ]]; }
if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then echo "bench: --baseline $BASELINE is not an executable" >&2; exit 2; fi
# Who takes turns in scenarios 1-4 and 8.
TIMED=(legate); [ -n "$BASELINE" ] && TIMED+=(legate-base); TIMED+=(nginx haproxy)

# ---- build and tools ------------------------------------------------------------
"$SRC/scripts/install-deps.sh" || exit 1
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
cmake --build "$BUILD" -j "$(nproc)" --target legate legate-control legate-load >"$BUILD/bench-build.log" 2>&1 ||
  { cat "$BUILD/bench-build.log"; exit 1; }
LEGATE=$BUILD/dataplane/legate
CONTROL=$BUILD/control-sample/legate-control
LOAD=$BUILD/bench/legate-load
PATH=$PATH:/usr/sbin
for t in nginx haproxy openssl python3 curl; do
  command -v $t >/dev/null || { echo "bench: $t is missing (scripts/packages.txt lists it)" >&2; exit 1; }
done
if want 8 && ! command -v nghttpd >/dev/null; then
  # Scenario 8's upstream; not in scripts/packages.txt (yet), so installed here.
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "bench: installing nghttp2-server (nghttpd, scenario 8's upstream)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nghttp2-server >"$BUILD/bench-apt.log" 2>&1 ||
    { $sudo apt-get update -q >>"$BUILD/bench-apt.log" 2>&1
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nghttp2-server >>"$BUILD/bench-apt.log" 2>&1; }
fi
if want 8; then
  for t in h2load nghttp nghttpd; do
    command -v $t >/dev/null || { echo "bench: $t is missing (scenario 8 needs nghttp2-client and nghttp2-server)" >&2; exit 1; }
  done
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(ulimit -n)" -lt $((IDLE * 2 + 200)) ]; then
  IDLE=$(( ($(ulimit -n) - 200) / 2 ))
  echo "bench: open-file limit $(ulimit -n): scenario 5 uses $IDLE connections"
fi
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=0; LOAD_CPU=1; else PROXY_CPU=0; LOAD_CPU=0; fi
# taskset execs the program: the pid bg records is the program's.
pin_proxy=(taskset -c $PROXY_CPU)
pin_load=(taskset -c $LOAD_CPU)

W=$(mktemp -d /tmp/legate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bg() { # bg NAME CMD...: start in the background, log to $W/NAME.log, pid in LAST
  local name=$1; shift
  "$@" >"$W/$name.log" 2>&1 &
  LAST=$!
  PIDS+=("$LAST")
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  local end=$((SECONDS + ${2:-15}))
  while [ $SECONDS -lt $end ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on $1" >&2
  return 1
}
cpu_ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
fill() { # fill TEMPLATE OUT: @VARS@ from the environment of this script
  sed -e "s|@DIR@|$2.d|g" -e "s|@CERTS@|$W/certs|g" -e "s|@PORT_PLAIN@|$P_PLAIN|g" \
      -e "s|@PORT_MTLS@|$P_MTLS|g" -e "s|@UP_PLAIN@|$U_PLAIN|g" -e "s|@UP_MTLS@|$U_MTLS|g" \
      -e "s|@PORT_GRPC@|$P_GRPC|g" -e "s|@UP_GRPC@|$U_GRPC|g" -e "s|@ADMIN@|$P_ADMIN|g" -e "s|@MAXCONN@|$(( ($(ulimit -n) - 100) / 2 ))|g" "$1" > "$2"
  mkdir -p "$2.d"
}

# ---- parties ----------------------------------------------------------------------
"$SRC/scripts/gen-certs.sh" "$W/certs" || exit 1
cat "$W/certs/server.pem" "$W/certs/server.key" > "$W/certs/server-bundle.pem"
cat "$W/certs/upstream-client.pem" "$W/certs/upstream-client.key" > "$W/certs/upstream-client-bundle.pem"
P_PLAIN=$(port); P_MTLS=$(port); U_PLAIN=$(port); U_MTLS=$(port); P_ADMIN=$(port); P_GRPC=$(port); U_GRPC=$(port)
fill "$SRC/bench/peers/upstream.conf.in" "$W/upstream.conf"
bg upstream "${pin_load[@]}" nginx -c "$W/upstream.conf"
wait_port "$U_PLAIN" || exit 1
CLIENT=(--cert "$W/certs/client.pem" --key "$W/certs/client.key" --cacert "$W/certs/ca.pem" --sni localhost)

start_proxy() { # start_proxy legate|nginx|haproxy [grpc]: sets PROXY (grpc: the peers/*-grpc.* configs)
  local v=${2:+-$2}
  case "$1" in
    legate)
      fill "$SRC/bench/peers/legate$v.yaml.in" "$W/legate$v.yaml"
      bg legate$v "${pin_proxy[@]}" "$LEGATE" -c "$W/legate$v.yaml" --concurrency 1 -l warning ;;
    legate-base)
      fill "$SRC/bench/peers/legate$v.yaml.in" "$W/legate$v.yaml"
      bg legate-base$v "${pin_proxy[@]}" "$BASELINE" -c "$W/legate$v.yaml" --concurrency 1 -l warning ;;
    nginx)
      fill "$SRC/bench/peers/nginx$v.conf.in" "$W/nginx$v.conf"
      bg nginx$v "${pin_proxy[@]}" nginx -c "$W/nginx$v.conf" ;;
    haproxy)
      fill "$SRC/bench/peers/haproxy$v.cfg.in" "$W/haproxy$v.cfg"
      bg haproxy$v "${pin_proxy[@]}" haproxy -f "$W/haproxy$v.cfg" ;;
  esac
  PROXY=$LAST
  if [ -n "$v" ]; then wait_port "$P_GRPC"; else wait_port "$P_PLAIN" && wait_port "$P_MTLS"; fi
}

# Ticks the hypervisor gave other guests while the proxy's CPU wanted to
# run ("steal"): on a VM, the noise behind run-to-run differences.
steal_ticks() { awk -v c="cpu$PROXY_CPU" '$1 == c { print $9 }' /proc/stat; }
steal_since() { # steal_since STEAL0 WALL0_NS: sets R_steal (% of the wall time) and records it
  R_steal=$(awk -v s=$(( $(steal_ticks) - $1 )) -v hz="$HZ" -v ns=$(( $(date +%s%N) - $2 )) \
    'BEGIN { printf "%.1f", (ns > 0 ? s / hz * 1e11 / ns : 0) }')
  STEALS+=("$R_steal")
}
STEALS=()
# load PROXY_PID LOADGEN_ARGS...: runs the load generator and sets R_* from its
# RESULT line, plus R_cpu (proxy CPU µs per request over the run).
load() {
  local pid=$1; shift
  local t0 t1 out s0 w0
  t0=$(cpu_ticks "$pid"); s0=$(steal_ticks); w0=$(date +%s%N)
  out=$("${pin_load[@]}" "$LOAD" -w 0 -d "$DUR" "$@" 2>&1 | tail -n 1)
  t1=$(cpu_ticks "$pid")
  steal_since "$s0" "$w0"
  if [[ "$out" != RESULT* ]]; then
    echo "bench: the load generator failed: $out" >&2
    R_rps=0 R_requests=0 R_errors=1 R_p50_us=0 R_p99_us=0 R_cpu=0
    return 1
  fi
  local kv
  for kv in ${out#RESULT }; do printf -v "R_${kv%%=*}" %s "${kv#*=}"; done
  R_cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$R_requests" 'BEGIN { printf "%.1f", (n ? t * 1e6 / hz / n : 0) }')
}

# Scenario 8: unary gRPC calls over h2c. GRPC_ARGS are h2load's request
# (POST, gRPC headers, a gRPC-framed body) and GRPC_URL its target.
GRPC_PATH=/legate.test.Echo/Unary
GRPC_URL=http://127.0.0.1:$P_GRPC$GRPC_PATH
GRPC_ARGS=(-d "$W/grpc-request.bin" -H 'content-type: application/grpc' -H 'te: trailers')
# load_h2 PROXY_PID H2LOAD_ARGS...: as load, with h2load for DUR seconds;
# calls are 2xx responses, p50/p99 come from h2load's per-request log.
load_h2() {
  local pid=$1; shift
  local t0 t1 out s0 w0 secs n2xx ndone
  rm -f "$W/h2load.tsv"
  t0=$(cpu_ticks "$pid"); s0=$(steal_ticks); w0=$(date +%s%N)
  out=$("${pin_load[@]}" h2load -D "$DUR" --log-file="$W/h2load.tsv" "$@" 2>&1)
  t1=$(cpu_ticks "$pid")
  steal_since "$s0" "$w0"
  secs=$(sed -n 's/^finished in \([0-9.]*\)s,.*/\1/p' <<<"$out")
  n2xx=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
  ndone=$(sed -n 's/^requests: .* \([0-9]*\) done,.*/\1/p' <<<"$out")
  if [ -z "$secs" ] || [ -z "$n2xx" ] || [ -z "$ndone" ]; then
    echo "bench: h2load failed: $(tail -n 3 <<<"$out")" >&2
    R_rps=0 R_requests=0 R_errors=1 R_p50_us=0 R_p99_us=0 R_cpu=0
    return 1
  fi
  R_requests=$n2xx
  R_errors=$(( ndone - n2xx ))
  R_rps=$(awk -v n="$n2xx" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  read -r R_p50_us R_p99_us < <(cut -f3 "$W/h2load.tsv" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) print v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1]; else print 0, 0 }')
  R_cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$R_requests" 'BEGIN { printf "%.1f", (n ? t * 1e6 / hz / n : 0) }')
}
# grpc_check PROXY: one call through the proxy (nghttp -v) must come back
# with :status 200, the upstream's body and then a grpc-status: 0 trailer
# (a HEADERS frame after the DATA). Prints FAIL once per proxy otherwise.
declare -A GRPC_FAIL
grpc_check() {
  local why
  timeout 10 "${pin_load[@]}" nghttp -v -n -d "$W/grpc-request.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "$GRPC_URL" > "$W/grpc-check-$1.log" 2>&1
  why=$(awk -v len="$(stat -c %s "$W/grpc/htdocs$GRPC_PATH")" '
    /recv \(stream_id=[0-9]+\) :status: 200$/ { ok = 1 }
    /recv DATA frame <length=/ { d = 1; sub(/.*<length=/, ""); sub(/,.*/, ""); body += $0 }
    d && /recv \(stream_id=[0-9]+\) grpc-status: 0$/ { t = 1 }
    END {
      if (!ok) print "no :status 200"
      else if (body != len) print "body of " body " bytes, not the upstream'"'"'s " len
      else if (!t) print "no grpc-status trailer"
    }' "$W/grpc-check-$1.log")
  [ -z "$why" ] && return 0
  [ -n "${GRPC_FAIL[$1]:-}" ] || echo "FAIL $1: $why"
  GRPC_FAIL[$1]=$why
  return 1
}

ROWS=()
row() { ROWS+=("$(printf '%-34s %-11s %10s %9s %9s %11s %7s %7s' "$@")"); }
declare -A RPS CPU P99 RSS
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# measure SCENARIO LABEL LOADGEN_ARGS... (against each proxy, ROUNDS times,
# taking turns). Scenario 8 sets M_FLAVOUR=grpc (start_proxy's configs),
# M_LOAD=load_h2 and M_CHECK=grpc_check: a proxy that fails the check is
# not timed, and its row says INVALID.
M_FLAVOUR="" M_LOAD=load M_CHECK=""
declare -A INVALID
measure() {
  local sc=$1 label=$2; shift 2
  local px r
  declare -A rps p50 p99 cpu err failed stl
  for r in $(seq 1 "$ROUNDS"); do
    for px in "${TIMED[@]}"; do
      start_proxy $px $M_FLAVOUR || { failed[$px]=1; stop "$PROXY"; continue; }
      if [ -n "$M_CHECK" ] && ! $M_CHECK $px; then INVALID[$sc.$px]=1; stop "$PROXY"; continue; fi
      $M_LOAD "$PROXY" "$@"
      stop "$PROXY"
      rps[$px]+=" $R_rps"; p50[$px]+=" $R_p50_us"; p99[$px]+=" $R_p99_us"; cpu[$px]+=" $R_cpu"
      stl[$px]+=" $R_steal"
      err[$px]=$(( ${err[$px]:-0} + R_errors ))
    done
  done
  for px in "${TIMED[@]}"; do
    if [ -n "${INVALID[$sc.$px]:-}" ]; then
      row "$label" $px "-" "-" "-" "-" "INVALID: ${GRPC_FAIL[$px]:-failed its check}"; continue
    fi
    if [ -z "${rps[$px]:-}" ]; then row "$label" $px "-" "-" "-" "-" "start failed"; continue; fi
    RPS[$sc.$px]=$(median <<<"${rps[$px]}"); CPU[$sc.$px]=$(median <<<"${cpu[$px]}")
    P99[$sc.$px]=$(median <<<"${p99[$px]}")
    row "$label" $px "$(printf %.0f "${RPS[$sc.$px]}")" "$(printf %.0f "$(median <<<"${p50[$px]}")")" \
      "$(printf %.0f "${P99[$sc.$px]}")" "${CPU[$sc.$px]}" "${err[$px]}$([ -n "${failed[$px]:-}" ] && echo '+start failed')" \
      "$(median <<<"${stl[$px]}")"
  done
}

echo "bench: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $DUR s per run, scenarios 1-4 and 8: median of $ROUNDS round(s)$([ $SMOKE = 1 ] && echo ', smoke mode')"
echo "bench: $("$LEGATE" --version 2>&1 | head -1); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(openssl version)"

# (0) The load generator measures what wrk and h2load measure.
VALIDATION=()
if want 0; then
  LEGATE_LOAD=$LOAD bash "$SRC/bench/validate.sh" 5 > "$W/validate.log" 2>&1
  mapfile -t VALIDATION < <(grep -E ' rps \(|within 10%|^validate:' "$W/validate.log")
fi

want 1 && measure 1 "(1) h1 keep-alive x50, mTLS->plain" -p h1 -c 50 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
want 2 && measure 2 "(2) h2 10 conns x 10 streams" -p h2 -c 10 -m 10 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
want 3 && measure 3 "(3) h1 keep-alive x50, mTLS->mTLS" -p h1 -c 50 "${CLIENT[@]}" "https://127.0.0.1:$P_MTLS/"
want 4 && measure 4 "(4) full mTLS handshake per request" -p h1 -c 32 --new-conn "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"

# (5) RSS per idle established mTLS connection.
if want 5; then
  for px in legate nginx haproxy; do
    start_proxy $px || continue
    "${pin_load[@]}" "$LOAD" -w 0 -d 0.3 -c 2 -p h1 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/" >/dev/null 2>&1
    base=$(rss_kib "$PROXY")
    # One log per proxy, made before the holder starts: bg's redirection
    # runs in the child, so a shared log could still hold the previous
    # proxy's HOLDING line when it is first read.
    : > "$W/hold-$px.log"
    bg hold-$px "${pin_load[@]}" "$LOAD" --hold 30 -c "$IDLE" -p h1 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
    holder=$LAST
    end=$((SECONDS + 120))
    until grep -q '^HOLDING' "$W/hold-$px.log" || [ $SECONDS -gt $end ] || ! kill -0 $holder 2>/dev/null; do sleep 0.2; done
    n=$(sed -n 's/^HOLDING n=\([0-9]*\).*/\1/p' "$W/hold-$px.log")
    sleep 1
    now=$(rss_kib "$PROXY")
    stop $holder
    stop "$PROXY"
    if [ -n "$n" ] && [ "$n" -gt 0 ]; then
      per=$(awk -v a="$now" -v b="$base" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }')
      RSS[$px]=$per
      row "(5) RSS per idle mTLS conn (KiB)" $px "$n conns" "-" "-" "$per KiB" "-"
    else
      row "(5) RSS per idle mTLS conn (KiB)" $px "-" "-" "-" "-" "failed"
      echo "bench: (5) $px: the load generator held no connections:" >&2
      tail -n 5 "$W/hold-$px.log" >&2
    fi
  done
fi

# (6) xDS scale: CLUSTERS EDS clusters from legate-control.
if want 6; then
  P_CP=$(port); P_API=$(port); P_DADMIN=$(port)
  python3 - "$CLUSTERS" "$U_PLAIN" > "$W/scale.yaml" <<'PY'
import sys
n, port = int(sys.argv[1]), int(sys.argv[2])
print("clusters:")
for i in range(n):
    print(f"- {{ name: c{i}, type: EDS, connect_timeout: 1s, eds_cluster_config: {{ eds_config: {{ ads: {{}}, resource_api_version: V3 }} }} }}")
print("endpoints:")
for i in range(n):
    print(f"- {{ cluster_name: c{i}, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }} ] }} ] }}")
PY
  sed -e "s/port_value: 9901/port_value: $P_DADMIN/" -e "s/port_value: 18000/port_value: $P_CP/" \
    "$SRC/docs/examples/ads.yaml" > "$W/scale-bootstrap.yaml"
  bg control "${pin_load[@]}" "$CONTROL" -c "$W/scale.yaml" --listen "127.0.0.1:$P_CP" --admin-listen "127.0.0.1:$P_API" -l warning
  cp=$LAST
  wait_port "$P_CP"
  t0=$(date +%s%N)
  bg scale "${pin_proxy[@]}" "$LEGATE" -c "$W/scale-bootstrap.yaml" --concurrency 1 -l info
  lg=$LAST
  end=$((SECONDS + 120))
  until [ "$(curl -s "http://127.0.0.1:$P_DADMIN/ready")" = LIVE ] || [ $SECONDS -gt $end ]; do sleep 0.01; done
  t1=$(date +%s%N)
  applied=$(grep -o 'applied (.*) in [0-9.]* ms' "$W/scale.log" | awk '{ s += $(NF-1) } END { printf "%.0f", s }')
  row "(6) $CLUSTERS clusters: start->ready ms" legate "$(( (t1 - t0) / 1000000 ))" "-" "-" "-" "-"
  row "(6) ... of which applying (ms)" legate "$applied" "-" "-" "-" "-"
  SCALE_ALL=$(( (t1 - t0) / 1000000 ))
  v0=$(curl -s "http://127.0.0.1:$P_DADMIN/stats" | awk '/^cluster_manager.cds.update_success:/ { print $2 }')
  t0=$(date +%s%N)
  curl -s -o /dev/null -X PUT "http://127.0.0.1:$P_API/clusters/c7" \
    -d '{"name":"c7","type":"EDS","connect_timeout":"2s","eds_cluster_config":{"eds_config":{"ads":{},"resource_api_version":"V3"}}}'
  end=$((SECONDS + 30))
  until [ "$(curl -s "http://127.0.0.1:$P_DADMIN/stats" | awk '/^cluster_manager.cds.update_success:/ { print $2 }')" != "$v0" ] ||
        [ $SECONDS -gt $end ]; do sleep 0.005; done
  t1=$(date +%s%N)
  one=$(grep -o 'CDS version [^ ]* applied (.*) in [0-9.]* ms' "$W/scale.log" | tail -n 1 | awk '{ print $(NF-1) }')
  row "(6) one changed: API PUT->applied ms" legate "$(( (t1 - t0) / 1000000 ))" "-" "-" "-" "-"
  row "(6) ... legate's apply time (ms)" legate "${one:-?}" "-" "-" "-" "-"
  row "(6) legate RSS with $CLUSTERS clusters" legate "$(( $(rss_kib $lg) / 1024 )) MiB" "-" "-" "-" "-"
  SCALE_ONE=$one
  stop $lg; stop $cp
fi

# (7) a secret rotation every second during (1), over xDS.
if want 7; then
  P_CP=$(port); P_API=$(port); P_DADMIN=$(port)
  sed -e "s|certs/|$W/certs/|g" -e "s/port_value: 10443/port_value: $P_PLAIN/" \
      -e "s/port_value: 10444/port_value: $U_PLAIN/" "$SRC/control-sample/examples/demo.yaml" |
    python3 -c '
import sys
# The bench upstream is plaintext: drop the cluster transport socket.
out, skip = [], False
for line in sys.stdin:
    if line.startswith("  transport_socket:") : skip = True; continue
    if skip and (line.startswith("    ") or line.strip() == ""): continue
    skip = False; out.append(line)
sys.stdout.write("".join(out))' > "$W/rot.yaml"
  sed -e "s/port_value: 9901/port_value: $P_DADMIN/" -e "s/port_value: 18000/port_value: $P_CP/" \
    "$SRC/docs/examples/ads.yaml" > "$W/rot-bootstrap.yaml"
  bg control "${pin_load[@]}" "$CONTROL" -c "$W/rot.yaml" --listen "127.0.0.1:$P_CP" --admin-listen "127.0.0.1:$P_API" -l warning
  cp=$LAST
  wait_port "$P_CP"
  bg rot "${pin_proxy[@]}" "$LEGATE" -c "$W/rot-bootstrap.yaml" --concurrency 1 -l warning
  lg=$LAST
  wait_port "$P_PLAIN" 30
  # A second, distinct server certificate from the same CA.
  (cd "$W/certs" && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout s2.key -out s2.csr \
     -subj "/O=legate test/CN=localhost" 2>/dev/null &&
   printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > s2.ext &&
   openssl x509 -req -in s2.csr -CA ca.pem -CAkey ca.key -set_serial 77 -days 30 -extfile s2.ext -out s2.pem 2>/dev/null)
  for i in 0 1; do
    c=$W/certs/server; [ $i = 1 ] && c=$W/certs/s2
    python3 -c '
import json, sys
json.dump({"cert": open(sys.argv[1] + ".pem").read(), "key": open(sys.argv[1] + ".key").read()}, open(sys.argv[2], "w"))' \
      "$c" "$W/secret$i"
  done
  # Without rotation before and after the run with it: the dip is measured
  # against their mean, so that drift over the three runs cancels out.
  load "$lg" -p h1 -c 50 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
  base1=("$R_rps" "$R_p50_us" "$R_p99_us" "$R_cpu" "$R_errors" "$R_steal")
  ( i=0; while :; do
      "${pin_load[@]}" curl -s -o /dev/null -X PUT "http://127.0.0.1:$P_API/secrets/server-cert" \
        --data-binary "@$W/secret$((i % 2))"
      i=$((i + 1)); sleep 1
    done ) &
  rotator=$!
  PIDS+=("$rotator")
  load "$lg" -p h1 -c 50 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
  stop $rotator
  rot=("$R_rps" "$R_p50_us" "$R_p99_us" "$R_cpu" "$R_errors" "$R_steal")
  rotations=$(curl -s "http://127.0.0.1:$P_DADMIN/stats" | awk '/^sds.server-cert.update_success:/ { print $2 }')
  load "$lg" -p h1 -c 50 "${CLIENT[@]}" "https://127.0.0.1:$P_PLAIN/"
  mean() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { printf f, (a + b) / 2 }'; }
  base=$(mean "${base1[0]}" "$R_rps" %.0f)
  row "(7) xDS config, no rotation (mean)" legate "$base" "$(mean "${base1[1]}" "$R_p50_us" %.0f)" \
    "$(mean "${base1[2]}" "$R_p99_us" %.0f)" "$(mean "${base1[3]}" "$R_cpu" %.1f)" "$(( ${base1[4]} + R_errors ))" \
    "$(mean "${base1[5]}" "$R_steal" %.1f)"
  row "(7) rotation every 1 s" legate "$(printf %.0f "${rot[0]}")" "${rot[1]}" "${rot[2]}" "${rot[3]}" "${rot[4]}" "${rot[5]}"
  DIP=$(awk -v a="$base" -v b="${rot[0]}" 'BEGIN { printf "%.1f", (a > 0 ? (a - b) * 100 / a : 0) }')
  ROT_ERR=${rot[4]}
  row "(7) rps dip, rotations applied" legate "$DIP %" "-" "-" "-" "${rotations:-0}"
  stop $lg; stop $cp
fi

# (8) unary gRPC calls over h2c: h2load -> proxy -> nghttpd, which answers
# every call with the same gRPC-framed message and a grpc-status: 0 trailer.
if want 8; then
  mkdir -p "$W/grpc/htdocs${GRPC_PATH%/*}"
  # An Echo message (field 1, a string) in a gRPC frame: flag 0, 4-byte length.
  printf '\0\0\0\0\015\n\013hello world' > "$W/grpc-request.bin"
  printf '\0\0\0\0\015\n\013hello world' > "$W/grpc/htdocs$GRPC_PATH"
  bg nghttpd "${pin_load[@]}" nghttpd --no-tls -a 127.0.0.1 -d "$W/grpc/htdocs" -m 1000 \
    --trailer 'grpc-status: 0' "$U_GRPC"
  up=$LAST
  if wait_port "$U_GRPC"; then
    M_FLAVOUR=grpc M_LOAD=load_h2 M_CHECK=grpc_check
    measure 8 "(8) gRPC unary h2c 10 x 10" -c 10 -m 10 "${GRPC_ARGS[@]}" "$GRPC_URL"
    M_FLAVOUR="" M_LOAD=load M_CHECK=""
  else
    for px in legate nginx haproxy; do row "(8) gRPC unary h2c 10 x 10" $px "-" "-" "-" "-" "no upstream"; done
  fi
  stop $up
fi

# Crypto bound for (4): per server-side full TLS 1.3 mTLS handshake, one
# ECDSA sign, two verifies (the client's CertificateVerify and its
# certificate) and two ECDH operations (key share and shared secret).
if want 4; then
  secs=$([ $SMOKE = 1 ] && echo 1 || echo 3)
  sp=$(openssl speed -seconds "$secs" ecdsap256 ecdhp256 2>/dev/null)
  sign=$(awk '/256 bits ecdsa \(nistp256\)/ { print $(NF-1) }' <<<"$sp")
  verify=$(awk '/256 bits ecdsa \(nistp256\)/ { print $NF }' <<<"$sp")
  ecdh=$(awk '/256 bits ecdh \(nistp256\)/ { print $NF }' <<<"$sp")
  bound=$(awk -v s="$sign" -v v="$verify" -v e="$ecdh" 'BEGIN { if (s && v && e) printf "%.0f", 1 / (1/s + 2/v + 2/e) }')
  row "(4) crypto bound, 1 core (hs/s)" openssl "${bound:-?}" "-" "-" "$(awk -v b="$bound" 'BEGIN { if (b) printf "%.0f", 1e6 / b }')" "-"
fi

if [ ${#VALIDATION[@]} -gt 0 ]; then
  echo
  echo "(0) legate-load against wrk (h1, 50 connections) and h2load (h2, 10 x 10), no client certificate:"
  printf '  %s\n' "${VALIDATION[@]}"
fi
echo
printf '%-34s %-11s %10s %9s %9s %11s %7s %7s\n' scenario proxy "rps" "p50 µs" "p99 µs" "CPU µs/req" errors "steal %"
printf '%s\n' "${ROWS[@]}"
echo
echo "ratios legate/peer (rps: higher is better; CPU per request and p99: lower is better)"
for sc in 1 2 3 4 8; do
  want $sc || continue
  for peer in legate-base nginx haproxy; do
    [ -n "${RPS[$sc.legate]:-}" ] && [ -n "${RPS[$sc.$peer]:-}" ] || continue
    awk -v s="$sc" -v p="$peer" -v r1="${RPS[$sc.legate]}" -v r2="${RPS[$sc.$peer]}" \
        -v c1="${CPU[$sc.legate]}" -v c2="${CPU[$sc.$peer]}" -v l1="${P99[$sc.legate]}" -v l2="${P99[$sc.$peer]}" \
      'BEGIN { printf "  (%s) vs %-11s rps x%.2f   CPU/req x%.2f   p99 x%.2f\n", s, p, (r2 > 0 ? r1 / r2 : 0), (c2 > 0 ? c1 / c2 : 0), (l2 > 0 ? l1 / l2 : 0) }'
  done
done
if want 8; then
  # calls/s x CPU per call: how busy the proxy's CPU was. Well below 100%,
  # the load side (h2load and nghttpd, sharing CPU 1) or another process was the limit.
  busy=""
  for px in legate nginx haproxy; do
    [ -n "${RPS[8.$px]:-}" ] && busy+=$(awk -v p=$px -v r="${RPS[8.$px]}" -v c="${CPU[8.$px]}" 'BEGIN { printf " %s %.0f%%", p, r * c / 1e4 }')
  done
  [ -n "$busy" ] && echo "  (8) the proxy's CPU busy:$busy (well below 100% means that the load side, or something else on the machine, was the limit)"
  if [ -n "${INVALID[8.legate]:-}" ]; then
    echo "  (8) legate is INVALID (${GRPC_FAIL[legate]:-failed its check}): no ratio"
  else
    better=""
    for peer in nginx haproxy; do
      [ -n "${CPU[8.$peer]:-}" ] && [ -z "${INVALID[8.$peer]:-}" ] || continue
      if [ -z "$better" ] || awk -v a="${CPU[8.$peer]}" -v b="${CPU[8.$better]}" 'BEGIN { exit !(a < b) }'; then better=$peer; fi
    done
    [ -n "$better" ] && [ -n "${CPU[8.legate]:-}" ] &&
      awk -v p="$better" -v a="${CPU[8.legate]}" -v b="${CPU[8.$better]}" \
        'BEGIN { r = (b > 0 ? int(a / b * 100 + 0.5) / 100 : 0); printf "  (8) legate CPU per call / the better peer'"'"'s (%s): x%.2f (goal <= x0.60: %s)\n", p, r, (r <= 0.6 ? "met" : "not met") }'
  fi
fi
if want 5; then
  for peer in nginx haproxy; do
    [ -n "${RSS[legate]:-}" ] && [ -n "${RSS[$peer]:-}" ] &&
      awk -v p="$peer" -v a="${RSS[legate]}" -v b="${RSS[$peer]}" \
        'BEGIN { printf "  (5) vs %-8s RSS per idle connection x%.2f\n", p, (b > 0 ? a / b : 0) }'
  done
fi

if [ ${#STEALS[@]} -gt 0 ]; then
  echo
  printf '%s\n' "${STEALS[@]}" | sort -g | awk '{ v[NR] = $1 } END {
    printf "VM steal on the proxy'"'"'s CPU during the load runs: %s%% to %s%% (median %s%%); above a few %%, figures of one run drift\n", v[1], v[NR], v[int((NR + 1) / 2)] }'
fi

# The smoke run checks that every part worked, not how fast.
if [ $SMOKE = 1 ]; then
  bad=0
  for sc in 1 2 3 4; do
    want $sc || continue
    for px in legate nginx haproxy; do
      awk -v r="${RPS[$sc.$px]:-0}" 'BEGIN { exit !(r > 0) }' || { echo "smoke: ($sc) $px served nothing"; bad=$((bad + 1)); }
    done
  done
  if want 5; then
    for px in legate nginx haproxy; do
      [ -n "${RSS[$px]:-}" ] || { echo "smoke: (5) $px: no measurement"; bad=$((bad + 1)); }
    done
  fi
  if want 6; then
    [ -n "${SCALE_ONE:-}" ] || { echo "smoke: (6) the changed cluster was not applied"; bad=$((bad + 1)); }
  fi
  if want 8; then
    for px in legate nginx haproxy; do
      if [ -n "${INVALID[8.$px]:-}" ]; then echo "smoke: (8) $px: ${GRPC_FAIL[$px]:-failed the trailer check}"; bad=$((bad + 1))
      else awk -v r="${RPS[8.$px]:-0}" 'BEGIN { exit !(r > 0) }' || { echo "smoke: (8) $px served nothing"; bad=$((bad + 1)); }
      fi
    done
  fi
  if want 7; then
    [ "${ROT_ERR:-x}" = 0 ] || { echo "smoke: (7) requests failed during rotation: ${ROT_ERR:-none ran}"; bad=$((bad + 1)); }
  fi
  echo "smoke: $([ $bad = 0 ] && echo ok || echo "$bad failure(s)")"
  [ $bad = 0 ]
fi
