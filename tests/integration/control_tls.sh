#!/usr/bin/env bash
# The xDS port over mTLS: legate-control serves ADS with upstream-server.pem
# and requires client certificates from cluster-ca; legate connects with
# default-client.pem (its bootstrap's xds_cluster has an UpstreamTlsContext)
# and serves the demo's mTLS listener from what arrived. A legate whose
# client certificate comes from another CA gets nothing: it stays
# unready and logs the failed stream. xds-probe checks the same at the gRPC
# level, and a key that does not match --tls-cert stops the start.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CTL=$BIN/../control-sample/legate-control
PROBE=$BIN/../tests/tools/xds-probe

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P_CP=$(free_port); P_L=$(free_port); P_UP=$(free_port); P_A=$(free_port); P_A2=$(free_port)
start_nginx_mtls up "$P_UP"
sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
  "$SRC/control-sample/examples/demo.yaml" > control.yaml

# legate.yaml: docs/examples/ads.yaml with our ports, node NODE, and TLS to
# the control plane with the client certificate CLIENT, trusting SERVER_CA.
#   bootstrap OUT NODE ADMIN_PORT CLIENT SERVER_CA
bootstrap() {
  sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $3/" \
    -e "s/id: sidecar-1/id: $2/" "$SRC/docs/examples/ads.yaml" > "$1"
  python3 - "$1" "$C/$4" "$C/$5" <<'PY'
import sys
path, client, ca = sys.argv[1:]
s = open(path).read()
tls = """    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
          tls_certificates:
          - certificate_chain: { filename: %s.pem }
            private_key: { filename: %s.key }
          validation_context:
            trusted_ca: { filename: %s }
""" % (client, client, ca)
assert s.count("    connect_timeout: 1s\n") == 1
open(path, "w").write(s.replace("    connect_timeout: 1s\n", tls, 1))
PY
}

start_bg control "$CTL" -c control.yaml --listen "127.0.0.1:$P_CP" -l debug \
  --tls-cert "$C/upstream-server.pem" --tls-key "$C/upstream-server.key" --tls-client-ca "$C/cluster-ca.pem"
wait_port "$P_CP" 10 || { not_ok "legate-control started"; cat control.log; finish; exit 1; }
check "legate-control says it serves mTLS" grep -q "serving ADS on 127.0.0.1:$P_CP (mTLS), version 1" control.log

# ---- xds-probe: the gRPC view -----------------------------------------------------
probe() { "$PROBE" --server "127.0.0.1:$P_CP" --node probe --type lds --timeout 3 "$@"; }
out=$(probe --ca "$C/upstream-ca.pem" --sni backend.internal --cert "$C/default-client.pem" --key "$C/default-client.key" 2>&1); rc=$?
expect_eq "mTLS with a cluster-ca client certificate: answered" "0 version=1 nonce=1 resources=https" "$rc $out"
out=$(probe --ca "$C/upstream-ca.pem" --sni backend.internal 2>&1); rc=$?
check "TLS without a client certificate: refused (rc $rc)" bash -c "[ $rc != 0 ] && ! grep -q version= <<<'$out'"
out=$(probe --ca "$C/upstream-ca.pem" --sni backend.internal --cert "$C/client.pem" --key "$C/client.key" 2>&1); rc=$?
check "a client certificate from another CA: refused (rc $rc)" bash -c "[ $rc != 0 ] && ! grep -q version= <<<'$out'"
out=$(probe 2>&1); rc=$?
check "plaintext: refused (rc $rc)" bash -c "[ $rc != 0 ] && ! grep -q version= <<<'$out'"
out=$(probe --ca "$C/ca.pem" --sni backend.internal --cert "$C/default-client.pem" --key "$C/default-client.key" 2>&1); rc=$?
check "the client does not trust the server's CA: no answer (rc $rc)" bash -c "[ $rc != 0 ] && ! grep -q version= <<<'$out'"

# ---- legate over mTLS --------------------------------------------------------------
bootstrap legate.yaml sidecar-1 "$P_A" default-client upstream-ca.pem
LEGATE_PORT=$P_L start_legate legate legate.yaml || { cat control.log; finish; exit 1; }
check "legate connects over TLS" grep -q "ADS to 127.0.0.1:$P_CP (TLS), node \"sidecar-1\"" legate.log
body=$(curl_mtls "https://localhost:$P_L/app")
expect_eq "an mTLS request through legate reaches the mTLS upstream (config arrived over mTLS)" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/app proto=HTTP/1.1" "$body"
expect_eq "legate is ready" "200 LIVE" "$(curl -s -w '%{http_code}' -o r.out "http://127.0.0.1:$P_A/ready"; echo " $(cat r.out)")"
check "legate-control saw the node and its client certificate" \
  grep -q 'stream [0-9]* opened by node "sidecar-1" (cluster "demo", peer ipv4:127.0.0.1:[0-9]*, client certificate CN=legate-default-client)' control.log

