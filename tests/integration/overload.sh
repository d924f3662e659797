#!/usr/bin/env bash
# The overload manager (bootstrap overload_manager, Envoy's names):
#  1. fixed_heap over its limit: stop_accepting_requests answers 503
#     "envoy overloaded", shrink_heap trims, stats say so;
#  2. global_downstream_max_connections: a connection over the limit is
#     closed at accept and counted;
#  3. reset_high_memory_stream bounds memory under an HTTP/2 zero-window
#     attack behind an HTTP/2 upstream with the default 1 MiB stream window
#     (each stalled stream can hold that much: 300 MiB unbounded); small
#     requests are served meanwhile and downloads work after;
#  4. stop_accepting_connections: no connection is served while active;
#  5. config errors name the field;
#  6. layered_runtime: a listener's connection_limit, the global limit in its
#     runtime form, feature flags accepted, other keys and disk layers refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
[ -x /usr/bin/python3 ] && python3() { /usr/bin/python3 "$@"; }
command -v nghttpd >/dev/null || { not_ok "nghttpd is installed (Debian: nghttp2-server)"; finish; exit 1; }
ASAN=0
asan_build && ASAN=1

# overload_yaml HEAP_BYTES MAX_CONNS ACTIONS_YAML: an overload_manager section.
overload_yaml() {
  cat <<YAML
overload_manager:
  refresh_interval: 0.1s
  buffer_factory_config: { minimum_account_to_track_power_of_two: 16 }
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: $1
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: $2
  actions:
$3
YAML
}
# listener_yaml PORT ADMIN_PORT: admin, and a listener routing /h2/ to the
# h2up cluster and everything else to a direct 200 "small".
listener_yaml() {
  cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } }
static_resources:
  listeners:
  - name: edge
    address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /h2/ }
                route: { cluster: h2up, prefix_rewrite: /, timeout: 60s }
              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: "small\n" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
$(static_cluster h2up "$P_H2" h2 "max_concurrent_streams: 1000")
YAML
}
stat() { curl -s "http://127.0.0.1:$1/stats" | awk -v n="$2" -F': ' '$1 == n {print $2}'; }

D=$WORK/docroot
mkdir -p "$D"
head -c $((32 << 20)) /dev/urandom >"$D/big"
SUM=$(sha256sum <"$D/big" | cut -c1-64)
P_H2=$(free_port)
start_bg up-h2 nghttpd --no-tls -m 1000 -a 127.0.0.1 -d "$D" "$P_H2"
wait_port "$P_H2" || { not_ok "upstream started"; finish; exit 1; }

# ---- 1, 2: a heap limit below what legate uses at rest; two connections at most
P1=$(free_port); A1=$(free_port)
{ overload_yaml 1048576 2 '  - name: envoy.overload_actions.stop_accepting_requests
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.95 } }]
  - name: envoy.overload_actions.shrink_heap
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.9 } }]'
  listener_yaml "$P1" "$A1"; } >"$WORK/small-heap.yaml"
check "an overload_manager bootstrap validates" "$BIN/legate" -c "$WORK/small-heap.yaml" --mode validate
LEGATE_PORT=$P1
start_legate small-heap "$WORK/small-heap.yaml" --concurrency 1 || { finish; exit 1; }
sleep 0.5
out=$(curl -s -i "http://127.0.0.1:$P1/")
check "over the heap limit: 503" grep -q "^HTTP/1.1 503" <<<"$out"
check "... with Envoy's body \"envoy overloaded\"" grep -q "^envoy overloaded$" <<<"$out"
expect_eq "... counted in downstream_rq_overload_close" 1 "$(stat "$A1" http.edge.downstream_rq_overload_close)"
expect_eq "stop_accepting_requests.active is 1" 1 "$(stat "$A1" overload.envoy.overload_actions.stop_accepting_requests.active)"
check "fixed_heap pressure over 100%" test "$(stat "$A1" overload.envoy.resource_monitors.fixed_heap.pressure)" -gt 100
check "shrink_heap ran" test "$(stat "$A1" overload.envoy.overload_actions.shrink_heap.shrink_count)" -ge 1
check "the log says the action went active" grep -q "stop_accepting_requests active" "$WORK/small-heap.log"
exec 3<>"/dev/tcp/127.0.0.1/$P1" 4<>"/dev/tcp/127.0.0.1/$P1"
sleep 0.3
code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$P1/")
expect_eq "a third connection over max_active_downstream_connections 2 is closed" 000 "$code"
expect_eq "... counted in downstream_global_cx_overflow" 1 \
  "$(curl -s "http://127.0.0.1:$A1/stats" | awk -F': ' '/downstream_global_cx_overflow/ {print $2}')"
