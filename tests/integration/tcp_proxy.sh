#!/usr/bin/env bash
# envoy.filters.network.tcp_proxy: filter chains that end in tcp_proxy relay
# raw bytes to a cluster. Plain and TLS listeners, an mTLS upstream that
# sees the cluster's client certificate, a multi-MiB transfer with a slow
# reader (back-pressure), half-close, idle_timeout, weighted_clusters,
# max_connect_attempts past a dead host, a missing cluster, connection_limit
# before tcp_proxy, refused configs naming the field, and the same listener
# served over ADS by legate-control.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
PY=/usr/bin/python3
ECHO="$PY $SRC/tests/peers/tcp_echo.py"
CLIENT="$PY $SRC/tests/peers/tcp_client.py"
"$SRC/scripts/gen-certs.sh" "$WORK/certs"
C=$WORK/certs

P_PLAIN=$(free_port); P_TLS=$(free_port); P_IDLE=$(free_port); P_W=$(free_port); P_RETRY=$(free_port)
P_ONCE=$(free_port); P_NOCL=$(free_port); P_LIM=$(free_port); P_ADMIN=$(free_port); P_PM=$(free_port)
P_E1=$(free_port); P_E2=$(free_port); P_EB=$(free_port); P_MTLS=$(free_port); P_DEAD=$(free_port)
LEGATE_PORT=$P_PLAIN

start_bg echo1 $ECHO "$P_E1" one
start_bg echo2 $ECHO "$P_E2" two
start_bg echob $ECHO "$P_EB" three
start_bg echom $ECHO "$P_MTLS" mtls --greet --tls "$C/upstream-server.pem" "$C/upstream-server.key" "$C/cluster-ca.pem"
for p in "$P_E1" "$P_E2" "$P_EB" "$P_MTLS"; do wait_port "$p"; done

# tcp_listener NAME PORT TCP_PROXY_FIELDS [EXTRA_FILTERS] [TRANSPORT_SOCKET]
tcp_listener() {
  cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - ${5:-filters:}
${4:-}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
$3
YAML
}
two_hosts() { # two_hosts NAME PORT1 PORT2
  cat <<YAML
  - name: $1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: $1
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $3 } } }
YAML
}
TLS_DOWN="transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
            validation_context: { trusted_ca: { filename: $C/client-ca.pem } }
      filters:"

cat > "$WORK/legate.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
static_resources:
  listeners:
$(tcp_listener plain "$P_PLAIN" "          stat_prefix: plain
          cluster: echo")
$(tcp_listener tls "$P_TLS" "          stat_prefix: tls
          cluster: mtls_backend" "" "$TLS_DOWN")
$(tcp_listener plain_mtls "$P_PM" "          stat_prefix: plain_mtls
          cluster: mtls_backend")
$(tcp_listener idle "$P_IDLE" "          stat_prefix: idle
          cluster: echo
          idle_timeout: 0.5s")
$(tcp_listener weighted "$P_W" "          stat_prefix: weighted
          weighted_clusters:
            clusters:
            - { name: echo, weight: 1 }
            - { name: echo_two, weight: 3 }")
$(tcp_listener retry "$P_RETRY" "          stat_prefix: retry
          cluster: half_dead
          max_connect_attempts: 2")
$(tcp_listener once "$P_ONCE" "          stat_prefix: once
          cluster: half_dead_too")
$(tcp_listener nocluster "$P_NOCL" "          stat_prefix: nocluster
          cluster: nosuchcluster")
$(tcp_listener limited "$P_LIM" "          stat_prefix: limited
          cluster: echo_three" "      - name: envoy.filters.network.connection_limit
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: lim
          max_connections: 1")
  clusters:
$(static_cluster echo "$P_E1")
$(static_cluster echo_two "$P_E2")
$(static_cluster echo_three "$P_EB")
$(two_hosts half_dead "$P_DEAD" "$P_E1")
$(two_hosts half_dead_too "$P_DEAD" "$P_E1")
$(static_cluster mtls_backend "$P_MTLS")
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
          tls_certificates:
          - certificate_chain: { filename: $C/upstream-client.pem }
            private_key: { filename: $C/upstream-client.key }
          validation_context:
            trusted_ca: { filename: $C/upstream-ca.pem }
            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: backend.internal } }]
YAML
out=$("$BIN/legate" -c "$WORK/legate.yaml" --mode validate 2>&1)
check "the config validates" test $? -eq 0 || echo "$out"
start_legate legate "$WORK/legate.yaml" -l debug || exit 1
for p in "$P_TLS" "$P_PM" "$P_IDLE" "$P_W" "$P_RETRY" "$P_LIM"; do wait_port "$p"; done
stats() { curl -s "http://127.0.0.1:$P_ADMIN/stats"; }
stat() { stats | awk -v n="$1:" '$1 == n { v = $2 } END { print v + 0 }'; }
sleep 0.3 # wait_port's probes are counted too: take them out below

# (1) plain TCP, both ways: 64 MiB through a reader that reads nothing for
# 2 s, more than every socket buffer on the way holds: back-pressure.
N=67108864
cx0=$(stat tcp.plain.downstream_cx_total); rx0=$(stat tcp.plain.downstream_cx_rx_bytes_total)
tx0=$(stat tcp.plain.downstream_cx_tx_bytes_total)
out=$($CLIENT echo "$P_PLAIN" $N --stall 2)
check "plain: 64 MiB echoed back intact through a stalled reader" grep -q "^echo ok $N$" <<<"$out"
check "plain: then the client's FIN reaches the upstream, and its answer comes back" \
  grep -q "^last: EOF after $N bytes at one$" <<<"$out"
expect_eq "tcp.plain.downstream_cx_total" "1" "$(($(stat tcp.plain.downstream_cx_total) - cx0))"
expect_eq "tcp.plain.downstream_cx_rx_bytes_total: every byte the client sent" "$N" \
  "$(($(stat tcp.plain.downstream_cx_rx_bytes_total) - rx0))"
expect_eq "tcp.plain.downstream_cx_tx_bytes_total: the echo and the last line" \
  "$((N + $(printf "EOF after $N bytes at one\n" | wc -c)))" "$(($(stat tcp.plain.downstream_cx_tx_bytes_total) - tx0))"
paused=$(stat tcp.plain.downstream_flow_control_paused_reading_total)
check "back-pressure: reading the client paused while the upstream was full ($paused times)" test "${paused:-0}" -gt 0
expect_eq "... and resumed as often" "$paused" "$(stat tcp.plain.downstream_flow_control_resumed_reading_total)"
check "the cluster's upstream_cx_total counts the connection" test "$(stat cluster.echo.upstream_cx_total)" -ge 1

# (2) TLS with a required client certificate -> mTLS upstream with the
# cluster's own certificate.
out=$($CLIENT echo "$P_TLS" 1048576 --greet --tls "$C/ca.pem" "$C/client.pem" "$C/client.key")
check "TLS listener, mTLS upstream: the upstream saw the cluster's client certificate" \
  grep -q "^greeting: hello legate-cluster-backend at mtls$" <<<"$out"
check "TLS: 1 MiB echoed intact" grep -q "^echo ok 1048576$" <<<"$out"
expect_eq "plain listener -> mTLS upstream: the client's FIN goes on as the upstream's close_notify and FIN, the answer comes back" \
  "read: hello legate-cluster-backend at mtls|pingEOF after 4 bytes at mtls|" "$($CLIENT halfclose "$P_PM")"
out=$($PY - "$P_TLS" "$C/ca.pem" 2>&1 <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5), server_hostname="localhost")
    s.sendall(b"x"); print("read", s.recv(10))
except (OSError, ssl.SSLError) as e:
    print("refused", type(e).__name__)
PY
)
check "TLS: a client without a certificate is refused by the handshake" grep -q "^refused" <<<"$out"

# (3) half-close: the client shuts down its write side and still gets the reply.
expect_eq "half-close: the reply after the client's FIN arrives" "read: pingEOF after 4 bytes at one|" \
  "$($CLIENT halfclose "$P_PLAIN")"

# (4) idle_timeout.
out=$($CLIENT idle "$P_IDLE")
check "idle_timeout 0.5s: the echo, then the quiet connection is closed" \
  grep -Eq "^closed after (0\.[4-9]|[12]\.[0-9]) s$" <<<"$out" || echo "$out"
expect_eq "tcp.idle.idle_timeout counts it" "1" "$(stat tcp.idle.idle_timeout)"
expect_eq "the plain listener (default idle_timeout 1h) closed none" "0" "$(stat tcp.plain.idle_timeout)"

# (5) weighted_clusters 1:3.
out=$($CLIENT who "$P_W" 60)
one=$(awk '$1 == "one" { print $2 }' <<<"$out"); two=$(awk '$1 == "two" { print $2 }' <<<"$out")
check "weighted_clusters: both clusters get connections, the weight-3 one more ($one vs $two)" \
  test "${one:-0}" -gt 0 -a "${two:-0}" -gt "${one:-0}" -a $((${one:-0} + ${two:-0})) -eq 60

# (6) max_connect_attempts: the cluster's first host is dead.
out=$($CLIENT who "$P_RETRY" 20)
expect_eq "max_connect_attempts 2: every connection reaches the live host" "one 20" "$out"
check "... after connect failures the cluster counted" test "$(stat cluster.half_dead.upstream_cx_connect_fail)" -gt 0
out=$($CLIENT who "$P_ONCE" 20)
failed=$(awk '$1 == "failed" { print $2 }' <<<"$out")
check "max_connect_attempts 1 (default): connections to the dead host are closed (${failed:-0} of 20)" \
  test "${failed:-0}" -gt 0
expect_eq "tcp.once.upstream_connect_attempts_exceeded counts them" "${failed:-0}" \
  "$(stat tcp.once.upstream_connect_attempts_exceeded)"

# A cluster that does not exist: the connection is closed, counted as no route.
expect_eq "no such cluster: the connection is closed at once" "failed 1" "$($CLIENT who "$P_NOCL" 1)"
expect_eq "tcp.nocluster.downstream_cx_no_route" "1" "$(stat tcp.nocluster.downstream_cx_no_route)"

# (8) connection_limit before tcp_proxy.
out=$($PY - "$P_LIM" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
a = socket.create_connection(("127.0.0.1", port)); a.sendall(b"first"); a.settimeout(5)
print("first:", a.recv(10).decode())
b = socket.create_connection(("127.0.0.1", port)); b.settimeout(5)
try:
    b.sendall(b"second"); d = b.recv(10)
except OSError:
    d = b""
print("second:", "closed" if d == b"" else d.decode())
a.sendall(b"again"); print("first again:", a.recv(10).decode())
PY
)
check "connection_limit + tcp_proxy: the first connection is proxied" grep -q "^first: first$" <<<"$out"
check "... one over the limit is closed before it reaches the upstream" grep -q "^second: closed$" <<<"$out"
check "... and the first goes on" grep -q "^first again: again$" <<<"$out"
expect_eq "connection_limit.lim.limited_connections" "1" "$(stat connection_limit.lim.limited_connections)"
expect_eq "tcp.limited.downstream_cx_total: only the admitted one (and wait_port's probe)" "2" \
  "$(stat tcp.limited.downstream_cx_total)"

# (7) configs that are refused, with the field named.
refused() { # refused DESCRIPTION PATTERN TCP_PROXY_FIELDS [EXTRA_FILTERS]
  cat > "$WORK/bad.yaml" <<YAML
static_resources:
  listeners:
$(tcp_listener bad "$P_PLAIN" "$3" "${4:-}")
  clusters:
$(static_cluster echo "$P_E1")
YAML
  local o
  o=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
  if [ $? -ne 0 ] && grep -q -- "$2" <<<"$o"; then ok "$1"; else not_ok "$1"; echo "     got: $o"; fi
}
refused "no cluster: refused" \
  "listeners\[0\].filter_chains\[0\].filters\[0\].typed_config.cluster: required (or weighted_clusters)" \
  "          stat_prefix: x"
refused "no stat_prefix: refused" "filters\[0\].typed_config.stat_prefix: required" "          cluster: echo"
refused "an unknown field: refused" 'unknown field "clustr"' "          stat_prefix: x
          clustr: echo"
refused "tunneling_config: refused by name" "filters\[0\].typed_config.tunneling_config: not supported" \
  "          stat_prefix: x
          cluster: echo
          tunneling_config: { hostname: example.com:443 }"
refused "access_log: refused by name" "filters\[0\].typed_config.access_log: not supported" \
  "          stat_prefix: x
          cluster: echo
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /dev/null"
refused "a weight of 0: refused" "typed_config.weighted_clusters.clusters\[1\].weight: must be at least 1" \
  "          stat_prefix: x
          weighted_clusters: { clusters: [{ name: echo, weight: 1 }, { name: echo, weight: 0 }] }"
refused "max_connect_attempts 0: refused" "typed_config.max_connect_attempts: must be at least 1" \
  "          stat_prefix: x
          cluster: echo
          max_connect_attempts: 0"
refused "hash_policy: refused by name" "typed_config.hash_policy: not supported" \
  "          stat_prefix: x
          cluster: echo
          hash_policy: [{ source_ip: {} }]"
refused "tcp_proxy before another filter: refused" \
  "filters\[0\].name: envoy.filters.network.tcp_proxy is a terminal filter: it must be the last one" \
  "          stat_prefix: x
          cluster: echo" "      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: y
          cluster: echo"

# The sample network filter (tests/filters/sample/sample_net.c, written from
# the filter API doc alone) before tcp_proxy, in legate-sample: it holds each
# connection's first bytes for 50 ms, sees both directions, and closes a
# connection that sends "sample-net-close".
SAMPLE=$BIN/../tests/filters/legate-sample
if [ -x "$SAMPLE" ]; then
  P_SN=$(free_port); P_ADMIN3=$(free_port)
  cat > "$WORK/sample.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN3 } } }
static_resources:
  listeners:
$(tcp_listener sample "$P_SN" "          stat_prefix: sample
          cluster: echo" "      - name: legate.test.sample_net
        typed_config: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: tp }")
  clusters:
$(static_cluster echo "$P_E1")
YAML
  start_bg sample "$SAMPLE" -c "$WORK/sample.yaml" --concurrency 1
  if wait_port "$P_SN" 10; then
    out=$($CLIENT echo "$P_SN" 1048576)
    check "sample_net + tcp_proxy: 1 MiB echoed intact after the filter let the held bytes go" \
      grep -q "^echo ok 1048576$" <<<"$out"
    check "sample_net + tcp_proxy: half-close still works" grep -q "^last: EOF after 1048576 bytes at one$" <<<"$out"
    expect_eq "sample_net + tcp_proxy: DP_NET_CLOSE from the read hook closes it" "read: " \
      "$($PY - "$P_SN" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"x sample-net-close x")
try:
    d = s.recv(100)
except OSError:
    d = b""
print("read:", d.decode())
PY
)"
    sstats=$(curl -s "http://127.0.0.1:$P_ADMIN3/stats")
    rx=$(awk '$1 == "sample_net.tp.rx_bytes:" { print $2 }' <<<"$sstats")
    tx=$(awk '$1 == "sample_net.tp.tx_bytes:" { print $2 }' <<<"$sstats")
    check "sample_net's read hook saw what the clients sent ($rx bytes)" test "${rx:-0}" -ge 1048576
    check "sample_net's write hook saw what tcp_proxy sent them ($tx bytes)" test "${tx:-0}" -ge 1048576
    check "sample_net held the first bytes" grep -q "^sample_net.tp.held: [1-9]" <<<"$sstats"
  else
    not_ok "legate-sample started"; tail -5 "$WORK/sample.log"
  fi
else
  not_ok "legate-sample is built ($SAMPLE)"
fi

# The same over ADS: legate-control serves a tcp_proxy listener and an EDS cluster.
CONTROL=$BIN/../control-sample/legate-control
P_CP=$(free_port); P_ADS=$(free_port); P_ADMIN2=$(free_port)
cat > "$WORK/control.yaml" <<YAML
listeners:
$(tcp_listener ads_tcp "$P_ADS" "          stat_prefix: ads
          cluster: echo_eds")
clusters:
- name: echo_eds
  type: EDS
  connect_timeout: 1s
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: V3 } }
endpoints:
- cluster_name: echo_eds
  endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_E2 } } } }] }]
