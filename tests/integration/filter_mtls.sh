#!/usr/bin/env bash
# legate.filters.http.mtls against real clients: curl (HTTP/1.1 and HTTP/2)
# with good and bad client certificates made by openssl now, through a
# listener that lets every certificate finish the handshake (L7 mode), to an
# nginx that echoes the consumer headers and the XFCC it received. Also: the
# handshake-level mode next to it, and config errors naming their field.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/bad-clients.sh"

C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"
make_bad_clients "$C"

P_L7=$(free_port)    # require_client_certificate: false + ACCEPT_UNTRUSTED: the filter decides
P_HS=$(free_port)    # require_client_certificate: true: the handshake decides
P_ECHO=$(free_port)  # nginx echoing what it got
P_ADMIN=$(free_port)
LEGATE_PORT=$P_L7

# --- the upstream: plaintext nginx that says which identity headers it saw ----
d=$WORK/nginx-echo
mkdir -p "$d"
cat >"$d/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
error_log $d/error.log; pid $d/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
  server {
    listen 127.0.0.1:$P_ECHO;
    location / {
      default_type text/plain;
      return 200 "user=\$http_x_consumer_username|id=\$http_x_consumer_id|custom=\$http_x_consumer_custom_id|anon=\$http_x_anonymous_consumer|xfcc=\$http_x_forwarded_client_cert\n";
    }
  }
}
NGINX
start_bg nginx-echo nginx -c "$d/nginx.conf"
wait_port "$P_ECHO"

# --- legate ---------------------------------------------------------------------
MTLS_FILTER='          - name: legate.filters.http.mtls
            typed_config:
              "@type": type.googleapis.com/legate.filters.http.mtls.v1.Mtls
              require_certificate: true
              allowed_sans:
              - san_type: URI
                matcher: { prefix: "spiffe://example.org/ns/default/" }
              allowed_issuers: ["CN=legate test client CA,O=legate test"]
              consumers:
              - username: client
                id: c-1
                custom_id: ext-client
                sans: [{ san_type: URI, matcher: { exact: "spiffe://example.org/ns/default/sa/client" } }]
              - username: other
                subjects: ["CN=client2"]
              anonymous: guest'

listener() { # listener NAME PORT REQUIRE(true|false)
  local trust=''
  [ "$3" = false ] && trust='              trust_chain_verification: ACCEPT_UNTRUSTED'
  cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: $3
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: $C/server.pem }
              private_key: { filename: $C/server.key }
            validation_context:
              trusted_ca: { filename: $C/client-ca.pem }
              crl: { filename: $C/crl.pem }
$trust
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { subject: true, uri: true }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /public }
                route: { cluster: echo }
                typed_per_filter_config:
                  legate.filters.http.mtls:
                    "@type": type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute
                    require_certificate: false
              - match: { prefix: /off }
                route: { cluster: echo }
                typed_per_filter_config:
                  legate.filters.http.mtls:
                    "@type": type.googleapis.com/legate.filters.http.mtls.v1.MtlsPerRoute
                    disabled: true
              - match: { prefix: / }
                route: { cluster: echo }
          http_filters:
$MTLS_FILTER
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}

cat > "$WORK/legate.yaml" <<YAML
node: { id: test, cluster: test }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
static_resources:
  listeners:
$(listener l7 "$P_L7" false)
$(listener handshake "$P_HS" true)
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: echo
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ECHO } } } }] }]
YAML

out=$("$BIN/legate" --mode validate -c "$WORK/legate.yaml" 2>&1)
expect_eq "the test bootstrap validates" "configuration '$WORK/legate.yaml' OK" "$out"
LEGATE_LOG_LEVEL=debug start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_HS"

L7=https://localhost:$P_L7
HS=https://localhost:$P_HS

