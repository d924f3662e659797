#!/usr/bin/env bash
# An HTTP/2 upstream that refuses a request without processing it (RST_STREAM
# REFUSED_STREAM, or a GOAWAY below its stream id): legate sends it again,
# once, with its body, on a connection that takes it (RFC 9113 8.7); the
# client sees only the answer. tests/peers/h2_refuser.py is the upstream.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
PY=/usr/bin/python3
"$PY" -c 'import h2' 2>/dev/null || { not_ok "python3-h2 is installed"; finish; exit 1; }

P=$(free_port); P_RST=$(free_port); P_GOAWAY=$(free_port)
LEGATE_PORT=$P
start_bg up-rst "$PY" "$SRC/tests/peers/h2_refuser.py" "$P_RST" rst
start_bg up-goaway "$PY" "$SRC/tests/peers/h2_refuser.py" "$P_GOAWAY" goaway
wait_port "$P_RST" && wait_port "$P_GOAWAY" || { not_ok "upstreams started"; finish; exit 1; }

h2c() { static_cluster "$1" "$2" h2; } # h2c NAME PORT
cat >"$WORK/legate.yaml" <<YAML
static_resources:
  listeners:
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: refused
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /rst/ }
                route: { cluster: rst }
              - match: { prefix: /goaway/ }
                route: { cluster: goaway }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
$(h2c rst "$P_RST")
$(h2c goaway "$P_GOAWAY")
YAML
start_legate legate "$WORK/legate.yaml" --concurrency 1 || { finish; exit 1; }

for v in 1.1 2; do
  if [ $v = 2 ]; then CV=(--http2-prior-knowledge); else CV=(--http1.1); fi
  for m in rst goaway; do
    n=$([ $v = 1.1 ] && echo 2 || echo 4)
    code=$(curl -s "${CV[@]}" -m 5 -o "$WORK/b" -w '%{http_code}' --data-binary 'hello world' "http://127.0.0.1:$P/$m/x")
    expect_eq "HTTP/$v client, upstream $m: a POST sent again with its body, one answer" \
      "200 attempt $n body=11" "$code $(cat "$WORK/b")"
  done
done
check "legate is still running" kill -0 "$PID_legate"
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" 0 "$rc"
check "no sanitizer report" bash -c "! grep -q 'Sanitizer' '$WORK/legate.log'"
finish
