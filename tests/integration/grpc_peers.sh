#!/usr/bin/env bash
# gRPC through legate, with gRPC stacks nobody here wrote: @grpc/grpc-js
# (tests/peers/grpc_node.js) and gRPC's C core through Python's grpcio
# (tests/peers/grpc_py.py), each as client and as server, over an h2c
# listener and a TLS listener (ALPN h2), to HTTP/2 clusters in plaintext and
# over TLS. What is checked is what Envoy does:
#   - every client x every server over h2c: unary with initial and trailing
#     metadata (text and -bin) intact, server/client/bidi streaming (bidi in
#     ping-pong, so a proxy that holds messages back deadlocks), errors before
#     any message (trailers-only) and after messages with code, message and
#     trailers intact, a client deadline, a client cancel reaching the server,
#     4 MiB messages both ways, 50 concurrent calls on one channel;
#   - a subset over the TLS listener, and to a TLS upstream;
#   - answers legate makes itself are gRPC answers (HTTP 200, grpc-status,
#     grpc-message): no route -> UNIMPLEMENTED, no endpoint or connection
#     refused -> UNAVAILABLE, route timeout (504) -> UNAVAILABLE;
#   - a server killed mid-stream: the client sees UNAVAILABLE or INTERNAL,
#     never OK, and not a hang.
# Each client run prints a JSON line per scenario (see tests/peers/grpc_node.js);
# a failing check prints what the client saw.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
# Debian's python3 directly: a python3 shim earlier on PATH (pyenv) costs half
# a second per call, and free_port calls it once per port.
[ -x /usr/bin/python3 ] && python3() { /usr/bin/python3 "$@"; }

PEERS=$SRC/tests/peers
PY=/usr/bin/python3 # Debian's python3-grpcio; a python3 earlier on PATH may lack it
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "skip: node and npm are needed for the grpc-js peer (Debian: nodejs, npm)"
  exit 77
fi
"$PEERS/install.sh" || { not_ok "tests/peers/install.sh (npm ci) failed"; finish; exit 1; }
"$PY" -c 'import grpc' 2>/dev/null || { not_ok "$PY has no grpc module (Debian: python3-grpcio)"; finish; exit 1; }

C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"

P_H2C=$(free_port); P_TLS=$(free_port); P_ADMIN=$(free_port)
P_NODE=$(free_port); P_NODE_TLS=$(free_port); P_PY=$(free_port)
P_REFUSED=$(free_port) # reserved and never listened on: connections are refused
LEGATE_PORT=$P_H2C

# --- servers ------------------------------------------------------------------------
start_server() { # start_server LOGNAME node|python PORT [extra args]
  local name=$1 kind=$2 port=$3; shift 3
  if [ "$kind" = node ]; then
    start_bg "$name" node "$PEERS/grpc_node.js" server --name node --port "$port" "$@"
  else
    start_bg "$name" "$PY" "$PEERS/grpc_py.py" server --name python --port "$port" "$@"
  fi
}
start_server srv-node node "$P_NODE" --tls-port "$P_NODE_TLS" --cert "$C/server.pem" --key "$C/server.key"
start_server srv-py python "$P_PY"
# One server per client kind and server kind, killed mid-stream by that client.
declare -A VICTIM_PORT VICTIM_PID
for c in node python; do
  for s in node python; do
    VICTIM_PORT[$c-$s]=$(free_port)
    start_server "victim-$c-$s" "$s" "${VICTIM_PORT[$c-$s]}"
    v=PID_victim_${c}_$s
    VICTIM_PID[$c-$s]=${!v}
  done
done
for p in "$P_NODE" "$P_NODE_TLS" "$P_PY" "${VICTIM_PORT[@]}"; do
  wait_port "$p" 20 || { not_ok "gRPC server on $p started"; tail -n 20 "$WORK"/srv-*.log "$WORK"/victim-*.log; finish; exit 1; }
done