exec 3>&- 4>&-
sleep 0.3
out=$(curl -s -i "http://127.0.0.1:$P1/")
check "once the two closed, a connection is taken again (and answered 503)" grep -q "^HTTP/1.1 503" <<<"$out"

# ---- 3: reset_high_memory_stream under a zero-window attack
P3=$(free_port); A3=$(free_port)
HEAP=$((96 << 20))
{ overload_yaml $HEAP 100000 '  - name: envoy.overload_actions.reset_high_memory_stream
    triggers: [{ name: envoy.resource_monitors.fixed_heap, scaled: { scaling_threshold: 0.3, saturation_threshold: 0.7 } }]
  - name: envoy.overload_actions.shrink_heap
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.5 } }]'
  listener_yaml "$P3" "$A3"; } >"$WORK/reset.yaml"
LEGATE_PORT=$P3
if [ $ASAN = 0 ]; then
  start_legate reset "$WORK/reset.yaml" --concurrency 1 || { finish; exit 1; }
  LP=$PID_reset
  sum=$(curl -s --http2-prior-knowledge -m 60 "http://127.0.0.1:$P3/h2/big" | sha256sum | cut -c1-64)
  expect_eq "a download before the attack" "$SUM" "$sum"
  python3 "$SRC/tests/peers/h2_zero_window.py" 127.0.0.1 "$P3" 3 100 /h2/big 8 >"$WORK/attack.log" 2>&1 &
  AP=$!
  PIDS+=($AP)
  peak=0; small=0
  for _ in $(seq 30); do
    r=$(awk '/^RssAnon/ {print $2}' "/proc/$LP/status"); [ "$r" -gt "$peak" ] && peak=$r
    [ "$(curl -s -m 2 "http://127.0.0.1:$P3/")" = small ] && small=$((small + 1))
    sleep 0.2
  done
  wait $AP
  echo "# RssAnon peak $peak KiB under the attack, limit $((HEAP >> 10)) KiB"
  check "RssAnon stayed under the fixed_heap limit ($peak KiB)" test "$peak" -le $((HEAP >> 10))
  resets=$(stat "$A3" overload.envoy.overload_actions.reset_high_memory_stream.count)
  check "streams were reset under pressure ($resets)" test "${resets:-0}" -ge 1
  expect_eq "small requests were served during the attack" 30 "$small"
  sum=$(curl -s --http2-prior-knowledge -m 60 "http://127.0.0.1:$P3/h2/big" | sha256sum | cut -c1-64)
  expect_eq "a download after the attack" "$SUM" "$sum"
  check "legate is alive" kill -0 "$LP"
else
  echo "# skipped under ASan: its allocator quarantines freed memory, so RSS is not legate's"
fi

# ---- 4: stop_accepting_connections
P4=$(free_port); A4=$(free_port)
{ overload_yaml 1048576 100 '  - name: envoy.overload_actions.stop_accepting_connections
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.95 } }]'
  listener_yaml "$P4" "$A4"; } >"$WORK/stop-conns.yaml"
start_bg stop-conns "$BIN/legate" -c "$WORK/stop-conns.yaml" --concurrency 1
wait_port "$A4"
sleep 0.5
code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$P4/")
expect_eq "stop_accepting_connections: a connection is not served" 000 "$code"
expect_eq "... stop_accepting_connections.active is 1" 1 "$(stat "$A4" overload.envoy.overload_actions.stop_accepting_connections.active)"

# ---- 5: config errors name the field
bad() { # bad NAME EXPECTED_SUBSTRING ACTIONS_YAML
  { overload_yaml 1048576 10 "$3"; listener_yaml 1 2; } >"$WORK/bad.yaml"
  local out
  out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
  check "$1: refused naming the field ($out)" grep -qF "$2" <<<"$out"
}
bad "unknown action" 'overload_manager.actions[0].name: unsupported overload action "envoy.overload_actions.reduce_timeouts"' \
  '  - name: envoy.overload_actions.reduce_timeouts
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.9 } }]'
bad "threshold out of range" 'overload_manager.actions[0].triggers[0].threshold.value: must be in [0, 1]' \
  '  - name: envoy.overload_actions.shrink_heap
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 1.5 } }]'
bad "a trigger on an unknown monitor" 'overload_manager.actions[0].triggers[0].name: "envoy.resource_monitors.cpu"' \
  '  - name: envoy.overload_actions.shrink_heap
    triggers: [{ name: envoy.resource_monitors.cpu, threshold: { value: 0.9 } }]'
