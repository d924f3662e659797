#!/usr/bin/env bash
# Client CA rotation with overlap, as operators do it, each step one change
# at the control plane: trust old+new, move clients to the new CA, drop the
# old one. Clients of the CA being kept never see a failure.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CONTROL=$BIN/../control-sample/legate-control

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P_CP=$(free_port); P_L=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port)
start_nginx_mtls up "$P_UP"
sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
  "$SRC/control-sample/examples/demo.yaml" > control.yaml
sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$SRC/docs/examples/ads.yaml" > legate.yaml
start_bg control "$CONTROL" -c control.yaml --listen "127.0.0.1:$P_CP"
wait_port "$P_CP"
# One worker, so that the chains it remembers are the ones the steps below
# look at.
LEGATE_PORT=$P_L start_legate legate legate.yaml --concurrency 1 || { finish; exit 1; }

# A new client CA and a client certificate from it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/client-ca2.key" \
  -out "$C/client-ca2.pem" -days 30 -subj "/O=legate test/CN=legate test client CA 2" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/client-new.key" -out "$C/client-new.csr" \
  -subj "/O=legate test/CN=client-new" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\nsubjectAltName=URI:spiffe://example.org/ns/default/sa/client\n' > "$C/client-new.ext"
openssl x509 -req -in "$C/client-new.csr" -CA "$C/client-ca2.pem" -CAkey "$C/client-ca2.key" -set_serial 77 \
  -days 30 -extfile "$C/client-new.ext" -out "$C/client-new.pem" 2>/dev/null
cp "$C/client-ca.pem" "$C/client-ca-old.pem"

code() { # code CERT: the status a client with CERT gets (000: refused at the handshake)
  curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" --cert "$C/$1.pem" --key "$C/$1.key" \
    "https://localhost:$P_L/app"
}
until_code() { # until_code CERT WANT: waits up to 1 s for it
  for _ in $(seq 1 20); do [ "$(code "$1")" = "$2" ] && return 0; sleep 0.05; done
  return 1
}
expect_eq "start: a client of the old CA is accepted" "200" "$(code client)"
expect_eq "start: a client of the new CA is refused at the handshake" "000" "$(code client-new)"

# Step 1: trust old + new (one change: the CA bundle file).
cat "$C/client-ca-old.pem" "$C/client-ca2.pem" > "$C/client-ca.pem.tmp" && mv "$C/client-ca.pem.tmp" "$C/client-ca.pem"
kill -HUP "$PID_control"
check "step 1 (trust old+new): the new CA's client is accepted within 1 s" until_code client-new 200
expect_eq "step 1: the old CA's client still is" "200" "$(code client)"

# From here the migrated client makes requests without pause.
( for i in $(seq 1 80); do code client-new; echo; sleep 0.02; done ) > loop.out &
loop=$!
sleep 0.3
# Step 2: clients move to the new CA (nothing to do at legate). Step 3: drop the old CA.
cp "$C/client-ca2.pem" "$C/client-ca.pem.tmp" && mv "$C/client-ca.pem.tmp" "$C/client-ca.pem"
kill -HUP "$PID_control"
check "step 3 (drop the old CA): the old CA's client is refused within 1 s" until_code client 000
wait $loop
expect_eq "the migrated client: 80 requests across the change, all 200" "80" "$(grep -c '^200$' loop.out)"
out=$(curl -s "http://127.0.0.1:$P_ADMIN/certs" | python3 -c '
import json,sys
c=json.load(sys.stdin)["certificates"]
print(" | ".join(x["subject"] for e in c if e["source"].startswith("sds:client-ca") for x in e["ca_cert"]))')
expect_eq "/certs lists only the new client CA" "/O=legate test/CN=legate test client CA 2" "$out"

# Workers remember chains that verified (for at most 60 s); a new
# validation context must undo that at once. Step 4: a SAN matcher that no
# longer matches the client. Step 5: back, with a CRL that revokes nothing;
# step 6: a CRL that revokes the client. Each step waits for the new secret
# version to be applied, then the very next handshake must see it.
sds_updates() { curl -s "http://127.0.0.1:$P_ADMIN/stats" | awk '/^sds.client-ca.update_success:/ { print $2 }'; }
push() { # push: SIGHUP the control plane, wait until legate applied a new client-ca
  local n0 end=$((SECONDS + 5))
  n0=$(sds_updates)
  kill -HUP "$PID_control"
  until [ "$(sds_updates)" -gt "$n0" ] || [ $SECONDS -gt $end ]; do sleep 0.02; done
}
expect_eq "step 4: before, the client's chain verifies (and is remembered)" "200 200" "$(code client-new) $(code client-new)"
sed -i 's|prefix: "spiffe://example.org/"|prefix: "spiffe://example.net/"|' control.yaml
push
expect_eq "step 4 (a SAN matcher it fails): the next handshake is refused" "000" "$(code client-new)"
db=$WORK/ca2db
mkdir -p "$db"
: > "$db/index.txt"
echo 1000 > "$db/crlnumber"
cat > "$db/ca.cnf" <<CNF
[ ca ]
default_ca = ca2
[ ca2 ]
database = $db/index.txt
crlnumber = $db/crlnumber
certificate = $C/client-ca2.pem
private_key = $C/client-ca2.key
default_md = sha256
default_crl_days = 30
CNF
openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$C/client-ca.crl" >/dev/null 2>&1
sed -i -e 's|prefix: "spiffe://example.net/"|prefix: "spiffe://example.org/"|' \
  -e 's|^\(    trusted_ca: { filename: certs/client-ca.pem }\)$|\1\n    crl: { filename: certs/client-ca.crl }|' control.yaml
push
expect_eq "step 5 (SAN matcher back, a CRL that revokes nothing): accepted, twice" "200 200" \
  "$(code client-new) $(code client-new)"
openssl ca -batch -config "$db/ca.cnf" -revoke "$C/client-new.pem" >/dev/null 2>&1
openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$C/client-ca.crl.tmp" >/dev/null 2>&1
mv "$C/client-ca.crl.tmp" "$C/client-ca.crl"
push
expect_eq "step 6 (a CRL that revokes it): the next handshake is refused, though its chain verified a moment ago" \
  "000" "$(code client-new)"
check "... and legate says why" grep -q "failed: certificate verify failed: certificate revoked (revoked); client certificate: /O=legate test/CN=client-new" "$WORK/legate.log"

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
