#!/usr/bin/env bash
# The HTTP filter API v2 through tests/filters/sample (a filter written from
# docs/internals/filter-api.md alone), run by legate-sample: the filter's own
# config and the route's per-filter config side by side, request body hooks,
# STOP_AND_BUFFER (the whole body held, then forwarded as one, the waiting
# head edited; a 403 from the held body; 413 past the buffer limit), request
# trailers, and the response head hook, over HTTP/1.1 and HTTP/2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
SAMPLE=$BIN/../tests/filters/legate-sample
[ -x "$SAMPLE" ] || { not_ok "legate-sample is built ($SAMPLE)"; finish; exit 1; }
PY=/usr/bin/python3

P=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port); P_NET=$(free_port)
start_bg up "$PY" "$SRC/tests/peers/blob_server.py" "$P_UP" "$WORK"
wait_port "$P_UP" || { not_ok "upstream started"; finish; exit 1; }

cat >"$WORK/legate.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
static_resources:
  listeners:
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P } }
    per_connection_buffer_limit_bytes: 65536
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sample
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /special/ }
                route: { cluster: up, prefix_rewrite: / }
                typed_per_filter_config:
                  legate.test.sample:
                    "@type": type.googleapis.com/google.protobuf.StringValue
                    value: per-route
              - match: { prefix: / }
                route: { cluster: up }
          http_filters:
          - name: legate.test.sample
            typed_config:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: hello
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  - name: net
    address: { socket_address: { address: 127.0.0.1, port_value: $P_NET } }
    filter_chains:
    - filters:
      - name: legate.test.sample_net
        typed_config: { "@type": type.googleapis.com/google.protobuf.StringValue, value: edge }
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: net
          route_config:
            virtual_hosts:
            - { name: all, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: up } }] }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_UP } } } }] }]
YAML
start_bg legate "$SAMPLE" -c "$WORK/legate.yaml" --concurrency 1
wait_port "$P" 10 || { not_ok "legate-sample started"; cat "$WORK/legate.log"; finish; exit 1; }

head -c 40000 /dev/urandom | base64 -w0 | head -c 40000 >"$WORK/body40k"
head -c 100000 /dev/zero | tr '\0' 'a' >"$WORK/body100k"
{ head -c 20000 /dev/zero | tr '\0' 'b'; printf forbidden; head -c 20000 /dev/zero | tr '\0' 'c'; } >"$WORK/bodyforbidden"
SUM40=$(sha256sum <"$WORK/body40k" | cut -c1-64)

sample_of() { tr -d '\r' | grep -i '^x-sample:' | cut -d' ' -f2; }

for v in 1.1 2; do
  if [ $v = 2 ]; then CV=(--http2-prior-knowledge); else CV=(--http1.1); fi
  H="HTTP/$v:"
  expect_eq "$H the response head hook ran with the filter's config, no route config" \
    "cfg=hello;route=none;body=0;trailers=0" \
    "$(curl -s "${CV[@]}" -o /dev/null -D - "http://127.0.0.1:$P/files/body40k" | sample_of)"
  expect_eq "$H on a route with typed_per_filter_config: both configs, side by side" \
    "cfg=hello;route=per-route;body=0;trailers=0" \
    "$(curl -s "${CV[@]}" -o /dev/null -D - "http://127.0.0.1:$P/special/files/body40k" | sample_of)"
  out=$(curl -s "${CV[@]}" -D "$WORK/h" --data-binary @"$WORK/body40k" "http://127.0.0.1:$P/upload")
  expect_eq "$H the data hook saw the whole body, which reached the upstream intact" \
    "cfg=hello;route=none;body=40000;trailers=0 sha256=$SUM40 bytes=40000" \
    "$(sample_of <"$WORK/h") $(echo "$out" | tr -d '\n')"
  out=$(curl -s "${CV[@]}" -D "$WORK/h" -H 'x-sample-buffer: 1' -H 'transfer-encoding: chunked' \
    --data-binary @"$WORK/body40k" "http://127.0.0.1:$P/upload" 2>&1)
  expect_eq "$H STOP_AND_BUFFER: the body held whole, then forwarded intact" \
    "sha256=$SUM40 bytes=40000" "$(echo "$out" | tr -d '\n')"
  expect_eq "$H ... and the head, which waited, carries what the filter added" \
    "x-seen-held: 40000" "$(tr -d '\r' <"$WORK/h" | grep -i '^x-seen-held:')"
  expect_eq "$H a held body with a forbidden word: 403 from the filter" "403|sample: forbidden body" \
    "$(curl -s "${CV[@]}" -o "$WORK/b" -w '%{http_code}' -H 'x-sample-buffer: 1' --data-binary @"$WORK/bodyforbidden" \
      "http://127.0.0.1:$P/upload")|$(cat "$WORK/b")"
  expect_eq "$H a held body over per_connection_buffer_limit_bytes (64 KiB): 413" "413" \
    "$(curl -s "${CV[@]}" -o /dev/null -w '%{http_code}' -H 'x-sample-buffer: 1' --data-binary @"$WORK/body100k" \
      "http://127.0.0.1:$P/upload")"
  expect_eq "$H without holding, the same body streams through" "bytes=100000" \
    "$(curl -s "${CV[@]}" --data-binary @"$WORK/body100k" "http://127.0.0.1:$P/upload" | grep -o 'bytes=[0-9]*')"