bad "scaled thresholds reversed" 'overload_manager.actions[0].triggers[0].scaled: scaling_threshold must be below saturation_threshold' \
  '  - name: envoy.overload_actions.reset_high_memory_stream
    triggers: [{ name: envoy.resource_monitors.fixed_heap, scaled: { scaling_threshold: 0.9, saturation_threshold: 0.5 } }]'
{ overload_yaml 1048576 10 '  - name: envoy.overload_actions.reset_high_memory_stream
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.9 } }]' | grep -v buffer_factory_config
  listener_yaml 1 2; } >"$WORK/bad.yaml"
out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
check "reset_high_memory_stream without buffer_factory_config: refused ($out)" \
  grep -qF 'needs overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two' <<<"$out"
{ overload_yaml 1048576 10 '' | sed 's/^  actions:$/  - name: envoy.resource_monitors.cpu_utilization/'
  listener_yaml 1 2; } >"$WORK/bad.yaml"
out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
check "an unknown resource monitor: refused naming it ($out)" \
  grep -qF 'overload_manager.resource_monitors[2]: unsupported resource monitor "envoy.resource_monitors.cpu_utilization"' <<<"$out"

# ---- 6: layered_runtime: a listener's connection_limit, the global limit
# in its deprecated runtime form, Envoy feature flags accepted (Istio's
# bootstraps carry some), anything else refused
P6=$(free_port); A6=$(free_port); P6B=$(free_port)
{ listener_yaml "$P6" "$A6" | sed '/^  clusters:/,$d'
  cat <<YAML
  - name: other
    address: { socket_address: { address: 127.0.0.1, port_value: $P6B } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: other
          route_config: { virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: / }, direct_response: { status: 200 } }] }] }
          http_filters: [{ name: envoy.filters.http.router }]
layered_runtime:
  layers:
  - name: static
    static_layer:
      overload.global_downstream_max_connections: 3
      envoy.reloadable_features.http_reject_path_with_fragment: false
      re2.max_program_size.error_level: 32768
      envoy:
        resource_limits:
          listener:
            edge:
              connection_limit: 1
  - name: admin
    admin_layer: {}
YAML
} >"$WORK/runtime.yaml"
LEGATE_PORT=$P6
start_legate runtime "$WORK/runtime.yaml" --concurrency 1 || { finish; exit 1; }
wait_port "$P6B"
exec 5<>"/dev/tcp/127.0.0.1/$P6"
sleep 0.2
code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$P6/")
expect_eq "runtime connection_limit 1 on listener edge: a second connection is closed" 000 "$code"
expect_eq "... counted in downstream_cx_overflow" 1 \
  "$(curl -s "http://127.0.0.1:$A6/stats" | awk -F': ' '/_'"$P6"'.downstream_cx_overflow/ {print $2}')"
expect_eq "... another listener is not limited by it" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P6B/")"
exec 6<>"/dev/tcp/127.0.0.1/$P6B" 7<>"/dev/tcp/127.0.0.1/$P6B"
sleep 0.2
code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$P6B/")
expect_eq "overload.global_downstream_max_connections 3: a fourth connection is closed" 000 "$code"
exec 5>&- 6>&- 7>&-
sleep 0.3
expect_eq "... and once they closed, edge answers again" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P6/")"
check "the feature flags were logged as having no effect" grep -q 'envoy.reloadable_features.http_reject_path_with_fragment.*no effect' "$WORK/runtime.log"
for bad in 'upstream.use_http2: false' ; do
  { listener_yaml 1 2; printf 'layered_runtime:\n  layers:\n  - name: s\n    static_layer: { %s }\n' "$bad"; } >"$WORK/bad.yaml"
  out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
  check "a runtime key legate does not use is refused naming it ($out)" \
    grep -qF 'layered_runtime.layers[0].static_layer["upstream.use_http2"]: runtime key not used by legate' <<<"$out"
done
{ listener_yaml 1 2; printf 'layered_runtime:\n  layers:\n  - name: d\n    disk_layer: { symlink_root: /srv/runtime }\n'; } >"$WORK/bad.yaml"
out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
check "disk_layer is refused ($out)" grep -qF 'layered_runtime.layers[0].disk_layer: not supported by legate' <<<"$out"

check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' $WORK/*.log"
finish
