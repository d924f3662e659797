#!/usr/bin/env bash
# Hot rotation over SDS: the server certificate and the cluster's client
# certificate change at the control plane while requests keep flowing; new
# handshakes use the new ones at once, established connections go on, no
# request fails, and /certs shows only the new ones.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/bad-clients.sh"
CONTROL=$BIN/../control-sample/legate-control

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
make_bad_clients "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P_CP=$(free_port); P_L=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port)
start_nginx_mtls up "$P_UP"
sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
  "$SRC/control-sample/examples/demo.yaml" > control.yaml
sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$SRC/docs/examples/ads.yaml" > legate.yaml
start_bg control "$CONTROL" -c control.yaml --listen "127.0.0.1:$P_CP" -l debug
wait_port "$P_CP"
LEGATE_PORT=$P_L LEGATE_LOG_LEVEL=debug start_legate legate legate.yaml --cert-warn-days 60 || { finish; exit 1; }

serial() { # the serial of the certificate legate presents now, on a new handshake
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_L" -servername localhost \
    -cert "$C/client.pem" -key "$C/client.key" 2>/dev/null | openssl x509 -noout -serial | cut -d= -f2
}
file_serial() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
reissue() { # reissue NAME CA CN SAN EKU: a new key and certificate, swapped in by rename
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key.new" -out "$C/$1.csr" \
    -subj "/O=legate test/CN=$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$5" "$4" > "$C/$1.ext"
  openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.pem" -CAkey "$C/$2.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -extfile "$C/$1.ext" -out "$C/$1.pem.new" 2>/dev/null
  mv "$C/$1.key.new" "$C/$1.key"; mv "$C/$1.pem.new" "$C/$1.pem"
}

old=$(serial)
expect_eq "before: legate serves the server certificate from the files" "$(file_serial "$C/server.pem")" "$old"

# Load: one client on a kept-alive connection, 100 requests a second for 3 s,
# and one that opens a new connection for every request.
urls=(); for i in $(seq 1 300); do urls+=(-o /dev/null "https://localhost:$P_L/keep/$i"); done
curl_mtls --rate 100/s -w '%{http_code}\n' "${urls[@]}" > keep.out 2>&1 &
keep=$!
( for i in $(seq 1 60); do curl_mtls -o /dev/null -w '%{http_code}\n' "https://localhost:$P_L/new/$i"; sleep 0.04; done ) > new.out 2>&1 &
new=$!
sleep 1

reissue server ca localhost "DNS:localhost,DNS:legate.test,IP:127.0.0.1" serverAuth
reissue upstream-client cluster-ca legate-cluster-backend-v2 "DNS:legate.test" clientAuth
t0=$(date +%s.%N)
kill -HUP "$PID_control"
want=$(file_serial "$C/server.pem")
for _ in $(seq 1 40); do [ "$(serial)" = "$want" ] && break; sleep 0.05; done
t1=$(date +%s.%N)
expect_eq "after the push: new handshakes get the new server certificate" "$want" "$(serial)"
check "... within one second" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 1.0 else 1)"
expect_eq "the upstream now sees the new cluster certificate" \
  "subject=CN=legate-cluster-backend-v2,O=legate test uri=/after proto=HTTP/1.1" \
  "$(curl_mtls "https://localhost:$P_L/after")"
wait $keep $new
expect_eq "kept-alive client: 300 requests across the rotation, all 200" "300" "$(grep -c '^200$' keep.out)"
expect_eq "new connection per request: 60 requests across the rotation, all 200" "60" "$(grep -c '^200$' new.out)"
check "a secret-only change does not drain connections" bash -c "! grep -q 'changed: draining' legate.log"

certs=$(curl -s "http://127.0.0.1:$P_ADMIN/certs")
serials=$(python3 -c '
import json,sys
c=json.loads(sys.argv[1])["certificates"]
print(" ".join(sorted(x["serial_number"] for e in c if e["source"].startswith("sds:server-cert") for x in e["cert_chain"])))' "$certs")
expect_eq "/certs shows the new server certificate, and the old one is gone" "$want" "$serials"

# An expired certificate pushed by mistake is refused, and the good one stays.
cp "$C/server.pem" "$C/server.pem.good"; cp "$C/server.key" "$C/server.key.good"
cp "$C/expired.pem" "$C/server.pem"; cp "$C/expired.key" "$C/server.key"
kill -HUP "$PID_control"
for _ in $(seq 1 50); do grep -q 'SDS version .* rejected' legate.log && break; sleep 0.1; done
check "an expired certificate over SDS is NACKed, naming the secret and the date" \
  grep -q 'rejected: secret "server-cert": tls_certificate.certificate_chain: the certificate expired at 2020-02-01T00:00:00Z' legate.log
expect_eq "... and the good certificate keeps being served" "$want" "$(serial)"
check "--cert-warn-days 60: a warning names each certificate in use that expires within 60 days" \
  grep -qE '\[warning\]\[certs\] sds:server-cert \(version [0-9]+\): certificate /O=legate test/CN=localhost expires in (29|30) day' legate.log
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
