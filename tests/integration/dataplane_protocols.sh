#!/usr/bin/env bash
# Protocol details of the static data plane: transport and ALPN filter chain
# matching, RSA certificates inline, tls_params, session resumption, HTTP/1.1
# pipelining, Expect: 100-continue, chunked responses, load balancing,
# STRICT_DNS, and upstreams that misbehave (502, resets that fail only
# their own stream).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"
# An RSA server certificate, given to legate inline.
openssl req -newkey rsa:2048 -nodes -keyout "$C/rsa.key" -out "$C/rsa.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$C/rsa.ext"
openssl x509 -req -in "$C/rsa.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -set_serial 7 -days 2 \
  -extfile "$C/rsa.ext" -out "$C/rsa.pem" 2>/dev/null
indent() { sed 's/^/                  /' "$1"; }

P_MIX=$(free_port); P_ALPN=$(free_port); P_PLAIN=$(free_port)
P_A=$(free_port); P_B=$(free_port)
LEGATE_PORT=$P_PLAIN
start_bg up-a python3 "$SRC/tests/integration/upstream.py" "$P_A" a
start_bg up-b python3 "$SRC/tests/integration/upstream.py" "$P_B" b
wait_port "$P_A"; wait_port "$P_B"

hcm() { # hcm STAT_PREFIX ROUTES_YAML
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
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
direct() { printf '              - match: { prefix: / }\n                direct_response: { status: 200, body: { inline_string: "%s\\n" } }' "$1"; }
cluster() { # cluster NAME TYPE LB ADDR:PORT...
  local name=$1 type=$2 lb=$3; shift 3
  printf '  - name: %s\n    type: %s\n    lb_policy: %s\n    connect_timeout: 1s\n' "$name" "$type" "$lb"
  [ -n "${DNSFAM:-}" ] && printf '    dns_lookup_family: %s\n' "$DNSFAM"
  printf '    load_assignment:\n      cluster_name: %s\n      endpoints: [{ lb_endpoints: [' "$name"
  local sep=""
  for ep in "$@"; do
    printf '%s{ endpoint: { address: { socket_address: { address: %s, port_value: %s } } } }' "$sep" "${ep%:*}" "${ep#*:}"
    sep=", "
  done
  printf '] }]\n'
}

cat > "$WORK/legate.yaml" <<YAML
static_resources:
  listeners:
  - name: mixed
    address: { socket_address: { address: 127.0.0.1, port_value: $P_MIX } }
    filter_chains:
    - filter_chain_match: { transport_protocol: tls }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_params:
              tls_maximum_protocol_version: TLSv1_2
              cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]
            tls_certificates:
            - certificate_chain:
                inline_string: |
$(indent "$C/rsa.pem")
              private_key:
                inline_string: |
$(indent "$C/rsa.key")
      filters:
$(hcm mixed-tls "$(direct "tls chain")")
    - filter_chain_match: { transport_protocol: raw_buffer }
      filters:
$(hcm mixed-plain "$(direct "plaintext chain")")
  - name: alpn
    address: { socket_address: { address: 127.0.0.1, port_value: $P_ALPN } }
    filter_chains:
    - filter_chain_match: { application_protocols: [h2] }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
      filters:
$(hcm alpn-h2 "$(direct "h2 chain")")
    default_filter_chain:
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
      filters:
$(hcm alpn-default "$(direct "default chain")")
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P_PLAIN } }
    filter_chains:
    - filters:
