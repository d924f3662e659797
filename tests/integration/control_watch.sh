#!/usr/bin/env bash
# legate-control watches its config file and the files its secrets name:
# an edit in place, an atomic rename (mv) and a renewed certificate each
# become a new version pushed only to the streams whose resources changed;
# an invalid edit is logged naming the field and the last good config stays.
# Then per-node scopes (control-sample/examples/two-nodes.yaml): two node ids
# see different listeners and routes, a node_cluster scope overrides
# endpoints, a scoped edit reaches only its node, and two real legates get
# their own configuration from one control plane.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

CTL=$BIN/../control-sample/legate-control
PROBE=$BIN/../tests/tools/xds-probe

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
cp "$SRC/control-sample/examples/demo.yaml" control.yaml

PORT=$(free_port)
start_bg control "$CTL" -c control.yaml --listen "127.0.0.1:$PORT" -l debug
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
# wait_log FILE PATTERN [SECONDS]: until FILE has a line with PATTERN.
wait_log() {
  local end=$((SECONDS + ${3:-10}))
  while [ $SECONDS -lt $end ]; do
    grep -qF -- "$2" "$1" && return 0
    sleep 0.05
  done
  return 1
}
decode() { # decode MESSAGE FILE.proto < resource.pb: protobuf text format
  (cd "$SRC/proto" && protoc --decode="$1" -I . -I /usr/include "$2")
}
reissue() { # reissue NAME CA CN SAN: a new key and certificate, each moved into place
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key.new" -out "$C/$1.csr" \
    -subj "/O=legate test/CN=$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$4" > "$C/$1.ext"
  openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.pem" -CAkey "$C/$2.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -extfile "$C/$1.ext" -out "$C/$1.pem.new" 2>/dev/null
  mv "$C/$1.key.new" "$C/$1.key"; mv "$C/$1.pem.new" "$C/$1.pem"
}

check "it says what it watches (the config and the 6 files its secrets name)" \
  grep -q 'watching 7 files for changes' control.log

# ---- an edit in place ----------------------------------------------------------
probe --node w-lds --type lds --count 2 >lds1.out 2>&1 &
p_lds=$!
probe --node w-rds --type rds --names local --count 2 --timeout 8 >rds.out 2>/dev/null &
p_rds=$!
wait_lines lds1.out 1; wait_lines rds.out 1
# Written in place (same inode): truncate, then write.
python3 - <<'PY'
s = open("control.yaml").read().replace("port_value: 10443", "port_value: 10445")
with open("control.yaml", "r+") as f:
    f.truncate(0); f.write(s)
PY
wait "$p_lds"; rc=$?
expect_eq "edit in place: a waiting LDS stream gets version 2" \
  "0 version=1 nonce=1 resources=https
version=2 nonce=2 resources=https" "$rc $(cat lds1.out)"
check "edit in place: the change is logged with the file" \
  wait_log control.log 'reloaded control.yaml: serving version 2 (control.yaml changed)'

# ---- an atomic rename ----------------------------------------------------------
probe --node w-lds2 --type lds --count 2 >lds2.out 2>&1 &
p_lds=$!
wait_lines lds2.out 1
sed 's/port_value: 10445/port_value: 10446/' control.yaml > control.yaml.tmp
mv control.yaml.tmp control.yaml
wait "$p_lds"; rc=$?
expect_eq "atomic rename (mv): a waiting LDS stream gets version 3" \
  "0 version=2 nonce=1 resources=https
version=3 nonce=2 resources=https" "$rc $(cat lds2.out)"
mkdir lds-dump
probe --node w-lds3 --type lds --dump lds-dump >/dev/null
lport() { decode envoy.config.listener.v3.Listener envoy/config/listener/v3/listener.proto < "$1" | grep -o 'port_value: [0-9]*'; }
expect_eq "... and it carries the new port" "port_value: 10446" "$(lport lds-dump/https.pb)"

# ---- a renewed certificate file: a new SDS version -----------------------------------
mkdir sds-dump
probe --node w-sds --type sds --names server-cert --count 2 --dump sds-dump >sds.out 2>&1 &
p_sds=$!
probe --node w-ca --type sds --names client-ca --count 2 --timeout 6 >ca.out 2>/dev/null &
p_ca=$!
wait_lines sds.out 1; wait_lines ca.out 1
old_line=$(sed -n 2p "$C/server.pem")
reissue server ca localhost "DNS:localhost,DNS:legate.test,IP:127.0.0.1"
t0=$(date +%s.%N)
wait "$p_sds"; rc=$?
t1=$(date +%s.%N)
sds2=$(sed -n 2p sds.out)
check "renewed certificate: the SDS stream gets a new version (exit $rc, '$sds2')" \
  bash -c "[ $rc = 0 ] && [[ '$sds2' =~ ^version=[45]\ nonce=2\ resources=server-cert$ ]]"
