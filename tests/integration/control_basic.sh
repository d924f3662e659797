#!/usr/bin/env bash
# legate-control serves control-sample/examples/demo.yaml over ADS, as seen
# by xds-probe: state-of-the-world answers per type, ACKs that get no
# answer, NACKs logged, SIGHUP reloads (good and bad), secrets served
# inline, startup errors naming the field, and a clean SIGTERM.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

CTL=$BIN/../control-sample/legate-control
PROBE=$BIN/../tests/tools/xds-probe
LDS_URL=type.googleapis.com/envoy.config.listener.v3.Listener
CDS_URL=type.googleapis.com/envoy.config.cluster.v3.Cluster

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
cp "$SRC/control-sample/examples/demo.yaml" control.yaml

PORT=$(free_port)
start_bg control "$CTL" -c control.yaml --listen "127.0.0.1:$PORT" \
  --log-requests requests.jsonl -l debug
wait_port "$PORT" 10 || { not_ok "legate-control started"; cat control.log; finish; exit 1; }

probe() { "$PROBE" --server "127.0.0.1:$PORT" "$@"; }

# wait_lines FILE N [SECONDS]: until FILE has N lines.
wait_lines() {
  local end=$((SECONDS + ${3:-10}))
  while [ $SECONDS -lt $end ]; do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
# wait_log PATTERN [SECONDS]: until control.log has a line matching PATTERN.
wait_log() {
  local end=$((SECONDS + ${2:-10}))
  while [ $SECONDS -lt $end ]; do
    grep -qF -- "$1" control.log && return 0
    sleep 0.05
  done
  return 1
}

# ---- one type at a time ----------------------------------------------------
out=$(probe --node t-lds --type lds); rc=$?
expect_eq "LDS exits 0" "0" "$rc"
expect_eq "LDS is wildcard: the listener" "version=1 nonce=1 resources=https" "$out"

out=$(probe --node t-rds --type rds --names local); rc=$?
expect_eq "RDS local exits 0" "0" "$rc"
expect_eq "RDS returns local" "version=1 nonce=1 resources=local" "$out"

mkdir sds-dump
out=$(probe --node t-sds --type sds --names server-cert --dump sds-dump); rc=$?
expect_eq "SDS server-cert exits 0" "0" "$rc"
expect_eq "SDS returns only server-cert" "version=1 nonce=1 resources=server-cert" "$out"
check "SDS serves the certificate inline" grep -qF -- "$(sed -n 2p certs/server.pem)" sds-dump/server-cert.pb
check "SDS serves the key inline" grep -qF -- "$(sed -n 2p certs/server.key)" sds-dump/server-cert.pb
check "SDS sends no file names" bash -c '! grep -q "certs/server" sds-dump/server-cert.pb'

out=$(probe --node t-sds2 --type sds --names server-cert,no-such-secret,client-ca); rc=$?
expect_eq "SDS with an unknown name exits 0" "0" "$rc"
expect_eq "SDS returns the names that exist" "version=1 nonce=1 resources=client-ca,server-cert" "$out"

out=$(probe --node t-cds --type cds); rc=$?
expect_eq "CDS exits 0" "0" "$rc"
expect_eq "CDS is wildcard: backend" "version=1 nonce=1 resources=backend" "$out"

out=$(probe --node t-eds --type eds --names backend); rc=$?
expect_eq "EDS backend exits 0" "0" "$rc"
expect_eq "EDS returns backend" "version=1 nonce=1 resources=backend" "$out"

# ---- ACK and NACK ----------------------------------------------------------
out=$(probe --node t-ack --type lds --count 2 --timeout 2 2>ack.err); rc=$?
expect_eq "an ACK gets no second response (probe times out)" "2" "$rc"
expect_eq "an ACK gets no second response (one line)" "version=1 nonce=1 resources=https" "$out"
expect_eq "request log: the initial request" \
  "{\"node\":\"t-ack\",\"type_url\":\"$LDS_URL\",\"version_info\":\"\",\"response_nonce\":\"\",\"resource_names\":[],\"error_detail\":\"\"}" \
  "$(grep '"node":"t-ack"' requests.jsonl | sed -n 1p)"
expect_eq "request log: the ACK with version and nonce" \
  "{\"node\":\"t-ack\",\"type_url\":\"$LDS_URL\",\"version_info\":\"1\",\"response_nonce\":\"1\",\"resource_names\":[],\"error_detail\":\"\"}" \
  "$(grep '"node":"t-ack"' requests.jsonl | sed -n 2p)"

out=$(probe --node t-nack --type cds --nack 'cluster "backend": bad'); rc=$?
expect_eq "NACK probe exits 0" "0" "$rc"
expect_eq "request log: the NACK with its error_detail" \
  "{\"node\":\"t-nack\",\"type_url\":\"$CDS_URL\",\"version_info\":\"\",\"response_nonce\":\"1\",\"resource_names\":[],\"error_detail\":\"cluster \\\"backend\\\": bad\"}" \
  "$(grep '"node":"t-nack"' requests.jsonl | sed -n 2p)"
check "the NACK is logged as a warning" \
  wait_log '[warning][control] NACK from node t-nack for Cluster version 1: cluster "backend": bad'

# ---- many streams at once ----------------------------------------------------
MANY=()
for i in $(seq 1 20); do
  probe --node "t-many-$i" --type sds --names client-ca >"many-$i.out" 2>&1 &
  MANY+=($!)
done
bad=0
for i in $(seq 1 20); do
  wait "${MANY[$((i - 1))]}" || bad=$((bad + 1))
  [ "$(cat "many-$i.out")" == "version=1 nonce=1 resources=client-ca" ] || bad=$((bad + 1))
done
expect_eq "20 concurrent streams all answered" "0" "$bad"

# ---- reloads -----------------------------------------------------------------
# A bad edit is logged, naming the field, and version 1 stays.
sed 's/port_value: 10443/port_value: banana/' "$SRC/control-sample/examples/demo.yaml" >control.yaml
kill -HUP "$PID_control"
check "bad reload logs the field" wait_log \
  'reload failed, still serving version 1: control.yaml: listeners[0].address.socket_address.port_value: expected an integer, got "banana"'
out=$(probe --node t-after-bad --type lds); rc=$?
expect_eq "after a bad reload version 1 is served" "0 version=1 nonce=1 resources=https" "$rc $out"

# A good edit reaches waiting streams subscribed to what changed (the
# listener), and not those whose resources stayed the same (the route).
probe --node t-push --type lds --count 2 >push-lds.out 2>&1 &
push_lds=$!
probe --node t-push-rds --type rds --names local --count 2 --timeout 4 >push-rds.out 2>&1 &
push_rds=$!
wait_lines push-lds.out 1
wait_lines push-rds.out 1
sed 's/port_value: 10443/port_value: 10445/' "$SRC/control-sample/examples/demo.yaml" >control.yaml
kill -HUP "$PID_control"
wait "$push_lds"; rc=$?
expect_eq "waiting LDS probe gets version 2 (exit)" "0" "$rc"
expect_eq "waiting LDS probe gets version 2" \
  "version=1 nonce=1 resources=https
version=2 nonce=2 resources=https" "$(cat push-lds.out)"
wait "$push_rds"; rc=$?
expect_eq "unchanged route is not resent (exit)" "2" "$rc"
expect_eq "unchanged route is not resent" "version=1 nonce=1 resources=local" "$(head -n 1 push-rds.out)"
check "reload is logged" wait_log 'reloaded control.yaml: serving version 2'
out=$(probe --node t-after-good --type lds); rc=$?
expect_eq "a new stream gets version 2" "0 version=2 nonce=1 resources=https" "$rc $out"

# Every stream opened was closed again, dropped ones included.
end=$((SECONDS + 5))
while :; do
  opened=$(grep -c '\] stream [0-9]* opened' control.log)
  closed=$(grep -c '\] stream [0-9]* closed' control.log)
  [ "$opened" == "$closed" ] || [ $SECONDS -ge $end ] && break
  sleep 0.05
done
expect_eq "every stream was cleaned up" "$opened" "$closed"

# ---- SIGTERM -----------------------------------------------------------------
# With a stream still open: shutdown cancels it.
probe --node t-term --type cds --count 2 >term.out 2>term.err &
term_probe=$!
wait_lines term.out 1
kill -TERM "$PID_control"
wait "$PID_control"; rc=$?
expect_eq "SIGTERM exits 0" "0" "$rc"
wait "$term_probe"; rc=$?
expect_eq "the open stream ends with an error status" "1" "$rc"
check "the open stream was closed" grep -q 'stream [0-9]* closed (node "t-term"' control.log
check "no sanitizer report" bash -c '! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" control.log'
check "no key material in the log" bash -c "! grep -qF -- \"\$(sed -n 2p certs/server.key)\" control.log"

# ---- startup errors ----------------------------------------------------------
mv certs/server.key certs/server.key.gone
out=$("$CTL" -c "$SRC/control-sample/examples/demo.yaml" --listen "127.0.0.1:$PORT" 2>&1); rc=$?
expect_eq "missing key file exits 1" "1" "$rc"
expect_eq "missing key file message" \
  "legate-control: error: $SRC/control-sample/examples/demo.yaml: secrets[0].tls_certificate.private_key.filename: certs/server.key: No such file or directory" \
  "$out"
mv certs/server.key.gone certs/server.key

out=$("$CTL" -c "$WORK/missing.yaml" 2>&1); rc=$?
expect_eq "missing config exits 1" "1" "$rc"
expect_eq "missing config message" \
  "legate-control: error: $WORK/missing.yaml: No such file or directory" "$out"

out=$("$CTL" --version); rc=$?
expect_eq "--version" "0 legate-control version 0.1.0" "$rc $out"

finish
