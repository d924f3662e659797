#!/usr/bin/env bash
# Fault injection, control plane side. Two legates, each fed over ADS by its
# own legate-control:
#   A talks to its control plane directly: the control plane is killed
#     (legate keeps serving the last good config and retries with a growing
#     backoff), then restarted with a new version (applied);
#   B talks through faults.py's TCP proxy, which makes the stream slow,
#     injects junk into the HTTP/2 connection mid-stream, answers junk
#     itself, and hands the stream to a fake gRPC server whose responses do
#     not decode.
# Through all of it both keep serving their last good config (a route that
# tells the version, and an EDS cluster to a real upstream), stay alive,
# and take the next good config once the control plane is sane again.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CONTROL=$BIN/../control-sample/legate-control
F=$SRC/tests/integration/faults.py
cd "$WORK" || exit 1

P_UP=$(free_port)
P_CPA=$(free_port); P_LA=$(free_port); P_AA=$(free_port)
P_CPB=$(free_port); P_LB=$(free_port); P_AB=$(free_port); P_PX=$(free_port); P_FG=$(free_port)
start_bg up python3 "$SRC/tests/integration/upstream.py" "$P_UP" backend
wait_port "$P_UP"

cp_config() { # cp_config FILE MARKER LISTENER_PORT
  cat > "$1.tmp" <<YAML
listeners:
- name: edge
  address: { socket_address: { address: 127.0.0.1, port_value: $3 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: edge
        rds: { route_config_name: local, config_source: { ads: {}, resource_api_version: V3 } }
        http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
routes:
- name: local
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: { path: /marker }
      direct_response: { status: 200, body: { inline_string: "$2" } }
    - match: { prefix: / }
      route: { cluster: backend }
clusters:
- name: backend
  type: EDS
  connect_timeout: 1s
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: V3 } }
endpoints:
- cluster_name: backend
  endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_UP } } } }] }]
YAML
  mv "$1.tmp" "$1"
}

bootstrap() { # bootstrap NODE ADS_PORT ADMIN_PORT
  cat <<YAML
node: { id: $1, cluster: faults }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $3 } } }
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - envoy_grpc:
        cluster_name: xds_cluster
        retry_policy: { retry_back_off: { base_interval: 0.2s, max_interval: 2s } }
  lds_config: { ads: {}, resource_api_version: V3 }
  cds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
$(static_cluster xds_cluster "$2" h2)
YAML
}