$(hcm plain '              - match: { prefix: /rr/ }
                route: { cluster: rr }
              - match: { prefix: /lr/ }
                route: { cluster: lr }
              - match: { prefix: /dns/ }
                route: { cluster: dns }
              - match: { prefix: /dns4/ }
                route: { cluster: dns4 }
              - match: { prefix: /dns6/ }
                route: { cluster: dns6 }
              - match: { prefix: /dns4pref/ }
                route: { cluster: dns4pref }
              - match: { prefix: /logical/ }
                route: { cluster: logical }
              - match: { prefix: / }
                route: { cluster: a }')
  clusters:
$(cluster a STATIC ROUND_ROBIN 127.0.0.1:$P_A)
$(cluster rr STATIC ROUND_ROBIN 127.0.0.1:$P_A 127.0.0.1:$P_B)
$(cluster lr STATIC LEAST_REQUEST 127.0.0.1:$P_A 127.0.0.1:$P_B)
$(cluster dns STRICT_DNS ROUND_ROBIN localhost:$P_B)
$(DNSFAM=V4_ONLY cluster dns4 STRICT_DNS ROUND_ROBIN localhost:$P_B)
$(DNSFAM=V6_ONLY cluster dns6 STRICT_DNS ROUND_ROBIN 127.0.0.1:$P_B)
$(DNSFAM=V4_PREFERRED cluster dns4pref STRICT_DNS ROUND_ROBIN localhost:$P_B)
$(DNSFAM=V4_ONLY cluster logical LOGICAL_DNS ROUND_ROBIN localhost:$P_B)
YAML

start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_MIX"; wait_port "$P_ALPN"
PL=http://127.0.0.1:$P_PLAIN

# --- filter chain matching ---------------------------------------------------------
expect_eq "transport_protocol raw_buffer: plaintext on the mixed port" "plaintext chain" \
  "$(curl -s "http://127.0.0.1:$P_MIX/")"
expect_eq "transport_protocol tls: TLS on the same port" "tls chain" \
  "$(curl -s --cacert "$C/ca.pem" "https://localhost:$P_MIX/")"
expect_eq "application_protocols h2 picks the h2 chain" "h2 chain" \
  "$(curl -s --http2 --cacert "$C/ca.pem" "https://localhost:$P_ALPN/")"
expect_eq "no matching ALPN falls to default_filter_chain" "default chain" \
  "$(curl -s --http1.1 --cacert "$C/ca.pem" "https://localhost:$P_ALPN/")"

# --- TLS parameters ------------------------------------------------------------------
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MIX" -servername localhost -CAfile "$C/ca.pem" 2>&1)
check "inline RSA certificate served" grep -q "Server public key is 2048 bit" <<<"$out"
check "tls_params: TLS 1.2 maximum honoured" grep -q "Protocol  *: TLSv1.2" <<<"$out"
check "tls_params: the one allowed cipher suite" grep -q "Cipher  *: ECDHE-RSA-AES128-GCM-SHA256" <<<"$out"
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MIX" -tls1_3 2>&1)
check "tls_params: TLS 1.3 refused" bash -c "! grep -q 'TLSv1.3' <<<\"\$1\" && grep -qi 'alert\|error' <<<\"\$1\"" _ "$out"
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MIX" -tls1_2 -cipher AES256-SHA 2>&1)
check "tls_params: a cipher suite outside the list is refused" grep -qi "handshake failure\|no shared cipher\|alert" <<<"$out"

echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MIX" -tls1_2 -sess_out "$WORK/s12" >/dev/null 2>&1
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_MIX" -tls1_2 -sess_in "$WORK/s12" 2>&1)
check "TLS 1.2 session resumption" grep -q "^Reused, TLSv1.2" <<<"$out"
(sleep 1; echo) | timeout 5 openssl s_client -connect "127.0.0.1:$P_ALPN" -tls1_3 -servername localhost \
  -sess_out "$WORK/s13" >/dev/null 2>&1
out=$(echo | timeout 5 openssl s_client -connect "127.0.0.1:$P_ALPN" -tls1_3 -servername localhost -sess_in "$WORK/s13" 2>&1)
check "TLS 1.3 session resumption (tickets)" grep -q "^Reused, TLSv1.3" <<<"$out"
# One ticket per full handshake (OpenSSL's default is two), and a short one:
# it names a session in the listener's cache instead of carrying it sealed.
out=$( (sleep 1; echo) | timeout 5 openssl s_client -connect "127.0.0.1:$P_ALPN" -tls1_3 -servername localhost -msg 2>&1)
expect_eq "one TLS 1.3 ticket per full handshake" "1" "$(grep -c '^<<< TLS 1.3, Handshake .*NewSessionTicket' <<<"$out")"
len=$(grep -m1 '^<<< TLS 1.3, Handshake .*NewSessionTicket' <<<"$out" | sed 's/.*length \([0-9a-f]*\).*/\1/')
check "... naming a cached session (a $((16#${len:-0}))-byte ticket message, a sealed session would be over 300)" \
  test "$((16#${len:-fff}))" -lt 300

# --- HTTP/1.1 details ------------------------------------------------------------------
out=$(printf 'GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
  timeout 5 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(" ".join(l.split()[2] for l in data.decode().splitlines() if l.startswith("a GET")))
' "$P_PLAIN")
expect_eq "pipelining: three requests in one write, answered in order" "/one /two /three" "$out"
expect_eq "an HTTP/1.0 client" "a GET /old bytes=0" "$(curl -s -0 "$PL/old")"
expect_eq "an HTTP/1.1 GET without a body goes upstream without chunked coding" "te=- cl=- bytes=0" \
  "$(curl -s --http1.1 "$PL/framing/get")"
expect_eq "... a POST with Content-Length: 0 keeps it" "te=- cl=0 bytes=0" \
  "$(curl -s --http1.1 -X POST -H 'content-length: 0' "$PL/framing/post")"
# Chunked upstream, or a content-length when the whole body was in before
# the upstream connection was ready (both are the same message; which one
# depends on timing, so either is right).
out=$(printf hello | curl -s --http1.1 -H 'transfer-encoding: chunked' --data-binary @- "$PL/framing/chunked")
case "$out" in "te=chunked cl=- bytes=5" | "te=- cl=5 bytes=5") out=ok ;; esac
expect_eq "... a chunked request body arrives whole, chunked or with its length" "ok" "$out"
head -c 5000 /dev/urandom > "$WORK/body"
out=$(curl -sv -H 'Expect: 100-continue' --data-binary @"$WORK/body" "$PL/upload" 2>&1)
check "Expect: 100-continue gets an interim 100" grep -q "< HTTP/1.1 100 Continue" <<<"$out"
check "... then the upstream's answer with the whole body" grep -q "^a POST /upload bytes=5000" <<<"$out"
out=$(curl -s -D "$WORK/h" "$PL/chunked/x")
expect_eq "chunked upstream response passes through" "one,two,three" "$out"
check "... as chunked to an HTTP/1.1 client" grep -qi "^transfer-encoding: chunked" "$WORK/h"
expect_eq "chunked upstream response to an HTTP/2 client" "one,two,three" \
  "$(curl -s --http2-prior-knowledge "$PL/chunked/y")"
expect_eq "chunked request body" "a POST /c bytes=5000" \
  "$(curl -s -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/body" "$PL/c")"

