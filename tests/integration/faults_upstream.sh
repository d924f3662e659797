#!/usr/bin/env bash
# Fault injection, upstream side: upstreams that reset, half-close, stall,
# present a bad TLS certificate or answer something that is not HTTP. Each
# gets the status and the Envoy response flag it should, and after each one
# a healthy route of the same legate still answers 200, legate is still
# alive, and no file descriptor is left behind.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
F=$SRC/tests/integration/faults.py
C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"

P=$(free_port); P_ADMIN=$(free_port)
P_UP=$(free_port)      # faults.py upstream, plaintext
P_TLS=$(free_port)     # faults.py upstream, TLS with upstream-server.pem (backend.internal)
P_GOOD=$(free_port)    # upstream.py, the healthy one
P_JUNK=$(free_port)    # answers junk to the first bytes
P_RST=$(free_port)     # resets after the first bytes
P_RSTA=$(free_port)    # resets at accept
P_DEAD=$(free_port)    # nothing listens
start_bg up python3 "$F" upstream "$P_UP"
start_bg tlsup python3 "$F" upstream "$P_TLS" "$C/upstream-server.pem" "$C/upstream-server.key"
start_bg good python3 "$SRC/tests/integration/upstream.py" "$P_GOOD" good
start_bg junk python3 "$F" rawup "$P_JUNK" junk
start_bg rstup python3 "$F" rawup "$P_RST" rst
start_bg rsta python3 "$F" rawup "$P_RSTA" rstaccept
for p in "$P_UP" "$P_TLS" "$P_GOOD" "$P_JUNK" "$P_RST" "$P_RSTA"; do wait_port "$p"; done

cluster() { # cluster NAME PORT [h2]
  cat <<YAML
  - name: $1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: $1
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } }] }]
YAML
  [ "${3:-}" = h2 ] && cat <<YAML
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
YAML
  return 0
}
tls_cluster() { # tls_cluster NAME PORT CA SAN
  cluster "$1" "$2"
  cat <<YAML
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.internal
        common_tls_context:
          validation_context:
            trusted_ca: { filename: $C/$3.pem }
            match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: $4 } }]
YAML
}

