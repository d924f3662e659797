#!/usr/bin/env bash
# The main job: legate-control feeds legate over xDS; legate terminates mTLS
# and proxies to an nginx upstream that itself requires a client
# certificate. Every step says what it proves and checks it; the script
# exits non-zero if one did not, and leaves nothing running.
#   scripts/demo.sh [BUILD_DIR]
set -uo pipefail
build=$(cd "${1:-build}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/legate-demo.XXXXXX")
pids=()
failed=0
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work"; fi
}
trap cleanup EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
proved() { printf '   \033[32mPROVED\033[0m %s\n' "$*"; }
notproved() { printf '   \033[31mNOT PROVED\033[0m %s\n' "$*"; failed=1; }
run() { printf '   $ %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
client() { curl -s --cacert certs/ca.pem --cert certs/client.pem --key certs/client.key "$@"; }

P_CP=$(free_port); P_L=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port); P_API=$(free_port); P_APP=$(free_port)

step "1. A demo PKI, made now with openssl"
"$src/scripts/gen-certs.sh" certs
echo "   CAs: server, client, upstream, cluster; certificates for legate, a client"
echo "   (spiffe://example.org/ns/default/sa/client) and legate's upstream identity"

step "2. An nginx upstream on 127.0.0.1:$P_UP that requires a client certificate"
mkdir -p nginx
cat > nginx/nginx.conf <<NGINX
daemon off; master_process off; worker_processes 1;
error_log $work/nginx/error.log; pid $work/nginx/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$P_UP ssl;
    ssl_certificate $work/certs/upstream-server.pem;
    ssl_certificate_key $work/certs/upstream-server.key;
    ssl_verify_client on;
    ssl_client_certificate $work/certs/cluster-ca.pem;
    location / { return 200 "upstream saw client certificate: \$ssl_client_s_dn; client identity forwarded by legate: \$http_x_forwarded_client_cert\n"; }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" & pids+=($!)
wait_port "$P_UP" || { notproved "nginx did not start"; exit 1; }

step "3. legate-control, the sample xDS control plane, on 127.0.0.1:$P_CP"
sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
  "$src/control-sample/examples/demo.yaml" > control.yaml
run "legate-control -c control.yaml --listen 127.0.0.1:$P_CP --admin-listen 127.0.0.1:$P_API"
"$build/control-sample/legate-control" -c control.yaml --listen "127.0.0.1:$P_CP" \
  --admin-listen "127.0.0.1:$P_API" > control.log 2>&1 & pids+=($!)
cp_pid=$!
wait_port "$P_CP" || { notproved "legate-control did not start"; cat control.log; exit 1; }