# --- upstreams that misbehave ------------------------------------------------------------
expect_eq "upstream answers garbage: 502" "502" "$(curl -s -o /dev/null -w '%{http_code}' "$PL/garbage/x")"
out=$(curl -s -w ' %{http_code}' "$PL/reset/x")
expect_eq "upstream closes before answering: 503 with the reason" \
  "upstream connect error or disconnect/reset before headers. reset reason: connection termination 503" "$out"
out=$(nghttp -n -v "$PL/reset/a" "$PL/ok/b" "$PL/chunked/c" 2>&1)
expect_eq "h2: a reset upstream fails only its own stream" "3 1" \
  "$(grep -c ':status:' <<<"$out") $(grep -c ':status: 503' <<<"$out")"
out=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$PL/slowbody/x"; echo " rc=$?")
check "upstream dies mid-body: the client sees a truncated response, not a hang" \
  bash -c "[[ '$out' == '200 rc=18' || '$out' == '200 rc=56' ]]"
expect_eq "still serving after all that" "a GET /fine bytes=0" "$(curl -s "$PL/fine")"

# --- load balancing and DNS ------------------------------------------------------------------
# One connection, so one worker: each worker keeps its own round-robin
# position (from a random start), so requests spread over both workers need
# not split 5/5.
seen=$(curl -s $(for i in $(seq 1 10); do echo "$PL/rr/$i"; done) | grep -o '^[ab] GET' | cut -d' ' -f1 | sort | uniq -c |
  awk '{print $2 "=" $1}' | tr '\n' ' ')
expect_eq "ROUND_ROBIN spreads requests evenly over two endpoints" "a=5 b=5 " "$seen"
seen=$(for i in $(seq 1 30); do curl -s "$PL/lr/$i" | cut -d' ' -f1; done | sort -u | tr '\n' ' ')
expect_eq "LEAST_REQUEST uses both endpoints" "a b " "$seen"
expect_eq "STRICT_DNS: localhost resolved to the upstream" "b GET /dns/x bytes=0" "$(curl -s "$PL/dns/x")"
# the upstream listens on 127.0.0.1 only: whether localhost also has ::1 or not, these reach it
for i in 1 2 3; do
  expect_eq "dns_lookup_family V4_ONLY: localhost's IPv4 address ($i)" "b GET /dns4/$i bytes=0" "$(curl -s "$PL/dns4/$i")"
  expect_eq "dns_lookup_family V4_PREFERRED: localhost's IPv4 address ($i)" "b GET /dns4pref/$i bytes=0" \
    "$(curl -s "$PL/dns4pref/$i")"
done
expect_eq "dns_lookup_family V6_ONLY: an IPv4 address gives no endpoint (503)" "503" \
  "$(curl -s -o /dev/null -w '%{http_code}' "$PL/dns6/x")"
check "... and legate says why" grep -q "cluster dns6: cannot resolve 127.0.0.1" "$WORK/legate.log"
for i in 1 2; do
  expect_eq "LOGICAL_DNS: localhost's first address ($i)" "b GET /logical/$i bytes=0" "$(curl -s "$PL/logical/$i")"
done

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