YAML
sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN2/" \
  "$SRC/docs/examples/ads.yaml" > "$WORK/ads.yaml"
start_bg control "$CONTROL" -c "$WORK/control.yaml" --listen "127.0.0.1:$P_CP" -l debug
wait_port "$P_CP"
start_bg legate_ads "$BIN/legate" -c "$WORK/ads.yaml" --concurrency 1 -l debug
if wait_port "$P_ADS" 10; then
  expect_eq "ADS: a tcp_proxy listener from legate-control relays to the EDS cluster" \
    "read: pingEOF after 4 bytes at two|" "$($CLIENT halfclose "$P_ADS")"
else
  not_ok "ADS: the tcp_proxy listener opened"; tail -20 "$WORK/legate_ads.log"
fi
check "ADS: legate ACKed the listener" grep -q "LDS version 1 applied" "$WORK/legate_ads.log"

# A relayed connection across updates: its host leaving the cluster (EDS)
# does not cut it (Envoy's default); the cluster going (CDS) does.
$PY - "$P_ADS" "$WORK" > "$WORK/held.out" 2>&1 <<'PY' &
import os, socket, sys, time
port, work = int(sys.argv[1]), sys.argv[2]
def wait(f):
    for _ in range(300):
        if os.path.exists(os.path.join(work, f)):
            return
        time.sleep(0.05)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"a"); print("before:", s.recv(10).decode(), flush=True)