# req VERSION CERT URL [CURL ARGS...]: prints "status|content-type|body".
# VERSION: 1.1 or 2; CERT: a name in $C (client, expired, ...) or "-" for none.
req() {
  local ver=$1 cert=$2 url=$3; shift 3
  local args=(-s --cacert "$C/ca.pem" -o "$WORK/body" -w '%{http_code}|%{content_type}')
  if [ "$ver" = 2 ]; then args+=(--http2); else args+=(--http1.1); fi
  [ "$cert" != - ] && args+=(--cert "$C/$cert.pem" --key "$C/$cert.key")
  local head
  head=$(curl "${args[@]}" "$@" "$url")
  printf '%s|%s' "$head" "$(cat "$WORK/body" 2>/dev/null)"
  rm -f "$WORK/body"
}

# xfcc_of CERT: the XFCC element legate must send for it (SANITIZE_SET,
# subject and uri), from openssl's own reading of the certificate.
xfcc_of() {
  local f=$C/$1.pem hash subject uri
  hash=$(openssl x509 -in "$f" -outform DER | sha256sum | cut -d' ' -f1)
  subject=$(openssl x509 -in "$f" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
  uri=$(openssl x509 -in "$f" -noout -ext subjectAltName | grep -o 'URI:[^,]*' | sed 's/^URI://')
  printf 'Hash=%s;Subject="%s";URI=%s' "$hash" "$subject" "$uri"
}
XFCC_CLIENT=$(xfcc_of client)
XFCC_CLIENT2=$(xfcc_of client2)
XFCC_BADSAN=$(xfcc_of badsan)
expect_eq "sanity: the expected XFCC of client.pem" \
  "Subject=\"CN=client,O=legate test\";URI=spiffe://example.org/ns/default/sa/client" "${XFCC_CLIENT#*;}"
J=application/json

for v in 1.1 2; do
  H="HTTP/$v:"
  # --- refusals, with the reason ---
  expect_eq "$H no certificate: 401 JSON" \
    "401|$J|{\"message\":\"No required TLS certificate was sent\"}" "$(req $v - "$L7/app")"
  for pair in other-client:"untrusted chain" expired:expired notyet:"not yet valid" revoked:revoked; do
    bad=${pair%%:*} reason=${pair#*:}
    expect_eq "$H certificate '$bad' completes the handshake, then 401 with reason '$reason'" \
      "401|$J|{\"message\":\"TLS certificate failed verification\",\"reason\":\"$reason\"}" \
      "$(req $v "$bad" "$L7/app")"
  done
  expect_eq "$H verified certificate with a SAN outside allowed_sans: 403" \
    "403|$J|{\"message\":\"TLS certificate is not authorized\"}" "$(req $v badsan "$L7/app")"

  # --- allowed: consumer headers and XFCC reach the upstream ---
  expect_eq "$H allowed SPIFFE ID: 200, consumer headers and XFCC upstream" \
    "200|text/plain|user=client|id=c-1|custom=ext-client|anon=|xfcc=$XFCC_CLIENT" \
    "$(req $v client "$L7/app")"
  expect_eq "$H client-sent x-consumer-*, x-anonymous-consumer and XFCC are replaced" \
    "200|text/plain|user=client|id=c-1|custom=ext-client|anon=|xfcc=$XFCC_CLIENT" \
    "$(req $v client "$L7/app" -H 'x-consumer-username: admin' -H 'X-Consumer-Id: 0' \
         -H 'x-consumer-custom-id: root' -H 'x-anonymous-consumer: false' \
         -H 'x-forwarded-client-cert: Hash=00;URI=spiffe://example.org/ns/default/sa/admin')"
  expect_eq "$H a consumer matched by subject; only the headers it has are set" \
    "200|text/plain|user=other|id=|custom=|anon=|xfcc=$XFCC_CLIENT2" "$(req $v client2 "$L7/app")"

  # --- a route overriding require_certificate: false ---
  expect_eq "$H require_certificate: false route, no certificate: the anonymous consumer" \
    "200|text/plain|user=guest|id=|custom=|anon=true|xfcc=" "$(req $v - "$L7/public")"
  expect_eq "$H anonymous: spoofed consumer headers and XFCC are dropped" \
    "200|text/plain|user=guest|id=|custom=|anon=true|xfcc=" \
    "$(req $v - "$L7/public" -H 'x-consumer-username: admin' -H 'x-consumer-id: 0' \
         -H 'x-forwarded-client-cert: Hash=00;URI=spiffe://example.org/ns/default/sa/client')"
  expect_eq "$H optional route, expired certificate: anonymous, not a consumer, no XFCC" \
    "200|text/plain|user=guest|id=|custom=|anon=true|xfcc=" "$(req $v expired "$L7/public")"
  # The XFCC is the connection manager's: the certificate did verify, so it
  # is forwarded as Envoy would; the consumer headers carry the filter's verdict.
  expect_eq "$H optional route, SAN outside allowed_sans: anonymous (XFCC still the verified certificate)" \
    "200|text/plain|user=guest|id=|custom=|anon=true|xfcc=$XFCC_BADSAN" "$(req $v badsan "$L7/public")"
  expect_eq "$H optional route, good certificate: still the consumer" \
    "200|text/plain|user=client|id=c-1|custom=ext-client|anon=|xfcc=$XFCC_CLIENT" \
    "$(req $v client "$L7/public")"
  # --- a disabled route ---
  expect_eq "$H disabled route: no checks, no consumer headers, spoofed ones dropped" \
    "200|text/plain|user=|id=|custom=|anon=|xfcc=" \
    "$(req $v - "$L7/off" -H 'x-consumer-username: admin' -H 'x-anonymous-consumer: true')"
done

# A gRPC request gets the same verdicts as a gRPC status (Envoy's local replies
# to gRPC): trailers-only, :status 200, grpc-status 16 UNAUTHENTICATED, the
# reason in grpc-message.
out=$(curl -s --http2 --cacert "$C/ca.pem" -o /dev/null -D - -H 'content-type: application/grpc' \
  -H 'te: trailers' --data-binary @/dev/null "$L7/app" | tr -d '\r' | grep -E '^(HTTP|grpc-status|content-type)' | sort | tr '\n' ' ' | tr -s ' ')
expect_eq "gRPC request without a certificate: 200, application/grpc, grpc-status 16" \
  "HTTP/2 200 content-type: application/grpc grpc-status: 16 " "$out"
check "... with the reason in grpc-message" bash -c "curl -s --http2 --cacert '$C/ca.pem' -o /dev/null -D - \
  -H 'content-type: application/grpc+proto' --data-binary @/dev/null '$L7/app' | grep -qi '^grpc-message: .*No required TLS certificate was sent'"

# HTTP/2 really was HTTP/2, and several streams on one connection get their own verdicts.
out=$(curl -s --http2 --cacert "$C/ca.pem" -w '%{http_version} %{num_connects} %{http_code}\n' \
  -o /dev/null "$L7/public" -o /dev/null "$L7/app" -o /dev/null "$L7/public")
expect_eq "HTTP/2: one connection, per-route verdicts (public 200, required 401, public 200)" \
  "$(printf '2 1 200\n2 0 401\n2 0 200')" "$out"
check "nghttp: 20 streams with a certificate, all 200" \
  test "$(nghttp -n -m 20 --cert "$C/client.pem" --key "$C/client.key" -v "$L7/app" 2>&1 | grep -c ':status: 200')" -eq 20

# TLS 1.2 completes the handshake with a bad certificate just the same.
expect_eq "TLS 1.2, revoked certificate: 401 revoked" \
  "401|$J|{\"message\":\"TLS certificate failed verification\",\"reason\":\"revoked\"}" \
  "$(req 1.1 revoked "$L7/app" --tls-max 1.2)"

# A resumed session (no certificate sent again) keeps the first verdict.
s_req() { # s_req TLSVERSION ARGS... -> "New|Reused <the body's verdict>"
  printf 'GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    timeout 5 openssl s_client "$1" -connect "127.0.0.1:$P_L7" -servername localhost -CAfile "$C/ca.pem" \
      -ign_eof "${@:2}" 2>/dev/null | grep -aoE '^(New|Reused)|"reason":"[^"]*"|user=[a-z]*' | tr '\n' ' '
}
for tv in -tls1_2 -tls1_3; do
  for pair in expired:'"reason":"expired"' client:'user=client'; do
    cert=${pair%%:*} want=${pair#*:}
    rm -f "$WORK/sess"
    first=$(s_req $tv -cert "$C/$cert.pem" -key "$C/$cert.key" -sess_out "$WORK/sess")
    again=$(s_req $tv -sess_in "$WORK/sess")
    expect_eq "resumption ($tv, $cert): the resumed session keeps the verdict" \
      "New $want |Reused $want " "$first|$again"
  done
done

# --- the handshake mode next to it: bad certificates never reach the filter ---
expect_eq "handshake mode, no certificate: no HTTP response at all" "000|" \
  "$(curl -s --cacert "$C/ca.pem" -o /dev/null -w '%{http_code}|' "$HS/app")"
expect_eq "handshake mode, expired certificate: no HTTP response at all" "000|" \
  "$(curl -s --cacert "$C/ca.pem" --cert "$C/expired.pem" --key "$C/expired.key" -o /dev/null -w '%{http_code}|' "$HS/app")"
expect_eq "handshake mode, good certificate: the filter still names the consumer" \
  "200|text/plain|user=client|id=c-1|custom=ext-client|anon=|xfcc=$XFCC_CLIENT" "$(req 1.1 client "$HS/app")"
expect_eq "handshake mode, badsan (CA-valid): the filter answers 403" \
  "403|$J|{\"message\":\"TLS certificate is not authorized\"}" "$(req 1.1 badsan "$HS/app")"

# --- config errors name the field ------------------------------------------------
bad_config() { # bad_config YAML_OF_THE_FILTER(indented 14) -> prints legate's message
  sed -e '/^              require_certificate: true$/,/^              anonymous: guest$/d' \
      -e "/\"@type\": type.googleapis.com\/legate.filters.http.mtls.v1.Mtls$/r /dev/stdin" \
      "$WORK/legate.yaml" > "$WORK/bad.yaml"
  "$BIN/legate" --mode validate -c "$WORK/bad.yaml" 2>&1
}
HF='static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config'
out=$(printf '              consumers: [{ id: x, subjects: ["CN=a"] }]\n' | bad_config)
expect_eq "config error: consumers[0].username" "legate: error: $WORK/bad.yaml: $HF: consumers[0].username: required" "$out"
out=$(printf '              allowed_sans: [{ matcher: { exact: a } }]\n' | bad_config)
expect_eq "config error: allowed_sans[0].san_type" \
  "legate: error: $WORK/bad.yaml: $HF: allowed_sans[0].san_type: required (DNS, URI or EMAIL)" "$out"

# --- the documentation's example is a valid bootstrap -------------------------
awk '/<!-- example: mtls-l7/ { f = 1; next } f && /^```yaml/ { p = 1; next } p && /^```/ { exit } p' \
  "$SRC/docs/filters/mtls.md" > "$WORK/doc-example.yaml"
check "docs/filters/mtls.md: the example was found" grep -q 'legate.filters.http.mtls.v1.Mtls' "$WORK/doc-example.yaml"
out=$(cd "$WORK" && "$BIN/legate" --mode validate -c doc-example.yaml 2>&1)
expect_eq "docs/filters/mtls.md: the example validates" "configuration 'doc-example.yaml' OK" "$out"

# --- the end ----------------------------------------------------------------------
kill -TERM "$PID_legate"
for _ in $(seq 1 100); do kill -0 "$PID_legate" 2>/dev/null || break; sleep 0.1; done
wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"

finish