step "4. legate, configured only through ADS (listener, routes, cluster, endpoints, secrets)"
sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$src/docs/examples/ads.yaml" > legate.yaml
run "legate -c legate.yaml"
"$build/dataplane/legate" -c legate.yaml > legate.log 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ "$(curl -s "http://127.0.0.1:$P_ADMIN/ready")" = LIVE ] && break; sleep 0.1; done
if [ "$(curl -s "http://127.0.0.1:$P_ADMIN/ready")" = LIVE ]; then
  proved "legate received LDS, RDS, CDS, EDS and SDS and is ready (/ready says LIVE)"
else
  notproved "legate is not ready"; tail legate.log
fi

step "5. A client with a certificate, over HTTP/1.1"
run "curl --cert certs/client.pem --key certs/client.key https://localhost:$P_L/"
out=$(client --http1.1 -w '\n%{http_code} HTTP/%{http_version}' "https://localhost:$P_L/")
echo "$out" | sed 's/^/   /'
if grep -q "CN=legate-cluster-backend" <<<"$out" && grep -q "^200 HTTP/1.1" <<<"$out" &&
   grep -q "URI=spiffe://example.org/ns/default/sa/client" <<<"$out"; then
  proved "mTLS in, mTLS out: the upstream saw legate's cluster certificate, and the client's verified identity in x-forwarded-client-cert"
else
  notproved "the request over HTTP/1.1"
fi

step "6. The same over HTTP/2"
out=$(client --http2 -w '\n%{http_code} HTTP/%{http_version}' "https://localhost:$P_L/")
echo "$out" | sed 's/^/   /'
if grep -q "^200 HTTP/2" <<<"$out" && grep -q "CN=legate-cluster-backend" <<<"$out"; then
  proved "HTTP/2 with ALPN h2, same certificates"
else
  notproved "the request over HTTP/2"
fi

step "7. A client without a certificate"
run "curl https://localhost:$P_L/   (no --cert)"
out=$(curl -sS --cacert certs/ca.pem "https://localhost:$P_L/" 2>&1); rc=$?
echo "   curl exit $rc: $out"
run "openssl s_client -connect 127.0.0.1:$P_L   (no -cert)"
alert=$(printf 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n' | openssl s_client -connect "127.0.0.1:$P_L" \
  -servername localhost -CAfile certs/ca.pem -ign_eof 2>&1 | grep -o 'alert certificate required' | head -1)
echo "   openssl: ${alert:-no alert}"
if [ $rc -ne 0 ] && [ "$alert" = "alert certificate required" ]; then
  proved "refused at the TLS handshake with the certificate_required alert; nothing reached the upstream"
else
  notproved "the request without a certificate was not refused at the handshake"
fi

step "8. The same upstream in application mode: the handshake completes, the mTLS filter answers"
cat > app-listener.yaml <<YAML
name: https-app
address: { socket_address: { address: 127.0.0.1, port_value: $P_APP } }
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: false
      common_tls_context:
        tls_certificate_sds_secret_configs: [{ name: server-cert, sds_config: { ads: {} } }]
        combined_validation_context:
          default_validation_context: { trust_chain_verification: ACCEPT_UNTRUSTED }
          validation_context_sds_secret_config: { name: client-ca, sds_config: { ads: {} } }
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: app_mode
      forward_client_cert_details: SANITIZE_SET
      set_current_client_cert_details: { subject: true, uri: true }
      rds: { route_config_name: local, config_source: { ads: {} } }
      http_filters:
      - name: legate.filters.http.mtls
        typed_config: { "@type": type.googleapis.com/legate.filters.http.mtls.v1.Mtls, require_certificate: true }
      - name: envoy.filters.http.router
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
run "curl -X PUT http://127.0.0.1:$P_API/listeners/https-app --data-binary @app-listener.yaml   (legate-control's management API)"
curl -s -o /dev/null -w '   management API: %{http_code}\n' -X PUT "http://127.0.0.1:$P_API/listeners/https-app" \
  --data-binary @app-listener.yaml
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$P_APP") 2>/dev/null && break; sleep 0.1; done
run "curl https://localhost:$P_APP/   (no --cert)"
out=$(curl -s --cacert certs/ca.pem -w ' %{http_code}' "https://localhost:$P_APP/")
echo "   $out"
out2=$(client -s -o /dev/null -w '%{http_code}' "https://localhost:$P_APP/")
echo "   with the client certificate: $out2"
if [ "$out" = '{"message":"No required TLS certificate was sent"} 401' ] && [ "$out2" = 200 ]; then
  proved "application mode: no certificate gets 401 with the reason (as Kong's mtls-auth), a good one 200"
else
  notproved "application mode"
fi

step "9. Hot rotation: a new server certificate while requests keep flowing"
before=$(echo | openssl s_client -connect "127.0.0.1:$P_L" -servername localhost -cert certs/client.pem \
  -key certs/client.key 2>/dev/null | openssl x509 -noout -serial)
echo "   serving: $before"
( for i in $(seq 1 100); do client -o /dev/null -w '%{http_code}\n' "https://localhost:$P_L/loop/$i"; sleep 0.02; done ) > loop.out &
loop=$!
sleep 0.5
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout certs/server.key.new -out certs/server.csr \
  -subj "/O=legate test/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > certs/server.ext
openssl x509 -req -in certs/server.csr -CA certs/ca.pem -CAkey certs/ca.key -set_serial "0x$(openssl rand -hex 8)" \
  -days 30 -extfile certs/server.ext -out certs/server.pem.new 2>/dev/null
run "curl -X PUT http://127.0.0.1:$P_API/secrets/server-cert -d '{\"cert\": <new PEM>, \"key\": <new key>}'"
python3 -c '
import json, sys
print(json.dumps({"cert": open(sys.argv[1]).read(), "key": open(sys.argv[2]).read()}))' \
  certs/server.pem.new certs/server.key.new > new-cert.json
curl -s -o /dev/null -w '   management API: %{http_code}\n' -X PUT "http://127.0.0.1:$P_API/secrets/server-cert" \
  --data-binary @new-cert.json
mv certs/server.pem.new certs/server.pem.issued
want=$(openssl x509 -noout -serial -in certs/server.pem.issued)
now=""
for _ in $(seq 1 20); do
  now=$(echo | openssl s_client -connect "127.0.0.1:$P_L" -servername localhost -cert certs/client.pem \
    -key certs/client.key 2>/dev/null | openssl x509 -noout -serial)
  [ "$now" = "$want" ] && break
  sleep 0.05
done
wait $loop
ok=$(grep -c '^200$' loop.out)
echo "   serving: $now; request loop: $ok/100 answered 200"
if [ "$now" = "$want" ] && [ "$now" != "$before" ] && [ "$ok" = 100 ]; then
  proved "rotated through the management API: new handshakes use the new certificate within a second, zero failed requests, no restart"
else
  notproved "the rotation"
fi

step "Done"
if [ $failed -eq 0 ]; then
  echo "   every step proved what it says; everything started here is stopped."
else
  echo "   some step did not prove what it says."
fi
exit $failed