# --- legate ---------------------------------------------------------------------------
route() { # route X-UPSTREAM CLUSTER [ROUTE_EXTRA]
  cat <<YAML
              - match:
                  prefix: /legate.test.Echo/
                  headers: [{ name: x-upstream, string_match: { exact: "$1" } }]
                route: { cluster: $2${3:+, $3} }
YAML
}
routes() {
  route node node
  route python python
  route node-tls node_tls
  route empty empty
  route refused refused
  route slow node "timeout: 0.5s"
  for c in node python; do for s in node python; do route "victim-$c-$s" "victim_${c}_$s"; done; done
}
hcm() { # hcm STAT_PREFIX
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: grpc
              domains: ["*"]
              routes:
$(routes)
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}
h2cluster() { # h2cluster NAME [PORT] [tls]: an HTTP/2 cluster; no PORT: no endpoints
  cat <<YAML
  - name: $1
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
YAML
  if [ -n "${2:-}" ]; then
    cat <<YAML
    load_assignment:
      cluster_name: $1
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } }] }]
YAML
  else
    printf '    load_assignment: { cluster_name: %s, endpoints: [] }\n' "$1"
  fi
  if [ -n "${3:-}" ]; then
    cat <<YAML
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          validation_context: { trusted_ca: { filename: $C/ca.pem } }
YAML
  fi
}

cat >"$WORK/legate.yaml" <<YAML
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } }
static_resources:
  listeners:
  - name: h2c
    address: { socket_address: { address: 127.0.0.1, port_value: $P_H2C } }
    filter_chains:
    - filters:
$(hcm h2c)
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: $P_TLS } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
      filters:
$(hcm tls)
  clusters:
$(h2cluster node "$P_NODE")
$(h2cluster python "$P_PY")
$(h2cluster node_tls "$P_NODE_TLS" tls)
$(h2cluster empty)
$(h2cluster refused "$P_REFUSED")
$(for c in node python; do for s in node python; do h2cluster "victim_${c}_$s" "${VICTIM_PORT[$c-$s]}"; done; done)
YAML

start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_TLS" || { not_ok "TLS listener up"; finish; exit 1; }

# --- clients ----------------------------------------------------------------------------
# run_client LOGNAME node|python TARGET ARGS...: a client run in the background
# (bounded: a stalled call ends at its deadline, the whole run at 90 s).
run_client() {
  local name=$1 kind=$2 target=$3; shift 3
  if [ "$kind" = node ]; then
    start_bg "$name" timeout 90 node "$PEERS/grpc_node.js" client --target "$target" "$@"
  else
    start_bg "$name" timeout 90 "$PY" "$PEERS/grpc_py.py" client --target "$target" "$@"
  fi
  RUNS+=("$!")
}
wait_runs() { for p in "${RUNS[@]}"; do wait "$p" 2>/dev/null; done; RUNS=(); }
# report LABEL LOGNAME SCENARIOS...: one check per scenario.
report() {
  local label=$1 log=$WORK/$2.log s line; shift 2
  for s in "$@"; do
    line=$(grep -m1 "^{\"scenario\":\"$s\"" "$log")
    if [[ $line == "{\"scenario\":\"$s\",\"ok\":true,"* ]]; then
      ok "$label: $s"
    else
      not_ok "$label: $s"
      if [ -n "$line" ]; then
        "$PY" -c 'import json, sys
d = json.loads(sys.argv[1])
print("     " + "; ".join(d.get("problems", [])))
print("     (status %s \"%s\", %s messages, %s ms)" % (d.get("code"), d.get("details"), d.get("count"), d.get("ms")))' \
          "$line" 2>/dev/null || echo "     $line"
      else
        echo "     no result from the client; its log ends:"; tail -n 5 "$log" | sed 's/^/     /'
      fi
    fi
  done
}

CORE=(unary server_stream client_stream bidi error_before error_before_stream error_after deadline cancel
      big_upload big_download big_echo concurrent)
TLS_SET=(unary server_stream bidi error_before error_after big_echo)
LOCAL=(no_route no_endpoints refused route_timeout)
join() { local IFS=,; echo "$*"; }
RUNS=()
declare -A SRVPORT=([node]=$P_NODE [python]=$P_PY)

# The peers talk to each other without legate: a failure below is legate's.
for c in node python; do for s in node python; do
  run_client "direct-$c-$s" "$c" "127.0.0.1:${SRVPORT[$s]}" --expect-server "$s" --scenarios "$(join "${CORE[@]}")"