wait("step2")
s.sendall(b"b"); print("host gone:", s.recv(10).decode(), flush=True)
wait("step3")
try:
    d = s.recv(100)
except OSError:
    d = b""
print("cluster gone:", "closed" if d == b"" else d, flush=True)
PY
held=$!
for _ in $(seq 1 100); do grep -q "^before:" "$WORK/held.out" && break; sleep 0.05; done
sed -i "s/port_value: $P_E2 }/port_value: $P_E1 }/" "$WORK/control.yaml"
kill -HUP "$PID_control"
for _ in $(seq 1 100); do grep -q "EDS version 2 applied" "$WORK/legate_ads.log" && break; sleep 0.05; done
check "ADS: the cluster's only host changed (EDS version 2)" grep -q "EDS version 2 applied" "$WORK/legate_ads.log"
touch "$WORK/step2"
for _ in $(seq 1 100); do grep -q "^host gone:" "$WORK/held.out" && break; sleep 0.05; done
expect_eq "ADS: new connections go to the new host" "read: pingEOF after 4 bytes at one|" "$($CLIENT halfclose "$P_ADS")"
# cp_update KEY TAIL WAIT: control.yaml from its line "KEY:" on becomes
# TAIL; legate-control reloads; wait until legate's log matches WAIT.
cp_update() {
  $PY - "$WORK/control.yaml" "$1" "$2" <<'PY'
import sys
p, key, tail = sys.argv[1:]
s = open(p).read()
open(p, "w").write(s[:s.index("\n" + key + ":") + 1] + tail)
PY
  kill -HUP "$PID_control"
  for _ in $(seq 1 100); do grep -q "$3" "$WORK/legate_ads.log" && break; sleep 0.05; done
}
# No host at all: a new connection is closed (Envoy: no healthy upstream).
cp_update endpoints "endpoints:
- { cluster_name: echo_eds, endpoints: [] }
" "EDS version 3 applied"
expect_eq "ADS: a cluster without hosts: the connection is closed at once" "failed 1" "$($CLIENT who "$P_ADS" 1)"
check "... and legate says why" grep -q "cluster echo_eds: no healthy upstream: closing" "$WORK/legate_ads.log"
cp_update clusters "clusters: []
endpoints: []
" "CDS version [0-9]* applied (0 resource"
touch "$WORK/step3"
wait $held
check "ADS: a relayed connection survives its host leaving the cluster" grep -q "^host gone: b$" "$WORK/held.out"
check "ADS: ... and is closed when the cluster is removed" grep -q "^cluster gone: closed$" "$WORK/held.out"
expect_eq "ADS: a new connection to the removed cluster is closed, counted as no route" "failed 1" \
  "$($CLIENT who "$P_ADS" 1)"
check "ADS: legate is still running" kill -0 "$PID_legate_ads"

check "legate is still running" kill -0 "$PID_legate"
check "legate logged the proxied connections" grep -q "tcp_proxy.*connected to 127.0.0.1:$P_E1 (cluster echo)" "$WORK/legate.log"
finish
