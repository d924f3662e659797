#!/usr/bin/env bash
# WebSocket and CONNECT tunnelling through legate, as Envoy does them, with
# real client libraries (python3-websockets, python3-h2; tests/peers/):
# - HTTP/1.1 Upgrade: websocket, enabled by the connection manager's
#   upgrade_configs or a route's (a route's setting wins, enabled: false
#   included); an upgrade that is not enabled is answered 403 and never
#   reaches the upstream;
# - WebSocket over HTTP/2 extended CONNECT (RFC 8441, allow_connect) to an
#   HTTP/1.1 upstream: :status 200 for the upstream's 101;
# - the tunnel's ends: an upstream that goes away ends the client's
#   connection, a client that goes away ends the upstream's;
# - CONNECT (HTTP/1.1 and HTTP/2) to a connect_matcher route with
#   upgrade_configs CONNECT and connect_config (legate terminates the
#   CONNECT, as Envoy does only with connect_config): 200, then raw bytes
#   both ways to a TCP echo server;
# - the access log of upgraded requests and tunnels (101, byte counts).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

PY=/usr/bin/python3
PEERS=$SRC/tests/peers
if ! $PY -c 'import websockets, h2' 2>/dev/null; then
  not_ok "python3-websockets and python3-h2 are installed (scripts/packages.txt)"
  finish; exit 1
fi

P_WSUP=$(free_port); P_TCP=$(free_port)
P_PLAIN=$(free_port)                          # legate-plain: no upgrade field anywhere
P_W=$(free_port); P_R=$(free_port); P_D=$(free_port); P_T=$(free_port)   # legate-ws
start_bg wsup $PY "$PEERS/ws_echo_server.py" "$P_WSUP"
start_bg tcpecho $PY "$PEERS/ws_tunnel.py" echo-server "$P_TCP"
wait_port "$P_WSUP"; wait_port "$P_TCP"

# hcm STAT_PREFIX EXTRA_HCM_FIELDS ROUTES
hcm() {
  cat <<YAML
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          $2
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
$3
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}
listener() { printf '  - name: %s\n    address: { socket_address: { address: 127.0.0.1, port_value: %s } }\n' "$1" "$2"; }
clusters() {
  cat <<YAML
  clusters:
$(static_cluster ws "$P_WSUP")
$(static_cluster tcp_echo "$P_TCP")
  # The same echo server behind a cluster configured for HTTP/2: a CONNECT
  # that legate terminates is raw TCP whatever the cluster speaks.
$(static_cluster tcp_echo_h2 "$P_TCP" h2)
YAML
}
TO_WS='              - match: { prefix: / }
                route: { cluster: ws }'
ON_ROUTE='              - match: { prefix: /on/ }
                route: { cluster: ws, upgrade_configs: [{ upgrade_type: websocket, enabled: true }] }'

{
  echo "static_resources:"
  echo "  listeners:"
  listener plain "$P_PLAIN"
  hcm plain "" "$TO_WS"
  clusters
} > "$WORK/plain.yaml"

{
  echo "static_resources:"
  echo "  listeners:"
  # W: websocket enabled on the connection manager, extended CONNECT on
  # HTTP/2, CONNECT on one route, websocket switched off on another.
  listener ws "$P_W"
  hcm ws "upgrade_configs: [{ upgrade_type: websocket }]
          http2_protocol_options: { allow_connect: true }
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $WORK/access.log
              log_format:
                text_format: \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% code=%RESPONSE_CODE% rx=%BYTES_RECEIVED% tx=%BYTES_SENT%\\n\"" \
"              - match: { connect_matcher: {} }
                route: { cluster: tcp_echo, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }] }
              - match: { prefix: /off/ }
                route: { cluster: ws, upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }
$TO_WS"
  # T: CONNECT terminated to the HTTP/2-configured echo cluster.
  listener tunnel-h2 "$P_T"
  hcm tunnel-h2 "" "              - match: { connect_matcher: {} }
                route: { cluster: tcp_echo_h2, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }] }
$TO_WS"
  # R: no upgrade_configs on the connection manager; one route enables websocket.
  listener route-only "$P_R"
  hcm route-only "" "$ON_ROUTE
$TO_WS"
  # D: the connection manager names websocket but disables it; one route enables it.
  listener hcm-disabled "$P_D"
  hcm hcm-disabled "upgrade_configs: [{ upgrade_type: websocket, enabled: false }]" "$ON_ROUTE
$TO_WS"
  clusters
} > "$WORK/ws.yaml"