# ---- a legate with a client certificate from another CA ----------------------------------
bootstrap rogue.yaml rogue "$P_A2" client ca-unused
sed -i "s|trusted_ca: { filename: $C/ca-unused }|trusted_ca: { filename: $C/upstream-ca.pem }|" rogue.yaml
start_bg rogue "$BIN/legate" -c rogue.yaml --concurrency 1 -l info
wait_port "$P_A2" 10
sleep 2
expect_eq "the rogue legate gets no config: /ready stays 503" "503 PRE_INITIALIZING" \
  "$(curl -s -w '%{http_code}' -o r.out "http://127.0.0.1:$P_A2/ready"; echo " $(cat r.out)")"
check "... and logs the failed stream" grep -q "ADS stream to 127.0.0.1:$P_CP closed" rogue.log
check "... legate-control never saw its node" bash -c "! grep -q 'node \"rogue\"' control.log"
check "... and legate-control logged the failed handshake" grep -q 'certificate verify failed' control.log
expect_eq "the good legate still serves" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/still proto=HTTP/1.1" "$(curl_mtls "https://localhost:$P_L/still")"

# ---- the xDS port's own certificate, renewed -------------------------------------------
xserial() { # the serial legate-control presents on a new connection to the xDS port
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_CP" -alpn h2 -servername backend.internal \
    -cert "$C/default-client.pem" -key "$C/default-client.key" 2>/dev/null | openssl x509 -noout -serial | cut -d= -f2
}
file_serial() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
expect_eq "the xDS port presents upstream-server.pem" "$(file_serial "$C/upstream-server.pem")" "$(xserial)"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/us.key.new" -out "$C/us.csr" \
  -subj "/O=legate test/CN=backend.internal" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:backend.internal,DNS:localhost,IP:127.0.0.1\n' > "$C/us.ext"
openssl x509 -req -in "$C/us.csr" -CA "$C/upstream-ca.pem" -CAkey "$C/upstream-ca.key" \
  -set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$C/us.ext" -out "$C/us.pem.new" 2>/dev/null
want=$(file_serial "$C/us.pem.new")
mv "$C/us.key.new" "$C/upstream-server.key"; mv "$C/us.pem.new" "$C/upstream-server.pem"
for _ in $(seq 1 40); do [ "$(xserial)" = "$want" ] && break; sleep 0.05; done
expect_eq "renewed files: the next connection to the xDS port gets the new certificate" "$want" "$(xserial)"
check "... and it is logged" grep -q 'xDS port: .*upstream-server.* changed: new connections get the new certificate' control.log
out=$(probe --ca "$C/upstream-ca.pem" --sni backend.internal --cert "$C/default-client.pem" --key "$C/default-client.key" 2>&1); rc=$?
expect_eq "... an ADS client connects with it" "0 version=1 nonce=1 resources=https" "$rc $out"
cp "$C/server.key" "$C/upstream-server.key"
for _ in $(seq 1 40); do grep -q 'changed but does not load' control.log && break; sleep 0.05; done
check "a key that does not match is refused, naming it" \
  grep -q "xDS port: .* changed but does not load, keeping the certificate in use: --tls-key: $C/upstream-server.key: does not match the first certificate of --tls-cert" control.log
expect_eq "... and the certificate in use stays" "$want" "$(xserial)"
expect_eq "the established legate stream was never disturbed" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/after proto=HTTP/1.1" "$(curl_mtls "https://localhost:$P_L/after")"
check "... (one stream from sidecar-1 all along)" bash -c "[ \$(grep -c 'opened by node \"sidecar-1\"' control.log) = 1 ]"

# ---- startup errors -------------------------------------------------------------
P_X=$(free_port)
out=$("$CTL" -c control.yaml --listen "127.0.0.1:$P_X" --tls-cert "$C/upstream-server.pem" --tls-key "$C/server.key" 2>&1); rc=$?
expect_eq "a key that is not --tls-cert's: exit 1, named" \
  "1 legate-control: error: --tls-key: $C/server.key: does not match the first certificate of --tls-cert" "$rc $out"
out=$("$CTL" -c control.yaml --listen "127.0.0.1:$P_X" --tls-key "$C/server.key" 2>&1); rc=$?
expect_eq "--tls-key alone: exit 1" "1 legate-control: error: --tls-key needs --tls-cert" "$rc $out"
out=$("$CTL" -c control.yaml --listen "127.0.0.1:$P_X" --tls-cert "$C/missing.pem" --tls-key "$C/server.key" 2>&1); rc=$?
expect_eq "a missing --tls-cert: exit 1, named" \
  "1 legate-control: error: --tls-cert: $C/missing.pem: No such file or directory" "$rc $out"

kill -TERM "$PID_legate" "$PID_rogue"; wait "$PID_legate" "$PID_rogue"
kill -TERM "$PID_control"; wait "$PID_control"; rc=$?
expect_eq "legate-control: SIGTERM exits 0" "0" "$rc"
check "no sanitizer report" bash -c '! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" control.log legate.log rogue.log'
check "no key material in the logs" bash -c '! grep -q "PRIVATE KEY" control.log legate.log rogue.log'
finish