done; done
wait_runs
for c in node python; do for s in node python; do
  if grep -q '"ok":false' "$WORK/direct-$c-$s.log" || [ "$(grep -c '"ok":true' "$WORK/direct-$c-$s.log")" != "${#CORE[@]}" ]; then
    not_ok "direct, no legate: $c client -> $s server, all ${#CORE[@]} scenarios (the peers themselves are broken)"
    grep -v '"ok":true' "$WORK/direct-$c-$s.log" | head -n 5 | cut -c1-300 | sed 's/^/     /'
  else
    ok "direct, no legate: $c client -> $s server, all ${#CORE[@]} scenarios"
  fi
done; done

# Through legate, all at once: the h2c matrix, the TLS listener, local
# replies, and the servers killed mid-stream.
for c in node python; do
  for s in node python; do
    run_client "h2c-$c-$s" "$c" "127.0.0.1:$P_H2C" --upstream "$s" --expect-server "$s" --scenarios "$(join "${CORE[@]}")"
    run_client "kill-$c-$s" "$c" "127.0.0.1:$P_H2C" --upstream "victim-$c-$s" --expect-server "$s" \
      --scenarios kill_midstream --kill-pid "${VICTIM_PID[$c-$s]}"
  done
  run_client "local-$c" "$c" "127.0.0.1:$P_H2C" --scenarios "$(join "${LOCAL[@]}")"
done
run_client tls-node-nodetls node "127.0.0.1:$P_TLS" --ca "$C/ca.pem" --server-name localhost \
  --upstream node-tls --expect-server node --scenarios "$(join "${TLS_SET[@]}")"
run_client tls-python-nodetls python "127.0.0.1:$P_TLS" --ca "$C/ca.pem" --server-name localhost \
  --upstream node-tls --expect-server node --scenarios "$(join "${TLS_SET[@]}")"
run_client tls-python-python python "127.0.0.1:$P_TLS" --ca "$C/ca.pem" --server-name localhost \
  --upstream python --expect-server python --scenarios "$(join "${TLS_SET[@]}")"
wait_runs

for c in node python; do for s in node python; do
  report "h2c: $c client -> legate -> $s server" "h2c-$c-$s" "${CORE[@]}"
done; done
report "TLS listener: node client -> legate -> node server over TLS" tls-node-nodetls "${TLS_SET[@]}"
report "TLS listener: python client -> legate -> node server over TLS" tls-python-nodetls "${TLS_SET[@]}"
report "TLS listener: python client -> legate -> python server (h2c)" tls-python-python "${TLS_SET[@]}"
for c in node python; do
  report "local reply to a $c client" "local-$c" "${LOCAL[@]}"
done
for c in node python; do for s in node python; do
  report "$s server killed mid-stream, $c client (never OK, no hang)" "kill-$c-$s" kill_midstream
done; done

# --- local replies on the wire ---------------------------------------------------------------
# A gRPC request that legate answers itself gets HTTP 200, content-type
# application/grpc and grpc-status in a trailers-only HEADERS frame.
printf '\0\0\0\0\1x' >"$WORK/msg"
wire() { # wire PATH X-UPSTREAM: the response head, lower-cased
  curl -s --max-time 10 --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' \
    -H 'te: trailers' -H "x-upstream: $2" --data-binary @"$WORK/msg" "http://127.0.0.1:$P_H2C$1" | tr -d '\r' | tr 'A-Z' 'a-z'
}
head_of() { grep -E '^(http/2 |content-type:|grpc-status:)' <<<"$1" | sed 's/ *$//' | sort | paste -sd';' -; }
out=$(wire /legate.test.Missing/Unary node)
expect_eq "no route, on the wire: 200, application/grpc, grpc-status 12" \
  "content-type: application/grpc;grpc-status: 12;http/2 200" "$(head_of "$out")"
out=$(wire /legate.test.Echo/Unary empty)
expect_eq "no endpoints, on the wire: 200, application/grpc, grpc-status 14" \
  "content-type: application/grpc;grpc-status: 14;http/2 200" "$(head_of "$out")"
check "... with a grpc-message" grep -q '^grpc-message: .' <<<"$out"

# --- after all that ---------------------------------------------------------------------------
run_client after-node node "127.0.0.1:$P_H2C" --upstream python --expect-server python --scenarios unary
run_client after-python python "127.0.0.1:$P_H2C" --upstream node --expect-server node --scenarios unary
wait_runs
report "legate still serves: node client -> python server" after-node unary
report "legate still serves: python client -> node server" after-python unary

check "legate is still running" kill -0 "$PID_legate"
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
