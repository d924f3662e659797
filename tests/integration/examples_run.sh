#!/usr/bin/env bash
# The shipped example bootstraps, run for real (only their ports changed),
# so the docs that quote them stay true.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P1=$(free_port); P2=$(free_port); P3=$(free_port); P4=$(free_port); P5=$(free_port)

start_bg up-a python3 "$SRC/tests/integration/upstream.py" "$P3" app-1
start_bg up-b python3 "$SRC/tests/integration/upstream.py" "$P4" app-2
start_nginx_mtls up "$P5"
wait_port "$P3"; wait_port "$P4"

stop_legate() { kill -TERM "$PID_legate"; wait "$PID_legate"; }

# static-mtls.yaml: 8443 -> P1, admin 9901 -> P2, upstream 9443 -> nginx
sed -e "s/port_value: 8443/port_value: $P1/; s/port_value: 9901/port_value: $P2/; s/port_value: 9443/port_value: $P5/" \
  "$SRC/docs/examples/static-mtls.yaml" > static-mtls.yaml
LEGATE_PORT=$P1 start_legate legate static-mtls.yaml || { finish; exit 1; }
expect_eq "static-mtls.yaml: a client with a certificate reaches the mTLS upstream with the cluster's certificate" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/orders proto=HTTP/1.1" \
  "$(curl_mtls "https://localhost:$P1/orders")"
expect_eq "static-mtls.yaml: no client certificate, no response" "000" \
  "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" "https://localhost:$P1/orders")"
stop_legate

# plaintext.yaml: 8080 -> P1, STRICT_DNS localhost:8081/8082 -> the two upstreams
sed -e "s/port_value: 8080/port_value: $P1/; s/port_value: 8081/port_value: $P3/; s/port_value: 8082/port_value: $P4/" \
  "$SRC/docs/examples/plaintext.yaml" > plaintext.yaml
LEGATE_PORT=$P1 start_legate legate plaintext.yaml || { finish; exit 1; }
expect_eq "plaintext.yaml: direct response" "pong" "$(curl -s "http://127.0.0.1:$P1/ping")"
seen=$(for i in $(seq 1 30); do curl -s "http://127.0.0.1:$P1/api/x"; done | cut -d' ' -f1,3 | sort -u | tr '\n' ' ')
expect_eq "plaintext.yaml: both DNS endpoints, prefix rewritten" "app-1 /x app-2 /x " "$seen"
stop_legate

# sni-gateway.json: 443 -> P1, backends 8081/8082 -> the two upstreams
sed -e "s/\"portValue\": 443\b/\"portValue\": $P1/; s/\"portValue\": 8081/\"portValue\": $P3/; s/\"portValue\": 8082/\"portValue\": $P4/" \
  "$SRC/docs/examples/sni-gateway.json" > sni-gateway.json
LEGATE_PORT=$P1 start_legate legate sni-gateway.json || { finish; exit 1; }
expect_eq "sni-gateway.json: shop.example.com routed to its backend" "app-1 GET / bytes=0" \
  "$(curl -s --cacert "$C/ca.pem" --resolve "shop.example.com:$P1:127.0.0.1" "https://shop.example.com:$P1/")"
out=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" --resolve "api.example.com:$P1:127.0.0.1" "https://api.example.com:$P1/")
expect_eq "sni-gateway.json: api.example.com requires a partner certificate" "000" "$out"
stop_legate

finish
