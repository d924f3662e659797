#!/usr/bin/env bash
# The data plane from a static bootstrap, against real peers: curl and
# openssl s_client downstream, nginx requiring a client certificate
# upstream, certificates made by openssl now.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/bad-clients.sh"

C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"
make_bad_clients "$C"

P_MTLS=$(free_port)    # mTLS listener, client certificate required
P_SNI=$(free_port)     # two chains chosen by SNI
P_PLAIN=$(free_port)   # plaintext listener, small limits
P_UP=$(free_port)      # nginx, HTTP/1.1, requires cluster-ca client certs
P_UP2=$(free_port)     # nginx, HTTP/2
P_HOLE=$(free_port)    # accepts, never answers
P_SYN=$(free_port)     # never accepts (full backlog)
P_DEAD=$(free_port)    # nothing listens
P_ADMIN=$(free_port)
LEGATE_PORT=$P_MTLS

start_nginx_mtls up "$P_UP"
start_nginx_mtls up2 "$P_UP2" h2
start_blackhole "$P_HOLE"
start_full_backlog "$P_SYN"

hcm() { # hcm STAT_PREFIX ROUTES_YAML(indented 12)
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { subject: true, uri: true }
          request_headers_timeout: 1s
          max_request_headers_kb: 8
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
$2
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}

ROUTES='              - match: { path: /healthz }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
              - match: { prefix: /default/ }
                route: { cluster: backend-default }
              - match: { prefix: /h2/ }
                route: { cluster: backend-h2 }
              - match: { prefix: /hole }
                route: { cluster: hole, timeout: 1s }
              - match: { prefix: /syn }
                route: { cluster: syn }
              - match: { prefix: /dead }
                route: { cluster: dead }
              - match: { prefix: /nocluster }
                route: { cluster: does-not-exist }
              - match: { prefix: /untrusted }
                route: { cluster: untrusted }
              - match: { prefix: /api/, headers: [{ name: x-env, exact_match: canary }] }
                route: { cluster: backend, prefix_rewrite: /canary/ }
              - match: { prefix: /api/ }
                route: { cluster: backend, prefix_rewrite: / }
              - match: { prefix: /app }
                route: { cluster: backend }'

tls_cluster() { # tls_cluster NAME PORT [own-cert yes|no] [h2] [ca]
  local name=$1 port=$2 own=${3:-yes} h2=${4:-} ca=${5:-upstream-ca}
  cat <<YAML
  - name: $name
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: $name
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $port } } } }] }]
YAML
  if [ -n "$h2" ]; then cat <<YAML
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
YAML
  fi
  cat <<YAML
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
YAML
  if [ "$own" = yes ]; then cat <<YAML
          tls_certificates:
          - certificate_chain: { filename: $C/upstream-client.pem }
            private_key: { filename: $C/upstream-client.key }
YAML
  fi
  cat <<YAML
          validation_context:
            trusted_ca: { filename: $C/$ca.pem }
            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: backend.internal } }]
YAML
}

plain_cluster() { # plain_cluster NAME PORT
  cat <<YAML
  - name: $1
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: $1
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } }] }]
YAML
}

cat > "$WORK/legate.yaml" <<YAML
node: { id: test, cluster: test }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
bootstrap_extensions:
- name: legate.default_upstream_tls
  typed_config:
    "@type": type.googleapis.com/legate.config.v1.DefaultUpstreamTls
    common_tls_context:
      tls_certificates:
      - certificate_chain: { filename: $C/default-client.pem }
        private_key: { filename: $C/default-client.key }
static_resources:
  listeners:
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: $P_MTLS } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: $C/server.pem }
              private_key: { filename: $C/server.key }
            validation_context:
              trusted_ca: { filename: $C/client-ca.pem }
              crl: { filename: $C/crl.pem }
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: { prefix: "spiffe://example.org/" }
      filters:
$(hcm mtls "$ROUTES")
  - name: sni
    address: { socket_address: { address: 127.0.0.1, port_value: $P_SNI } }
    filter_chains:
    - filter_chain_match: { server_names: [shop.example.com, "*.shop.example.com"] }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/shop.pem }, private_key: { filename: $C/shop.key } }]
      filters:
$(hcm shop '              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: "shop\n" } }')
    - filter_chain_match: { server_names: [api.example.com] }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/api.pem }, private_key: { filename: $C/api.key } }]
      filters:
$(hcm api '              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: "api\n" } }')
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P_PLAIN } }
    filter_chains:
    - filters:
$(hcm plain "$ROUTES")
  clusters:
$(tls_cluster backend "$P_UP")
$(tls_cluster backend-default "$P_UP" no)
$(tls_cluster backend-h2 "$P_UP2" yes h2)
$(tls_cluster untrusted "$P_UP" yes "" ca)
$(plain_cluster hole "$P_HOLE")
$(plain_cluster syn "$P_SYN")
$(plain_cluster dead "$P_DEAD")
YAML

out=$("$BIN/legate" --mode validate -c "$WORK/legate.yaml" 2>&1)
expect_eq "the test bootstrap validates" "configuration '$WORK/legate.yaml' OK" "$out"
LEGATE_LOG_LEVEL=debug start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_SNI"; wait_port "$P_PLAIN"

U=https://localhost:$P_MTLS

# --- mTLS both ways ---------------------------------------------------------
body=$(curl_mtls "$U/app/x")
expect_eq "HTTP/1.1 with a client certificate reaches the upstream with the cluster's certificate" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/app/x proto=HTTP/1.1" "$body"
out=$(curl_mtls --http2 -o /dev/null -w '%{http_code} %{http_version}' "$U/app/h2")
expect_eq "HTTP/2 downstream" "200 2" "$out"
body=$(curl_mtls "$U/default/x")
expect_eq "a cluster without its own certificate presents the default one" \
  "subject=CN=legate-default-client,O=legate test uri=/default/x proto=HTTP/1.1" "$body"
body=$(curl_mtls "$U/h2/x")
expect_eq "HTTP/2 upstream (multiplexed pool)" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/h2/x proto=HTTP/2.0" "$body"
body=$(curl_mtls -H 'x-env: canary' "$U/api/items?q=1")
expect_eq "header match and prefix_rewrite" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/canary/items?q=1 proto=HTTP/1.1" "$body"
body=$(curl_mtls "$U/api/items")
expect_eq "prefix_rewrite to /" "subject=CN=legate-cluster-backend,O=legate test uri=/items proto=HTTP/1.1" "$body"

hdrs=$(curl_mtls -D - -o /dev/null -H 'x-forwarded-client-cert: By=spoofed;URI=spiffe://evil' "$U/app/xfcc")
xfcc=$(printf '%s' "$hdrs" | tr -d '\r' | sed -n 's/^x-seen-xfcc: //p')
hash=$(openssl x509 -in "$C/client.pem" -outform DER | sha256sum | cut -d' ' -f1)
expect_eq "XFCC set from the verified client certificate, spoofed one dropped" \
  "Hash=$hash;Subject=\"CN=client,O=legate test\";URI=spiffe://example.org/ns/default/sa/client" "$xfcc"
xfp=$(printf '%s' "$hdrs" | tr -d '\r' | sed -n 's/^x-seen-xfp: //p')
expect_eq "x-forwarded-proto" "https" "$xfp"
xff=$(printf '%s' "$hdrs" | tr -d '\r' | sed -n 's/^x-seen-xff: //p')
expect_eq "x-forwarded-for" "127.0.0.1" "$xff"
rid=$(printf '%s' "$hdrs" | tr -d '\r' | sed -n 's/^x-seen-request-id: //p')
check "x-request-id generated (a UUID)" bash -c "[[ '$rid' =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]]"