# up NAME CONFIG PORT: starts legate; fails fast (with its error) when it exits.
up() {
  start_bg "$1" "$BIN/legate" -c "$2" --concurrency 2 -l info
  local pid_var="PID_$1" end=$((SECONDS + 10))
  while [ $SECONDS -lt $end ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && { ok "legate ($1) started"; return 0; }
    kill -0 "${!pid_var}" 2>/dev/null || break
    sleep 0.05
  done
  not_ok "legate ($1) started"
  sed 's/^/     /' "$WORK/$1.log" | tail -5
  return 1
}
up legate_plain "$WORK/plain.yaml" "$P_PLAIN"
up legate_ws "$WORK/ws.yaml" "$P_W"

# steps OUTPUT STEP:DESCRIPTION...: one check per step a peer client reports
# ("ok STEP", or "FAIL STEP: why"; a step after a failure is not reached).
steps() {
  local out=$1 sd step why; shift
  for sd in "$@"; do
    step=${sd%%:*}
    if grep -qx "ok $step" <<<"$out"; then ok "${sd#*:}"; continue; fi
    not_ok "${sd#*:}"
    why=$(grep -m1 "^FAIL $step:" <<<"$out") || why="not reached: $(grep -m1 '^FAIL' <<<"$out" || echo "${out:-no output}")"
    echo "     $why"
  done
}
# wait_for FILE REGEX [SECONDS]: until a line of FILE matches.
wait_for() {
  local end=$((SECONDS + ${3:-5}))
  until grep -qE "$2" "$1" 2>/dev/null; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}
wsc() { timeout 60 $PY "$PEERS/ws_client.py" "$@" 2>&1; }
h2c() { timeout 60 $PY "$PEERS/h2_client.py" "$@" 2>&1; }
WSLOG=$WORK/wsup.log

# --- WebSocket over HTTP/1.1 ---------------------------------------------------------------
out=$(wsc "ws://127.0.0.1:$P_W/ws/echo" echo)
steps "$out" \
  "handshake:h1 websocket: the handshake through legate completes (101)" \
  "text:h1 websocket: a text message echoes" \
  "binary:h1 websocket: a binary message echoes" \
  "big:h1 websocket: a 1 MiB message echoes" \
  "seq100:h1 websocket: 100 messages in a row come back in order" \
  "ping:h1 websocket: a ping is answered with a pong" \
  "close:h1 websocket: clean close (close code 1000 back from the upstream, then the connection ends)"
check "h1 websocket: the upstream got Upgrade: websocket and a Sec-WebSocket-Key" \
  grep -qE "^request path=/ws/echo upgrade=websocket connection=[^ ]*[Uu]pgrade[^ ]* key=yes version=13" "$WSLOG"
check "h1 websocket: the upstream saw the client's close code 1000" wait_for "$WSLOG" "^close path=/ws/echo code=1000$"

# --- WebSocket over HTTP/2 extended CONNECT ---------------------------------------------------
out=$(h2c "$P_W" ws /h2/echo)
steps "$out" \
  "settings:h2 websocket: legate advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (allow_connect)" \
  "status:h2 websocket: extended CONNECT answered :status 200" \
  "text:h2 websocket: a text message echoes" \
  "binary:h2 websocket: a binary message echoes" \
  "big:h2 websocket: a 1 MiB message echoes" \
  "seq100:h2 websocket: 100 messages in a row come back in order" \
  "ping:h2 websocket: a ping is answered with a pong" \
  "close:h2 websocket: clean close (close code 1000 back, then the stream ends without error)"
check "h2 websocket: the upstream got an HTTP/1.1 Upgrade: websocket request with the key" \
  grep -qE "^request path=/h2/echo upgrade=websocket connection=[^ ]*[Uu]pgrade[^ ]* key=yes version=13" "$WSLOG"
check "h2 websocket: the upstream saw the client's close code 1000" wait_for "$WSLOG" "^close path=/h2/echo code=1000$"
expect_eq "h2 without allow_connect: SETTINGS_ENABLE_CONNECT_PROTOCOL is not advertised" \
  "enable_connect_protocol=0" "$(h2c "$P_PLAIN" settings)"

# --- upgrades that are not enabled --------------------------------------------------------------
reject() { # reject DESCRIPTION PORT PATH
  local got; got=$(wsc "ws://127.0.0.1:$2$3" reject)
  expect_eq "$1: 403" "status 403" "$got"
  sleep 0.2
  if [[ $got != "status "[0-9]* ]]; then
    not_ok "$1: the upstream never saw the request (legate did not answer)"
  else
    check "$1: the upstream never saw the request" bash -c "! grep -q ' path=$3 ' '$WSLOG'"
  fi
}
reject "no upgrade_configs anywhere (legate-plain)" "$P_PLAIN" /plain/x
reject "route with websocket enabled: false under a manager that enables it" "$P_W" /off/x
reject "no upgrade_configs on the manager, none on the route" "$P_R" /r/x
reject "manager's websocket enabled: false, none on the route" "$P_D" /d/x
out=$(wsc "ws://127.0.0.1:$P_R/on/r" text)
steps "$out" "handshake:a route's enabled: true without upgrade_configs on the manager: handshake" \
  "text:... a message echoes" "close:... clean close"
out=$(wsc "ws://127.0.0.1:$P_D/on/d" text)
steps "$out" "handshake:a route's enabled: true over the manager's enabled: false: handshake" \
  "text:... a message echoes" "close:... clean close"

# --- the ends of the tunnel -------------------------------------------------------------------------
out=$(wsc "ws://127.0.0.1:$P_W/ws/upstream-close" upstream-close)
steps "$out" "handshake:upstream goes away: handshake" \
  "ended:upstream goes away (TCP close, no close frame): the client's connection ends, no hang"
grep '^info' <<<"$out" | sed 's/^/     /'
out=$(wsc "ws://127.0.0.1:$P_W/ws/client-abort" client-abort)
steps "$out" "aborted:client goes away: it had its echo, then dropped its connection"
check "client goes away: the upstream's connection ends too (within 5 s)" \
  wait_for "$WSLOG" "^close path=/ws/client-abort code=1006$" 5

# --- CONNECT --------------------------------------------------------------------------------------------
out=$(timeout 30 $PY "$PEERS/ws_tunnel.py" connect "$P_W" "127.0.0.1:$P_TCP" 2>&1)
steps "$out" \
  "status:h1 CONNECT to a connect_matcher route: 200" \
  "echo:h1 CONNECT: bytes go through the tunnel and come back" \
  "echo-64k:h1 CONNECT: 64 KiB go through and come back" \
  "end:h1 CONNECT: the client ends its side, the tunnel ends"
grep '^info head' <<<"$out" | sed 's/^/     /'
SENT=$(sed -n 's/^info sent //p' <<<"$out")
check "h1 CONNECT: the upstream echoed the tunnel's bytes and saw the client's end" \
  wait_for "$WORK/tcpecho.log" "^eof bytes=${SENT:-none}$" 5
out=$(h2c "$P_W" connect "127.0.0.1:$P_TCP")
steps "$out" \
  "status:h2 CONNECT (only :authority) to a connect_matcher route: :status 200" \
  "echo:h2 CONNECT: bytes go through the tunnel and come back" \
  "echo-64k:h2 CONNECT: 64 KiB go through and come back" \
  "end:h2 CONNECT: END_STREAM from the client, the tunnel's stream ends"

out=$(timeout 30 $PY "$PEERS/ws_tunnel.py" connect "$P_T" "127.0.0.1:$P_TCP" 2>&1)
steps "$out" \
  "status:CONNECT terminated to a cluster configured for HTTP/2: 200" \
  "echo:... raw bytes go through and come back (not an HTTP/2 session)" \
  "end:... the client ends its side, the tunnel ends"

# --- access log -------------------------------------------------------------------------------------------
ALOG=$WORK/access.log
wait_for "$ALOG" "^GET /ws/echo " 3
line=$(grep -m1 "^GET /ws/echo " "$ALOG")
expect_eq "access log: the HTTP/1.1 websocket request logged with 101" "GET /ws/echo HTTP/1.1 code=101" \
  "$(cut -d' ' -f1-4 <<<"${line:-no line for /ws/echo}")"
rx=$(sed -n 's/.* rx=\([0-9]*\).*/\1/p' <<<"$line"); tx=$(sed -n 's/.* tx=\([0-9]*\).*/\1/p' <<<"$line")
check "access log: its byte counts cover the 1 MiB each way through the tunnel (rx=${rx:--} tx=${tx:--})" \
  test "${rx:-0}" -ge 1048576 -a "${tx:-0}" -ge 1048576
wait_for "$ALOG" "^CONNECT .* HTTP/1.1 " 3
line=$(grep -m1 "^CONNECT .* HTTP/1.1 " "$ALOG")
rx=$(sed -n 's/.* rx=\([0-9]*\).*/\1/p' <<<"$line"); tx=$(sed -n 's/.* tx=\([0-9]*\).*/\1/p' <<<"$line")
check "access log: the h1 CONNECT tunnel logged with 200 (${line:-no line})" grep -q " code=200 " <<<"$line"
check "access log: the tunnel's byte counts are the bytes it carried, not zero (rx=${rx:--} tx=${tx:--}, sent ${SENT:-?})" \
  test "${rx:-0}" -ge "${SENT:-1}" -a "${tx:-0}" -ge "${SENT:-1}"

# --- still standing ------------------------------------------------------------------------------------------
for l in legate_plain legate_ws; do
  pid_var="PID_$l"
  if kill -0 "${!pid_var}" 2>/dev/null; then
    kill -TERM "${!pid_var}"; wait "${!pid_var}"; rc=$?
    expect_eq "$l: still running at the end, SIGTERM exits 0" "0" "$rc"
  else
    not_ok "$l: still running at the end"
  fi
  check "$l: no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/$l.log'"
done
finish