done

# The network filter API through tests/filters/sample/sample_net.c: each
# connection's first bytes held 50 ms by the filter, then released from its
# timer; bytes counted both ways by its read and write hooks; a connection
# that sends the close word closed by it.
# (No wait_port here: its probe would be a connection too. Static listeners
# open together, and $P answered.)
for v in 1.1 2; do
  if [ $v = 2 ]; then CV=(--http2-prior-knowledge); else CV=(--http1.1); fi
  expect_eq "network filter, HTTP/$v: held, then let go: the response arrives intact" "200 $SUM40" \
    "$(curl -s "${CV[@]}" -o "$WORK/nb" -w '%{http_code}' "http://127.0.0.1:$P_NET/files/body40k") $(sha256sum <"$WORK/nb" | cut -c1-64)"
done
code=$(curl -s --http1.1 -o /dev/null -w '%{http_code}' --data-binary "x sample-net-close x" "http://127.0.0.1:$P_NET/upload")
expect_eq "network filter: DP_NET_CLOSE from the read hook closes the connection, no response" "000" "$code"
stats=$(curl -s "http://127.0.0.1:$P_ADMIN/stats")
expect_eq "network filter: on_new_connection ran once per connection" \
  "sample_net.edge.connections: 3" "$(grep '^sample_net.edge.connections:' <<<"$stats")"
expect_eq "network filter: each connection's first bytes were held (not the closed one's)" \
  "sample_net.edge.held: 2" "$(grep '^sample_net.edge.held:' <<<"$stats")"
tx=$(grep '^sample_net.edge.tx_bytes:' <<<"$stats" | awk '{print $2}')
rx=$(grep '^sample_net.edge.rx_bytes:' <<<"$stats" | awk '{print $2}')
check "network filter: the write hook saw both responses (tx_bytes $tx >= 80000)" test "${tx:-0}" -ge 80000
check "network filter: the read hook saw the requests (rx_bytes $rx > 100)" test "${rx:-0}" -gt 100
check "the plain listener (no network filters) did not run it" \
  bash -c "! grep -q '^sample_net.net' <<<'$stats'"
sed -e 's/value: edge }/value: "" }/' "$WORK/legate.yaml" >"$WORK/bad.yaml"
out=$("$SAMPLE" --mode validate -c "$WORK/bad.yaml" 2>&1)
check "a network filter's config error names the field" \
  grep -q 'listeners\[1\].filter_chains\[0\].filters\[0\].typed_config.value: a label is required' <<<"$out"

# Request trailers reach the trailer hook (HTTP/2; the upstream is HTTP/1.1
# without enable_trailers, so they stop at legate).
trailers_out=$("$PY" - "$P" <<'PY'
import socket, sys
import h2.connection, h2.events, h2.config
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection()
c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/upload")])
c.send_data(1, b"abc")
c.send_headers(1, [("x-client-trailer", "1")], end_stream=True)
s.sendall(c.data_to_send())
hdrs = {}
done = False
while not done:
    data = s.recv(65536)
    if not data:
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            hdrs = dict(e.headers)
        if isinstance(e, h2.events.StreamEnded):
            done = True
    s.sendall(c.data_to_send())
print(hdrs.get("x-sample", "none"))
PY
)
expect_eq "HTTP/2 request trailers: the trailer hook saw them" "cfg=hello;route=none;body=3;trailers=1" "$trailers_out"

check "legate-sample is still running" kill -0 "$PID_legate"
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" 0 "$rc"
check "no sanitizer report" bash -c "! grep -q 'Sanitizer' '$WORK/legate.log'"
finish
