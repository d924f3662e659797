#!/usr/bin/env bash
# envoy.filters.network.connection_limit: a filter chain holds at most
# max_connections connections; one more is closed at once and counted, the
# others keep being served, and a freed slot is usable again. Bad configs are
# refused with the field named.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
P=$(free_port); P_ADMIN=$(free_port)
LEGATE_PORT=$P
listener() { # listener MAX_CONNECTIONS_YAML
  cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
static_resources:
  listeners:
  - name: limited
    address: { socket_address: { address: 127.0.0.1, port_value: $P } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
$1
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: limited
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
YAML
}

# Config errors name the field.
listener "          stat_prefix: edge" > "$WORK/nomax.yaml"
out=$("$BIN/legate" -c "$WORK/nomax.yaml" --mode validate 2>&1)
check "max_connections missing: refused, field named" \
  grep -q "filters\[0\].typed_config.max_connections: required" <<<"$out"
listener "          stat_prefix: edge
          max_connections: 2
          delay: 1s" > "$WORK/delay.yaml"
out=$("$BIN/legate" -c "$WORK/delay.yaml" --mode validate 2>&1)
check "delay: refused as not supported" grep -q "typed_config.delay: not supported" <<<"$out"
listener "" | sed -e 's/name: envoy.filters.network.connection_limit$/name: envoy.filters.network.echo/' \
  -e '/connection_limit.v3.ConnectionLimit/d' | awk '!(/^        typed_config:$/ && !seen++)' > "$WORK/other.yaml"
out=$("$BIN/legate" -c "$WORK/other.yaml" --mode validate 2>&1)
check "another network filter before the connection manager: refused" \
  grep -q "filters\[0\].name: only envoy.filters.network.connection_limit may come before" <<<"$out"

listener "          stat_prefix: edge
          max_connections: 2" > "$WORK/legate.yaml"
start_legate legate "$WORK/legate.yaml" -l debug || exit 1

# Two connections that stay open and idle take both slots; a third is
# closed at once without an answer.
python3 - "$P" > "$WORK/hold.out" 2>&1 <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
time.sleep(0.3)
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(3)
s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
try:
    data = s.recv(100)
except Exception as e:
    data = repr(e).encode()
# Closed at once: an EOF, or a reset since the request was never read.
print("third:", "closed" if data in (b"", b"ConnectionResetError(104, 'Connection reset by peer')") else data[:40])
# The held ones still work.
held[0].sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
held[0].settimeout(3)
print("held:", held[0].recv(100).split(b"\r\n")[0].decode())
sys.stdout.flush()
time.sleep(1.5)
PY
holder=$!
# The stats are read while both connections are still held: after the
# holder printed its last line (it then waits 1.5 s), however long Python
# took to start on a loaded machine.
for _ in $(seq 1 100); do grep -q "^held:" "$WORK/hold.out" && break; sleep 0.1; done
stats=$(curl -s "http://127.0.0.1:$P_ADMIN/stats")
wait $holder
check "the third connection is closed without an answer" grep -q "^third: closed" "$WORK/hold.out"
check "the connections within the limit are still served" grep -q "^held: HTTP/1.1 200" "$WORK/hold.out"
check "connection_limit.edge.limited_connections counts it" \
  grep -q "^connection_limit.edge.limited_connections: 1$" <<<"$stats"
check "connection_limit.edge.active_connections is 2 while both are held" \
  grep -q "^connection_limit.edge.active_connections: 2$" <<<"$stats"
sleep 0.3
expect_eq "once they are gone, a new connection is served" "200" \
  "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/")"
stats=$(curl -s "http://127.0.0.1:$P_ADMIN/stats")
check "... and the active count went back down" \
  grep -q "^connection_limit.edge.active_connections: 0$" <<<"$stats"
check "legate says why it closed the connection" grep -q "over the connection limit of filter chain" "$WORK/legate.log"
finish