check "... within 2 s of the rename" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 2.0 else 1)"
check "... with the new certificate inline" grep -qF -- "$(sed -n 2p "$C/server.pem")" sds-dump/server-cert.pb
check "... and the new key" grep -qF -- "$(sed -n 2p "$C/server.key")" sds-dump/server-cert.pb
check "... not the old certificate" bash -c "! grep -qF -- '$old_line' sds-dump/server-cert.pb"
check "the change is logged with the file" grep -q 'certs/server.\(pem\|key\) changed: reloading' control.log
wait "$p_ca"; rc=$?
expect_eq "a stream of an unchanged secret gets nothing" "2 version=3 nonce=1 resources=client-ca" "$rc $(cat ca.out)"
out=$(probe --node w-rds-x --type rds --names local)
v_now=$(grep -o 'serving version [0-9]*' control.log | tail -1 | cut -d' ' -f3)
expect_eq "a new stream gets the current version" "version=$v_now nonce=1 resources=local" "$out"
wait "$p_rds"; rc=$?
expect_eq "the route stream got nothing across all of it (its route never changed)" \
  "2 version=1 nonce=1 resources=local" "$rc $(cat rds.out)"

# ---- nothing changed: no new version -------------------------------------------
touch control.yaml
check "touch: the reload finds nothing changed" \
  wait_log control.log "reloaded control.yaml (control.yaml changed): nothing changed, still serving version $v_now"

# ---- an invalid edit -----------------------------------------------------------
cp control.yaml control.good
sed -i 's/port_value: 10446/port_value: banana/' control.yaml
check "invalid edit: one line naming the field, the last good version stays" wait_log control.log \
  "reload failed, still serving version $v_now: control.yaml: listeners[0].address.socket_address.port_value: expected an integer, got \"banana\""
out=$(probe --node w-after-bad --type lds --dump lds-dump)
expect_eq "invalid edit: version $v_now is still served" "version=$v_now nonce=1 resources=https" "$out"
expect_eq "... with the last good port" "port_value: 10446" "$(lport lds-dump/https.pb)"
cp control.good control.yaml

# A key that is not the certificate's: refused here, not by every data plane.
cp "$C/server.key" "$C/server.key.good"
cp "$C/api.key" "$C/server.key"
check "a key that does not match its certificate is refused, naming the field" wait_log control.log \
  "reload failed, still serving version $v_now: control.yaml: secrets[0].tls_certificate.private_key: does not match the first certificate of certificate_chain"
# A missing file, then its return.
rm "$C/server.key"
check "a missing key file is refused, naming the field and the file" wait_log control.log \
  "secrets[0].tls_certificate.private_key.filename: certs/server.key: No such file or directory"
out=$(probe --node w-sds-bad --type sds --names server-cert --dump sds-dump)
expect_eq "meanwhile the last good secret is served" "version=$v_now nonce=1 resources=server-cert" "$out"
check "... the renewed one" grep -qF -- "$(sed -n 2p "$C/server.pem")" sds-dump/server-cert.pb
probe --node w-sds3 --type sds --names server-cert --count 2 --timeout 5 --dump sds-dump >sds3.out 2>&1 &
p_sds=$!
wait_lines sds3.out 1
cp "$C/api.pem" "$C/server.pem"; cp "$C/api.key" "$C/server.key"
wait "$p_sds"; rc=$?
expect_eq "the file back (another valid pair): a new version" "0" "$rc"
check "... carrying it" grep -qF -- "$(sed -n 2p "$C/api.pem")" sds-dump/server-cert.pb
check "no key material in the log" bash -c "! grep -q 'PRIVATE KEY\|$(sed -n 2p "$C/server.key" | cut -c1-20)' control.log"

# ---- per-node scopes -------------------------------------------------------------
cp "$SRC/control-sample/examples/two-nodes.yaml" nodes.yaml
P2=$(free_port); P_E1=$(free_port); P_E2=$(free_port); P_UP=$(free_port)
P_A1=$(free_port); P_A2=$(free_port)
sed -i -e "s/port_value: 10080/port_value: $P_E1/; s/port_value: 10081/port_value: $P_E2/" \
  -e "s/port_value: 10444/port_value: $P_UP/" nodes.yaml
start_bg control2 "$CTL" -c nodes.yaml --listen "127.0.0.1:$P2" -l debug
wait_port "$P2" 10 || { not_ok "legate-control (two-nodes) started"; cat control2.log; }
probe2() { "$PROBE" --server "127.0.0.1:$P2" "$@"; }