cat > "$WORK/legate.yaml" <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }
static_resources:
  listeners:
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: plain
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $WORK/access.log
              log_format: { text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n" }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { path: /healthz }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
              - match: { prefix: /good }
                route: { cluster: good }
              - match: { prefix: /tls/ok/ }
                route: { cluster: tls-good, prefix_rewrite: / }
              - match: { prefix: /tls/untrusted }
                route: { cluster: tls-untrusted }
              - match: { prefix: /tls/wrongsan }
                route: { cluster: tls-wrongsan }
              - match: { prefix: /tls/plain }
                route: { cluster: tls-to-plain }
              - match: { prefix: /raw/junk }
                route: { cluster: junk }
              - match: { prefix: /raw/rst }
                route: { cluster: rst }
              - match: { prefix: /raw/rstaccept }
                route: { cluster: rstaccept }
              - match: { prefix: /h2/junk }
                route: { cluster: h2-junk }
              - match: { prefix: /h2/rst }
                route: { cluster: h2-rst }
              - match: { prefix: /dead }
                route: { cluster: dead }
              - match: { prefix: / }
                route: { cluster: faulty, timeout: 1s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
$(cluster good "$P_GOOD")
$(cluster faulty "$P_UP")
$(cluster junk "$P_JUNK")
$(cluster rst "$P_RST")
$(cluster rstaccept "$P_RSTA")
$(cluster h2-junk "$P_JUNK" h2)
$(cluster h2-rst "$P_RST" h2)
$(cluster dead "$P_DEAD")
$(tls_cluster tls-good "$P_TLS" upstream-ca backend.internal)
$(tls_cluster tls-untrusted "$P_TLS" ca backend.internal)
$(tls_cluster tls-wrongsan "$P_TLS" upstream-ca other.internal)
$(tls_cluster tls-to-plain "$P_UP" upstream-ca backend.internal)
YAML
LEGATE_PORT=$P LEGATE_LOG_LEVEL=debug start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
U=http://127.0.0.1:$P

fds() { ls "/proc/$PID_legate/fd" 2>/dev/null | wc -l; }
healthy() { # after a fault: the healthy routes of the same legate answer, and it lives
  local what=$1 a b
  a=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$U/good/after")
  b=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$U/tls/ok/ok")
  if [ "$a $b" = "200 200" ] && kill -0 "$PID_legate" 2>/dev/null; then
    ok "after $what: healthy routes answer 200 (plaintext and TLS upstream), legate alive"
  else
    not_ok "after $what: healthy routes answer 200, legate alive (got '$a $b')"
  fi
}
# code PATH [CURL ARGS]: "status body" of a request through legate, in at most 10 s
code() { local p=$1; shift; curl -s -m 10 -o "$WORK/body" -w '%{http_code}' "$@" "$U$p"; echo " $(head -c 300 "$WORK/body")"; }
flag_of() { # flag_of PATH: the response flags the access log has for PATH
  local end=$((SECONDS + 3)) line=
  while [ $SECONDS -lt $end ]; do
    line=$(grep "^$1 " "$WORK/access.log" 2>/dev/null | tail -1)
    [ -n "$line" ] && break
    sleep 0.1
  done
  echo "${line#$1 }"
}

# Warm up: both workers hold their pooled connections, then count the fds.
for i in $(seq 1 8); do curl -s -o /dev/null -o /dev/null "$U/good/warm$i" "$U/tls/ok/warm$i"; done
expect_eq "the healthy plaintext route" "200 good GET /good/x bytes=0" "$(code /good/x)"
expect_eq "the healthy TLS route" "200 ok /x" "$(code /tls/ok/x)"
FD0=$(fds)

RESET="upstream connect error or disconnect/reset before headers. reset reason:"
# --- resets and half-closes ---------------------------------------------------------
expect_eq "upstream closes after the request: 503 connection termination" "503 $RESET connection termination" "$(code /close)"
expect_eq "... flag UC" "503 UC" "$(flag_of /close)"
healthy "a close"
expect_eq "upstream resets (RST) after the request: 503" "503 $RESET connection termination" "$(code /rst)"
expect_eq "... flag UC" "503 UC" "$(flag_of /rst)"
healthy "a reset"
expect_eq "upstream half-closes (FIN, keeps reading) after the request: 503" "503 $RESET connection termination" "$(code /halfclose)"
expect_eq "... flag UC" "503 UC" "$(flag_of /halfclose)"
healthy "a half-close"
out=$(code /eof)
expect_eq "a response delimited by the upstream's close arrives whole: 200 and 5001 bytes" "200 5001" "${out%% *} $(wc -c < "$WORK/body")"
healthy "a close-delimited response"
expect_eq "upstream resets at accept: 503" "503 $RESET connection termination" "$(code /raw/rstaccept/x)"
check "... flag UC or UF" grep -qx "503 U[CF]" <<<"$(flag_of /raw/rstaccept/x)"
expect_eq "upstream resets after the first bytes (plaintext HTTP/1.1): 503 UC" "503 UC" \
  "$(code /raw/rst/x >/dev/null; flag_of /raw/rst/x)"
expect_eq "nothing listens upstream: 503 connection failure" "503 $RESET connection failure" "$(code /dead)"
expect_eq "... flag UF" "503 UF" "$(flag_of /dead)"
healthy "resets at connect time"
out=$(code /rstbody)
check "upstream resets mid-body: the client gets the 200 head and a truncated body, not a hang" \
  bash -c "[[ '$out' == 200\ r* ]] && [ \$(wc -c < '$WORK/body') -lt 100000 ]"
healthy "a reset mid-body"

# --- stalls -------------------------------------------------------------------------
t=$SECONDS
expect_eq "upstream stalls before answering: 504 after the route timeout (1 s)" "504 upstream request timeout" "$(code /stall)"
expect_eq "... flag UT" "504 UT" "$(flag_of /stall)"
check "... in about 1 s (not curl's 10 s)" test $((SECONDS - t)) -le 4
t=$SECONDS
out=$(curl -s -m 10 -o "$WORK/body" -w '%{http_code} %{size_download}' "$U/stallbody"; echo " rc=$?")
check "upstream stalls mid-body: the client gets 200 and 7 bytes, then the stream ends at the route timeout (curl: partial file, 18)" \
  grep -qx "200 7 rc=18" <<<"$out"
check "... in about 1 s, not curl's 10 s" test $((SECONDS - t)) -le 4
healthy "stalls"
# A stall while healthy requests keep going on other connections.
curl -s -m 10 -o /dev/null "$U/stall/parallel" & stall=$!
ok_n=0
for i in $(seq 1 20); do [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$U/good/p$i")" = 200 ] && ok_n=$((ok_n + 1)); done
wait $stall
expect_eq "20 healthy requests while a stalled one waits: all 200" "20" "$ok_n"

# --- bad TLS --------------------------------------------------------------------------
out=$(code /tls/untrusted/x)
check "upstream certificate from an untrusted CA: 503 with the TLS reason" \
  grep -q "^503 $RESET connection failure, transport failure reason: TLS error: certificate verify failed" <<<"$out"
expect_eq "... flag UF" "503 UF" "$(flag_of /tls/untrusted/x)"
check "... and the log says why" grep -q "cluster tls-untrusted: 127.0.0.1:$P_TLS: connection failure, transport failure reason: TLS error: certificate verify failed" "$WORK/legate.log"
healthy "an untrusted certificate"
out=$(code /tls/wrongsan/x)
check "upstream certificate with the wrong SAN: 503 naming the SAN" \
  grep -q "^503 $RESET connection failure, transport failure reason: TLS error: .*SAN" <<<"$out"
expect_eq "... flag UF" "503 UF" "$(flag_of /tls/wrongsan/x)"
check "... and the log says why" grep -q "cluster tls-wrongsan: 127.0.0.1:$P_TLS: connection failure, transport failure reason: TLS error: .*SAN" "$WORK/legate.log"
healthy "a wrong SAN"
out=$(code /tls/plain/x)
check "a TLS cluster whose upstream speaks plaintext: 503 with a TLS reason" \
  grep -q "^503 $RESET connection failure, transport failure reason: TLS error" <<<"$out"
healthy "a plaintext answer to TLS"

# --- invalid HTTP -------------------------------------------------------------------------
expect_eq "upstream answers bytes that are not HTTP: 502" "502 upstream protocol error" "$(code /garbage)"
expect_eq "... flag UPE" "502 UPE" "$(flag_of /garbage)"
expect_eq "upstream answers two different Content-Length: 502" "502 upstream protocol error" "$(code /badcl)"
expect_eq "upstream answers a 100 KiB header: 502" "502 upstream protocol error" "$(code /hugehdr)"
expect_eq "upstream answers junk to the request line: 502" "502 upstream protocol error" "$(code /raw/junk/x)"
healthy "invalid HTTP/1.1 responses"
t=$SECONDS
expect_eq "HTTP/2 upstream that answers junk: 503 at once (nghttp2 ended the session), not a hang" \
  "503 $RESET connection termination" "$(code /h2/junk/x)"
check "... well before curl's 10 s and the route timeout (15 s)" test $((SECONDS - t)) -le 4
out=$(code /h2/rst/x)
check "HTTP/2 upstream that resets after the preface: 503" grep -q "^503 $RESET" <<<"$out"
healthy "invalid HTTP/2 upstreams"
# And over HTTP/2 downstream, the same failures end the stream, not the connection.
out=$(timeout 10 nghttp -v "$U/garbage" "$U/rst" "$U/good/h2" 2>&1 | sed -n 's/.*recv (stream_id=\([0-9]*\)) :status: \([0-9]*\)/\1 \2/p' | sort -n | cut -d' ' -f2 | tr '\n' ' ')
expect_eq "HTTP/2 client, three streams on one connection: 502, 503 and 200" "502 503 200 " "$out"

# --- nothing left behind --------------------------------------------------------------------
for _ in $(seq 1 30); do [ "$(fds)" -le "$FD0" ] && break; sleep 0.1; done
check "no file descriptor leaked over all that ($FD0 before, $(fds) after)" test "$(fds)" -le "$FD0"
active=$(curl -s "http://127.0.0.1:$P_ADMIN/legate/clusters" | python3 -c '
import json, sys
print(sum(e["rq_active"] for c in json.load(sys.stdin)["clusters"] for e in c["endpoints"]))')
expect_eq "no request left in flight on any endpoint (/clusters rq_active)" "0" "$active"

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