marker() { curl -s -m 2 "http://127.0.0.1:$1/marker"; }
# wait_marker PORT WANT SECONDS: until the route table says WANT.
wait_marker() {
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do [ "$(marker "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}
# serving PORT MARKER: the last good config answers, the upstream too, fast.
serving() {
  [ "$(marker "$1")" = "$2" ] &&
    [ "$(curl -s -m 1 "http://127.0.0.1:$1/app")" = "backend GET /app bytes=0" ]
}
alive() { kill -0 "$1" 2>/dev/null; }
lines() { grep -c "$2" "$1" 2>/dev/null; } # lines FILE PATTERN: how many match (0 if none)

cp_config cpa.yaml a1 "$P_LA"
cp_config cpb.yaml b1 "$P_LB"
echo pass > mode
bootstrap legate-a "$P_CPA" "$P_AA" > a.yaml
bootstrap legate-b "$P_PX" "$P_AB" > b.yaml
start_bg cpa "$CONTROL" -c cpa.yaml --listen "127.0.0.1:$P_CPA" --no-watch
start_bg cpb "$CONTROL" -c cpb.yaml --listen "127.0.0.1:$P_CPB" --no-watch
start_bg proxy python3 "$F" proxy "$P_PX" "$P_CPB" mode
start_bg fakegrpc python3 "$F" fakegrpc "$P_FG"
wait_port "$P_CPA"; wait_port "$P_CPB"; wait_port "$P_PX"; wait_port "$P_FG"
LEGATE_PORT=$P_AA start_legate a a.yaml || { finish; exit 1; }
LEGATE_PORT=$P_AB start_legate b b.yaml || { finish; exit 1; }
wait_marker "$P_LA" a1 10; wait_marker "$P_LB" b1 10
check "A: the first config from its control plane serves (route and EDS cluster)" serving "$P_LA" a1
check "B: the first config through the proxy serves" serving "$P_LB" b1
check "B's stream goes through the proxy" grep -q "connection 1 opened to $P_CPB" proxy.log

# --- A: the control plane is killed ----------------------------------------------------
n0=$(lines a.log "reconnecting in")
kill -9 "$PID_cpa"; wait "$PID_cpa" 2>/dev/null
good=0
for i in $(seq 1 20); do serving "$P_LA" a1 && good=$((good + 1)); sleep 0.2; done
expect_eq "control plane killed: 20 checks over 4 s, each served by the last good config" "20" "$good"
check "... legate A is alive" alive "$PID_a"
check "... and said the stream closed" grep -q "ADS stream to 127.0.0.1:$P_CPA closed" a.log
# The waits it announced since the kill: uniform in [d/2, d], d = min(0.2 s * 2^n, 2 s).
waits=$(grep -o "reconnecting in [0-9.]* s" a.log | tail -n +$((n0 + 1)) | cut -d' ' -f3 | tr '\n' ' ')
echo "     backoff after the kill: $waits"
out=$(python3 - "$waits" <<'PY'
import sys
w = [float(x) for x in sys.argv[1].split()]
bad = [(n, x) for n, x in enumerate(w) if not min(0.2 * 2 ** n, 2) / 2 - 0.051 <= x <= min(0.2 * 2 ** n, 2) + 0.051]
print("ok" if 4 <= len(w) <= 9 and not bad else "bad: %d waits, out of schedule: %r" % (len(w), bad))
PY
)
expect_eq "... and retried 4 to 9 times in 4 s, with jittered exponential backoff capped at 2 s" "ok" "$out"

# --- A: the control plane comes back with a new version -------------------------------------
cp_config cpa.yaml a2 "$P_LA"
start_bg cpa "$CONTROL" -c cpa.yaml --listen "127.0.0.1:$P_CPA" --no-watch
check "control plane restarted with a new config (version 1 again, new content): applied within 5 s" wait_marker "$P_LA" a2 5
check "... and A said it reconnected" bash -c "[ \$(grep -c 'ADS stream to 127.0.0.1:$P_CPA connected' a.log) -ge 2 ]"
check "... and still reaches the upstream" serving "$P_LA" a2

# --- B: a slow control plane -----------------------------------------------------------------
echo "slow 0.5" > mode
cp_config cpb.yaml b2 "$P_LB"
t0=$(date +%s.%N)
kill -HUP "$PID_cpb"
slow_ok=0
# Each answered within its 1 s limit, by the old config or (once the slow
# update has landed, which on a loaded machine may be before the tenth) the
# new one: what is checked is that nothing waits for the update.
for i in $(seq 1 10); do
  { serving "$P_LB" b1 || serving "$P_LB" b2; } && slow_ok=$((slow_ok + 1))
done
check "slow control plane: the update applies" wait_marker "$P_LB" b2 15
dt=$(python3 -c "import time; print('%.1f' % (time.time() - $t0))")
check "... after the proxy's delay (${dt} s >= 0.5 s)" python3 -c "import sys; sys.exit(not $dt >= 0.5)"
expect_eq "... while 10 requests on the old config were answered at once (1 s limit each)" "10" "$slow_ok"
echo pass > mode

# --- B: junk injected into the HTTP/2 connection mid-stream ------------------------------------
nb=$(lines b.log "ADS stream to 127.0.0.1:$P_PX closed")
kill -USR1 "$PID_proxy"
for _ in $(seq 1 50); do [ "$(lines b.log "ADS stream to 127.0.0.1:$P_PX closed")" -gt "$nb" ] && break; sleep 0.1; done
check "junk mid-stream: B notices, says the stream closed and why" \
  bash -c "grep 'ADS stream to 127.0.0.1:$P_PX closed' b.log | tail -n +$((nb + 1)) | grep -q 'gRPC status [0-9]*: .*reconnecting in'"
grep "ADS stream to 127.0.0.1:$P_PX closed" b.log | tail -1 | sed 's/^/     /'
check "... keeps serving the last good config" serving "$P_LB" b2
check "... is alive" alive "$PID_b"
for _ in $(seq 1 50); do [ "$(lines proxy.log 'opened to')" -ge 2 ] && break; sleep 0.1; done
check "... and reconnects" test "$(lines proxy.log 'opened to')" -ge 2
cp_config cpb.yaml b3 "$P_LB"; kill -HUP "$PID_cpb"
check "... and takes the next version on the new stream" wait_marker "$P_LB" b3 10

# --- B: a server that answers junk ---------------------------------------------------------------
echo junk > mode
nj=$(lines proxy.log "answered with junk")
kill -USR2 "$PID_proxy"
good=0
for i in $(seq 1 15); do serving "$P_LB" b3 && good=$((good + 1)); sleep 0.2; done
expect_eq "a control plane that answers junk: 15 checks over 3 s served by the last good config" "15" "$good"
tries=$(( $(lines proxy.log "answered with junk") - nj ))
check "... B kept trying, with backoff ($tries connections in 3 s: 2 to 10)" test "$tries" -ge 2 -a "$tries" -le 10
check "... and is alive" alive "$PID_b"

# --- B: a gRPC server whose responses do not decode ----------------------------------------------
echo "to $P_FG" > mode
for _ in $(seq 1 100); do [ "$(lines fakegrpc.log '^call')" -ge 2 ] && break; sleep 0.1; done
check "a gRPC server whose responses do not decode: B says so" grep -q "a DiscoveryResponse that does not decode; closing the stream" b.log
check "... retries" test "$(lines fakegrpc.log '^call')" -ge 2
check "... keeps serving the last good config" serving "$P_LB" b3
check "... and is alive" alive "$PID_b"

# --- B: the control plane is sane again ------------------------------------------------------------
echo pass > mode
kill -USR2 "$PID_proxy"
cp_config cpb.yaml b4 "$P_LB"; kill -HUP "$PID_cpb"
check "back to the real control plane: the next version applies" wait_marker "$P_LB" b4 10
check "... and the upstream still answers" serving "$P_LB" b4
check "A served throughout and is alive" bash -c "$(declare -f serving marker alive); serving $P_LA a2 && alive $PID_a"

for l in a b; do
  pid_var=PID_$l
  kill -TERM "${!pid_var}"; wait "${!pid_var}"; rc=$?
  expect_eq "legate $l: SIGTERM, exit code 0" "0" "$rc"
  check "legate $l: no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/$l.log'"
done
finish