mkdir e1 e2 other canary
expect_eq "edge-1 gets its listener" "version=1 nonce=1 resources=http" "$(probe2 --node edge-1 --type lds --dump e1)"
expect_eq "edge-2 gets its listener" "version=1 nonce=1 resources=http" "$(probe2 --node edge-2 --type lds --dump e2)"
expect_eq "... edge-1's on its port" "port_value: $P_E1" "$(lport e1/http.pb)"
expect_eq "... edge-2's on its port" "port_value: $P_E2" "$(lport e2/http.pb)"
expect_eq "another node gets no listener" "version=1 nonce=1 resources=" "$(probe2 --node other --type lds)"
expect_eq "every node gets the global cluster" "version=1 nonce=1 resources=backend" "$(probe2 --node other --type cds)"
probe2 --node edge-1 --type rds --names edge-routes --dump e1 >/dev/null
probe2 --node edge-2 --type rds --names edge-routes --dump e2 >/dev/null
check "edge-1 and edge-2 get different routes under the same name" \
  bash -c "grep -q 'edge-1' e1/edge-routes.pb && grep -q 'edge-2' e2/edge-routes.pb && ! grep -q 'edge-2' e1/edge-routes.pb"
eport() { decode envoy.config.endpoint.v3.ClusterLoadAssignment envoy/config/endpoint/v3/endpoint.proto < "$1/backend.pb" | grep -o 'port_value: [0-9]*'; }
probe2 --node edge-1 --cluster canary --type eds --names backend --dump canary >/dev/null
probe2 --node edge-1 --type eds --names backend --dump e1 >/dev/null
expect_eq "a node_cluster scope replaces the global endpoints of the same name" "port_value: 10445" "$(eport canary)"
expect_eq "... for the nodes of that cluster only" "port_value: $P_UP" "$(eport e1)"

# A change in edge-2's scope reaches edge-2 only.
probe2 --node edge-1 --type rds --names edge-routes --count 2 --timeout 5 >s1.out 2>/dev/null &
s1=$!
probe2 --node edge-2 --type rds --names edge-routes --count 2 >s2.out 2>&1 &
s2=$!
wait_lines s1.out 1; wait_lines s2.out 1
python3 - <<'PY'
s = open("nodes.yaml").read().replace('inline_string: "edge-2\\n"', 'inline_string: "edge-2, v2\\n"')
open("nodes.yaml.tmp", "w").write(s)
PY
mv nodes.yaml.tmp nodes.yaml
wait "$s2"; rc=$?
expect_eq "a scoped edit: edge-2 gets version 2" "0 version=1 nonce=1 resources=edge-routes
version=2 nonce=2 resources=edge-routes" "$rc $(cat s2.out)"
wait "$s1"; rc=$?
expect_eq "... edge-1, whose routes did not change, gets nothing" \
  "2 version=1 nonce=1 resources=edge-routes" "$rc $(cat s1.out)"

# Two real data planes against the one control plane.
python3 -m http.server "$P_UP" --bind 127.0.0.1 >/dev/null 2>&1 &
PIDS+=($!)
for n in 1 2; do
  a=$([ $n = 1 ] && echo "$P_A1" || echo "$P_A2")
  sed -e "s/port_value: 18000/port_value: $P2/; s/port_value: 9901/port_value: $a/" \
    -e "s/id: sidecar-1/id: edge-$n/" "$SRC/docs/examples/ads.yaml" > "legate-$n.yaml"
done
LEGATE_PORT=$P_E1 start_legate legate1 legate-1.yaml || true
LEGATE_PORT=$P_E2 start_legate legate2 legate-2.yaml || true
expect_eq "legate edge-1 serves edge-1's routes" "edge-1" "$(curl -s "http://127.0.0.1:$P_E1/whoami")"
expect_eq "legate edge-2 serves edge-2's routes" "edge-2, v2" "$(curl -s "http://127.0.0.1:$P_E2/whoami")"
wait_port "$P_UP"
expect_eq "both reach the shared cluster" "200 200" \
  "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_E1/"; echo -n ' '; curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_E2/")"
check "edge-1 does not listen on edge-2's port and back (each got its own listener only)" \
  bash -c "[ \"\$(curl -s http://127.0.0.1:$P_E2/whoami)\" != edge-1 ]"

kill -TERM "$PID_control" "$PID_control2"
wait "$PID_control"; rc1=$?
wait "$PID_control2"; rc2=$?
expect_eq "SIGTERM: both exit 0" "0 0" "$rc1 $rc2"
check "no sanitizer report" bash -c '! grep -qE "AddressSanitizer|LeakSanitizer|runtime error" control.log control2.log'
finish