# --- handshake-level refusals ---------------------------------------------------
s_client() { # s_client ARGS... -> prints openssl's output
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MTLS" -servername localhost \
    -CAfile "$C/ca.pem" "$@" 2>&1
}
probe() { # probe ARGS... : makes a request after the handshake; prints the output
  printf 'GET /app/probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
    timeout 5 openssl s_client -connect "127.0.0.1:$P_MTLS" -servername localhost -CAfile "$C/ca.pem" \
      -ign_eof "$@" 2>&1
}
out=$(probe -tls1_3)
check "no client certificate, TLS 1.3: alert certificate required" grep -q "certificate required" <<<"$out"
check "no client certificate, TLS 1.3: no response" bash -c "! grep -q 'HTTP/1.1 200' <<<\"\$1\"" _ "$out"
out=$(probe -tls1_2)
check "no client certificate, TLS 1.2: alert handshake failure" grep -q "handshake failure" <<<"$out"
for pair in other-client:"unknown ca" expired:"certificate expired" revoked:"certificate revoked" \
            badsan:"handshake failure" notyet:"bad certificate"; do
  bad=${pair%%:*} alert=${pair#*:}
  out=$(probe -cert "$C/$bad.pem" -key "$C/$bad.key")
  check "client certificate '$bad' refused at the handshake: alert $alert" \
    bash -c "! grep -q 'HTTP/1.1 200' <<<\"\$1\" && grep -q 'alert $alert' <<<\"\$1\"" _ "$out"
done
check "the log says why a handshake failed, and whose certificate it was" \
  grep -q "\[info\]\[hcm\] C[0-9]*: TLS handshake with 127.0.0.1:[0-9]* on mtls failed: certificate verify failed: certificate revoked (revoked); client certificate: /CN=revoked/O=legate test" "$WORK/legate.log"
out=$(probe -cert "$C/client2.pem" -key "$C/client2.key")
check "another SAN under spiffe://example.org/ is accepted" grep -q 'HTTP/1.1 200' <<<"$out"

# --- SNI -----------------------------------------------------------------------
sni_subject() {
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_SNI" -servername "$1" 2>/dev/null |
    openssl x509 -noout -subject -nameopt RFC2253 2>/dev/null
}
expect_eq "SNI shop.example.com gets the shop certificate" "subject=CN=shop.example.com,O=legate test" "$(sni_subject shop.example.com)"
expect_eq "SNI x.shop.example.com (wildcard)" "subject=CN=shop.example.com,O=legate test" "$(sni_subject x.shop.example.com)"
expect_eq "SNI api.example.com gets the api certificate and chain" "subject=CN=api.example.com,O=legate test" "$(sni_subject api.example.com)"
body=$(curl -s --cacert "$C/ca.pem" --resolve "api.example.com:$P_SNI:127.0.0.1" "https://api.example.com:$P_SNI/")
expect_eq "the api chain's routes answer" "api" "$body"
body=$(curl -s --cacert "$C/ca.pem" --resolve "shop.example.com:$P_SNI:127.0.0.1" "https://shop.example.com:$P_SNI/")
expect_eq "the shop chain's routes answer" "shop" "$body"
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_SNI" -servername unknown.example.net 2>&1)
check "an SNI no chain matches is refused" grep -qi "alert" <<<"$out"

# --- local replies -----------------------------------------------------------------
code() { curl_mtls -o "$WORK/body" -w '%{http_code}' "$@"; }
expect_eq "direct_response" "200 ok" "$(code "$U/healthz") $(cat "$WORK/body")"
expect_eq "no route: 404" "404 no route matched" "$(code "$U/nothing-here") $(cat "$WORK/body")"
expect_eq "unknown cluster: 503" "503 cluster not found" "$(code "$U/nocluster") $(cat "$WORK/body")"
expect_eq "nothing listening upstream: 503" \
  "503 upstream connect error or disconnect/reset before headers. reset reason: connection failure" \
  "$(code "$U/dead") $(cat "$WORK/body")"
expect_eq "upstream black hole: connect timeout, 503" \
  "503 upstream connect error or disconnect/reset before headers. reset reason: connection timeout" \
  "$(code "$U/syn") $(cat "$WORK/body")"
expect_eq "upstream never answers: route timeout, 504" "504 upstream request timeout" \
  "$(code "$U/hole") $(cat "$WORK/body")"
out="$(code "$U/untrusted") $(cat "$WORK/body")"
check "upstream with an untrusted certificate: 503 with the TLS reason" \
  grep -q "^503 upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: certificate verify failed" <<<"$out"

# --- many requests -------------------------------------------------------------------
urls=()
for i in $(seq 1 1000); do urls+=(-o /dev/null "$U/app/$i"); done
ok=$(curl_mtls -w '%{http_code}\n' "${urls[@]}" | grep -c '^200$')
expect_eq "1000 sequential requests on kept-alive connections" "1000" "$ok"
ok=$(curl_mtls --parallel --parallel-max 100 --http1.1 -w '%{http_code}\n' "${urls[@]:0:300}" 2>/dev/null | grep -c '^200$')
expect_eq "100 concurrent HTTP/1.1 requests" "100" "$ok"
ok=$(curl_mtls --parallel --parallel-max 100 --http2 -w '%{http_code}\n' "${urls[@]:0:300}" 2>/dev/null | grep -c '^200$')
expect_eq "100 concurrent HTTP/2 requests" "100" "$ok"
check "nghttp: 100 streams on one connection through an HTTP/2 upstream" test "$(nghttp -n -m 100 --cert "$C/client.pem" --key "$C/client.key" -v "$U/h2/multi" 2>&1 | grep -c ':status: 200')" -eq 100

# --- hostile input (plaintext listener) --------------------------------------------------
PL=http://127.0.0.1:$P_PLAIN
raw() { # raw BYTES: sends them, prints the reply's status line
  printf "$1" | timeout 5 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(data.split(b"\r\n", 1)[0].decode(errors="replace"))
' "$P_PLAIN"
}
expect_eq "malformed request line: 400" "HTTP/1.1 400 Bad Request" "$(raw 'GARBAGE\r\n\r\n')"
expect_eq "both Content-Length and Transfer-Encoding: 400" "HTTP/1.1 400 Bad Request" \
  "$(raw 'POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.1 without Host: 400" "HTTP/1.1 400 Bad Request" "$(raw 'GET /app HTTP/1.1\r\n\r\n')"
big=$(head -c 10000 /dev/zero | tr '\0' a)
expect_eq "headers over max_request_headers_kb: 431" "HTTP/1.1 431 Request Header Fields Too Large" \
  "$(raw "GET /app HTTP/1.1\r\nHost: x\r\nx-big: $big\r\n\r\n")"
expect_eq "plaintext proxying still works after all that" "200" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$PL/healthz")"
# slowloris: half a request head, then silence
out=$(timeout 5 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /app HTTP/1.1\r\nHost: x\r\nx-slow: ")
t = time.time()
data = s.recv(4096)
print("%s %.0f" % (data.split(b"\r\n", 1)[0].decode(), time.time() - t))
' "$P_PLAIN")
expect_eq "slowloris: 408 after request_headers_timeout (1 s)" "HTTP/1.1 408 Request Timeout 1" "$out"
# invalid HTTP/2 frames: the connection dies, others are unaffected
out=$(timeout 5 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x99\xff\x00\x00\x00\x01garbage-frames" * 4)
data = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
except ConnectionResetError:
    pass
# a GOAWAY frame (type 7) must be in what we got back
print("goaway" if b"\x07" in data else "none")
' "$P_PLAIN")
expect_eq "invalid HTTP/2 frames: GOAWAY and close" "goaway" "$out"
expect_eq "other connections unaffected" "200" "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge "$PL/healthz")"
# abrupt disconnects at every stage
for cut in 'GET /app' 'GET /app HTTP/1.1\r\nHost: x\r\n' 'POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc'; do
  printf "$cut" | timeout 2 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(sys.stdin.buffer.read()); s.close()' "$P_PLAIN"
done
printf 'GET /hole HTTP/1.1\r\nHost: x\r\n\r\n' | timeout 2 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(sys.stdin.buffer.read()); time.sleep(0.2); s.close()' "$P_PLAIN"
expect_eq "abrupt disconnects at every stage: still serving" "200" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$PL/healthz")"
# a 1 MiB upload streams through to the upstream and back as a 200
head -c 1048576 /dev/urandom > "$WORK/upload"
expect_eq "1 MiB request body (chunked upload) proxied" "200" \
  "$(curl -s -o /dev/null -w '%{http_code}' -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/upload" "$PL/app/upload")"

# --- graceful stop ------------------------------------------------------------------------
kill -TERM "$PID_legate"
for _ in $(seq 1 100); do kill -0 "$PID_legate" 2>/dev/null || break; sleep 0.1; done
check "SIGTERM: legate exits" bash -c "! kill -0 $PID_legate 2>/dev/null"
wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"

finish
