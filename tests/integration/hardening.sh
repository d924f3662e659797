#!/usr/bin/env bash
# Hostile clients: HTTP/2 rapid reset and oversized SETTINGS, connection-
# specific headers in HTTP/2, and HTTP/1.1 request smuggling shapes. Each is
# refused the way it should be, and the proxy keeps serving everyone else.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
P=$(free_port); P_HOLE=$(free_port); P_T=$(free_port); P_IDLE=$(free_port); P_ADMIN=$(free_port)
P_UP=$(free_port)
start_blackhole "$P_HOLE"
start_bg up python3 "$SRC/tests/integration/upstream.py" "$P_UP" up
wait_port "$P_UP"
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
          route_config:
            virtual_hosts:
            - name: good
              domains: ["good.example"]
              routes:
              - match: { prefix: / }
                direct_response: { status: 203, body: { inline_string: "good\n" } }
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /healthz }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
              - match: { prefix: /hole }
                route: { cluster: hole, timeout: 30s }
              - match: { prefix: /up }
                route: { cluster: up }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  - name: timeouts
    address: { socket_address: { address: 127.0.0.1, port_value: $P_T } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: timeouts
          request_timeout: 1s
          stream_idle_timeout: 1.5s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: hole, timeout: 30s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  - name: idle
    address: { socket_address: { address: 127.0.0.1, port_value: $P_IDLE } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: idle
          common_http_protocol_options: { idle_timeout: 1s }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                direct_response: { status: 200, body: { inline_string: "ok\n" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: hole
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: hole
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_HOLE } } } }] }]
$(static_cluster up "$P_UP")
YAML
LEGATE_PORT=$P start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
H2=$SRC/tests/integration/h2raw.py

out=$(python3 "$H2" "$P" rapid-reset)
check "HTTP/2 rapid reset: GOAWAY ENHANCE_YOUR_CALM (11), then the connection closes" \
  bash -c "grep -q '^goaway 11$' <<<\"\$1\" && grep -q '^closed$' <<<\"\$1\"" _ "$out"
check "... and legate says why" grep -q "streams reset by 127.0.0.1:[0-9]* before their response: closing (rapid reset)" "$WORK/legate.log"
out=$(python3 "$H2" "$P" big-settings)
check "HTTP/2 SETTINGS with 40 entries: connection error ENHANCE_YOUR_CALM" grep -q "^goaway 11$" <<<"$out"
out=$(python3 "$H2" "$P" conn-header)
check "HTTP/2 request with a connection-specific header: stream reset PROTOCOL_ERROR (1)" grep -q "^rst 1 1$" <<<"$out"
expect_eq "HTTP/2 clients that behave are served meanwhile" "status 200" "$(python3 "$H2" "$P" ok)"
# After legate's GOAWAY (a broken frame) the client floods: legate discards a
# little (so the GOAWAY is not lost to an RST), then resets, instead of
# reading for its whole 2 s linger (3 GB in the probe).
flood=$(timeout 20 python3 - "$P" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # SETTINGS
s.sendall(b"\x00\x00\x05\xff\x00\x00\x00\x00\x00" + b"x" * 5)  # a frame of an unknown type on stream 0 is fine...
s.sendall(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # WINDOW_UPDATE of 0: PROTOCOL_ERROR, GOAWAY
time.sleep(0.3)
chunk = b"z" * 65536
sent, t0 = 0, time.time()
try:
    while sent < (512 << 20) and time.time() - t0 < 10:
        sent += s.send(chunk)
except OSError:
    pass
print(sent >> 20)
PY
)
check "a client flooding after GOAWAY is cut off: ${flood:-?} MiB accepted (< 32)" test "${flood:-999}" -lt 32

raw() { # raw BYTES: the status line of the reply
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
' "$P"
}
B400="HTTP/1.1 400 Bad Request"
expect_eq "HTTP/1.1: Content-Length and Transfer-Encoding together: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.1: two different Content-Length: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde')"
expect_eq "HTTP/1.1: obs-fold (a header continued on the next line): 400" "$B400" \
  "$(raw 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n')"
expect_eq "HTTP/1.1: a space in a header name: 400" "$B400" \
  "$(raw 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: a\r\n\r\n')"
expect_eq "HTTP/1.1: a NUL in a header value: 400" "$B400" \
  "$(raw 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n')"
expect_eq "HTTP/1.1: Transfer-Encoding other than chunked: 501 or 400" "ok" \
  "$(r=$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n'); [[ "$r" == "HTTP/1.1 501 Not Implemented" || "$r" == "$B400" ]] && echo ok || echo "$r")"
# Strict request targets, framing and Host (RFC 9112; nginx and Envoy refuse these too).
expect_eq "HTTP/1.1: a TAB in the request target: 400" "$B400" "$(raw 'GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n')"
expect_eq "HTTP/1.1: a form feed in the request target: 400" "$B400" "$(raw 'GET /a\fb HTTP/1.1\r\nHost: x\r\n\r\n')"
expect_eq "HTTP/1.1: bytes >= 0x80 in the request target: 400" "$B400" "$(raw 'GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n')"
expect_eq "HTTP/1.1: a #fragment in the request target: 400" "$B400" "$(raw 'GET /healthz#x HTTP/1.1\r\nHost: x\r\n\r\n')"
expect_eq "HTTP/1.1: Transfer-Encoding: identity, chunked: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.1: Transfer-Encoding: chunked, chunked: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.1: two Transfer-Encoding: chunked headers: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.0 with Transfer-Encoding: 400" "$B400" \
  "$(raw 'POST /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')"
expect_eq "HTTP/1.1: two Host headers: 400" "$B400" "$(raw 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')"
expect_eq "HTTP/1.1: an empty Host: 400" "$B400" "$(raw 'GET /healthz HTTP/1.1\r\nHost: \r\n\r\n')"
expect_eq "HTTP/1.1: an invalid Host (a/b): 400" "$B400" "$(raw 'GET /healthz HTTP/1.1\r\nHost: a/b\r\n\r\n')"
expect_eq "HTTP/1.1: userinfo in an absolute-form target: 400" "$B400" \
  "$(raw 'GET http://u@good.example/ HTTP/1.1\r\nHost: good.example\r\n\r\n')"
expect_eq "HTTP/1.1: absolute-form: the target's authority wins over Host (routed to good.example: 203)" \
  "HTTP/1.1 203" "$(raw 'GET http://good.example/healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n' | cut -d' ' -f1-2)"
expect_eq "... and the other way round (routed to the catch-all)" "HTTP/1.1 200 OK" \
  "$(raw 'GET http://evil.example:80/healthz HTTP/1.1\r\nHost: good.example\r\n\r\n')"
expect_eq "HTTP/1.1: a Host with a port and an IPv6 literal are fine" "HTTP/1.1 200 OK|HTTP/1.1 200 OK" \
  "$(raw 'GET /healthz HTTP/1.1\r\nHost: x.example:8080\r\n\r\n')|$(raw 'GET /healthz HTTP/1.1\r\nHost: [::1]:80\r\n\r\n')"
n_err=$(curl -s "http://127.0.0.1:$P_ADMIN/stats" | sed -n 's/^http.plain.downstream_cx_protocol_error: //p')
check "the malformed requests are counted in http.plain.downstream_cx_protocol_error (${n_err:-none} >= 12)" \
  test "${n_err:-0}" -ge 12
expect_eq "HTTP/1.1: still serving" "200" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/healthz")"

# Chunked request bodies framed as RFC 9112 7.1 says, or 400 (http-parser as
# distributions build it accepts the bad ones; Envoy and nginx strict do not).
chunked() { # chunked PATH PART...: a chunked POST to PATH whose body is the PARTs (Python
  # escapes), each after 0.3 s; prints "status line|first line of the body|closed or open"
  # (a 200 leaves the connection alone: "-"). A last PART "-" drops the CRLF ending the head.
  timeout 10 python3 - "$P" "$@" <<'PY'
import socket, sys, time
b = lambda s: s.encode().decode("unicode_escape").encode("latin-1")
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(3)
head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % sys.argv[2].encode()
parts = sys.argv[3:]
if parts[-1] == "-":
    head, parts = head[:-2], parts[:-1]
for i, part in enumerate(parts):
    if i:
        time.sleep(0.3)
    try:
        s.sendall((head if i == 0 else b"") + b(part))
    except OSError:
        break
data, end = b"", "open"
try:
    while True:
        d = s.recv(65536)
        if not d:
            end = "closed"
            break
        data += d
        h, _, body = data.partition(b"\r\n\r\n")
        n = [int(l.split(b":")[1]) for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        if data.startswith(b"HTTP/1.1 200") and n and len(body) >= n[0]:
            end = "-"
            break
except socket.timeout:
    pass
except ConnectionResetError:
    end = "reset"
h, _, body = data.partition(b"\r\n\r\n")
print("%s|%s|%s" % (h.split(b"\r\n")[0].decode(errors="replace"), body.split(b"\n")[0].decode(errors="replace"), end))
PY
}
admin_stat() { curl -s "http://127.0.0.1:$P_ADMIN/stats" | sed -n "s/^$1: //p"; }
n_err0=$(admin_stat http.plain.downstream_cx_protocol_error)
expect_eq "chunked: junk in place of the CRLF after chunk data: 400, closed" \
  "$B400|chunk data not followed by CRLF|closed" "$(chunked /up/a '3\r\nabcXX0\r\n\r\n')"
expect_eq "chunked: whitespace after a chunk size: 400, closed" \
  "$B400|whitespace at the end of a chunk line|closed" "$(chunked /up/b '3 \r\nabc\r\n0\r\n\r\n')"
expect_eq "chunked: ... and after the last chunk's size" \
  "$B400|whitespace at the end of a chunk line|closed" "$(chunked /up/b '3\r\nabc\r\n0\t\r\n\r\n')"
expect_eq "chunked: a bare LF in a chunk extension: 400, closed" \
  "$B400|chunk line not ended by CRLF|closed" "$(chunked /up/c '3;a\nb\r\nabc\r\n0\r\n\r\n')"
expect_eq "chunked: a bare LF ending a chunk-size line: 400, closed" \
  "$B400|chunk line not ended by CRLF|closed" "$(chunked /up/d '3\nabc\r\n0\r\n\r\n')"
expect_eq "chunked: a CR not followed by LF ending a chunk-size line: 400, closed" \
  "$B400|chunk line not ended by CRLF|closed" "$(chunked /up/d '3\rabc\r\n0\r\n\r\n')"
expect_eq "chunked: a head ended by CR and a junk byte, not CRLF (http-parser takes any): 400, closed" \
  "$B400|invalid chunk size|closed" "$(chunked /up/h '\rX3\r\nabc\r\n0\r\n\r\n' -)"
expect_eq "chunked: a chunk extension name that is not a token: 400, closed" \
  "$B400|invalid chunk extension|closed" "$(chunked /up/e '3;a@b\r\nabc\r\n0\r\n\r\n')"
expect_eq "chunked: a line break inside a quoted extension value: 400, closed" \
  "$B400|invalid chunk extension|closed" "$(chunked /up/e '3;a=\"x\r\ny\"\r\nabc\r\n0\r\n\r\n')"
expect_eq "the upstream never saw any of them (cluster.up.upstream_cx_total)" "0" "$(admin_stat cluster.up.upstream_cx_total)"
expect_eq "chunked: a bad chunk line in a later read, after a good chunk: 400, closed" \
  "$B400|whitespace at the end of a chunk line|closed" "$(chunked /up/f '5\r\nhello\r\n' '3 \r\nabc\r\n0\r\n\r\n')"
n_err=$(admin_stat http.plain.downstream_cx_protocol_error)
check "... each counted in http.plain.downstream_cx_protocol_error (${n_err0:-?} -> ${n_err:-?})" \
  test "$((${n_err:-0} - ${n_err0:-0}))" -eq 10
expect_eq "chunked: extensions with BWS, tokens and quoted strings (a ';', an escaped quote) pass" \
  "HTTP/1.1 200 OK|up POST /up/ext bytes=7|-" \
  "$(chunked /up/ext '3;name=\"a b;c\\\"d\"\r\nabc\r\n4 ; x = y\t;z\r\ndefg\r\n0;end=1\r\n\r\n')"
expect_eq "chunked: framing split across reads, and trailers, pass" "HTTP/1.1 200 OK|up POST /up/split bytes=8|-" \
  "$(chunked /up/split '3\r\na' 'bc\r' '\n5;q=\"' '\"\r\nhello\r\n0\r\nx-t: 1\r\n\r\n')"
expect_eq "chunked: a 1 MiB upload from curl passes" "up PUT /up/big bytes=1048576" \
  "$(head -c 1048576 /dev/zero | curl -s -T - "http://127.0.0.1:$P/up/big")"

# /clusters shows requests in flight per endpoint.
rq_active() {
  curl -s "http://127.0.0.1:$P_ADMIN/legate/clusters" | python3 -c '
import json,sys
print([e["rq_active"] for c in json.load(sys.stdin)["clusters"] if c["name"]=="hole" for e in c["endpoints"]][0])'
}
curl -s -m 10 -o /dev/null "http://127.0.0.1:$P/hole/a" & c1=$!
curl -s -m 10 -o /dev/null "http://127.0.0.1:$P/hole/b" & c2=$!
for _ in $(seq 1 50); do [ "$(rq_active)" = 2 ] && break; sleep 0.1; done
expect_eq "/clusters: two requests in flight to the black-hole endpoint" "2" "$(rq_active)"
kill $c1 $c2; wait $c1 $c2 2>/dev/null
for _ in $(seq 1 50); do [ "$(rq_active)" = 0 ] && break; sleep 0.1; done
expect_eq "/clusters: back to 0 when the clients give up" "0" "$(rq_active)"

# Timeouts: a request body that stalls, and a stream on which nothing happens.
slow() { # slow BYTES MIN MAX: sends them, waits for the answer; prints its status line, and "in time"
  # when it came after MIN to MAX seconds (else how long it took). The timer
  # may start a little before the client's clock does: MIN allows for that.
  printf "$1" | timeout 10 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
t = time.time()
d = s.recv(4096)
e = time.time() - t
print("%s %s" % (d.split(b"\r\n", 1)[0].decode(),
                 "in time" if float(sys.argv[2]) <= e <= float(sys.argv[3]) else "after %.2f s" % e))
' "$P_T" "$2" "$3"
}
expect_eq "request_timeout: a body that never finishes gets 408 after 1 s" "HTTP/1.1 408 Request Timeout in time" \
  "$(slow 'POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789' 0.9 1.9)"
expect_eq "stream_idle_timeout: an upstream that never answers, 408 after 1.5 s (route timeout 30 s)" \
  "HTTP/1.1 408 Request Timeout in time" "$(slow 'GET /idle HTTP/1.1\r\nHost: x\r\n\r\n' 1.4 2.4)"

# The connection idle timeout is pushed back by every request (lazily: the
# timer re-arms itself when it fires early) and closes the connection once
# it has been idle for the whole timeout.
out=$(timeout 10 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
answered = 0
for i in range(6):  # 2.4 s of requests 0.4 s apart, over a 1 s idle timeout
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    d = b""
    while not d.endswith(b"ok\n"):
        c = s.recv(4096)
        if not c:
            break
        d += c
    answered += d.startswith(b"HTTP/1.1 200")
    time.sleep(0.4)
t = time.time() - 0.4
closed = s.recv(4096) == b""
print(answered, closed, "%.1f" % (time.time() - t))
' "$P_IDLE")
read -r answered closed after <<<"$out"
expect_eq "idle_timeout 1 s: six requests 0.4 s apart are all answered on one connection" "6" "$answered"
expect_eq "... then the idle connection is closed" "True" "$closed"
check "... 1 s after the last response (took ${after}s)" \
  awk -v t="$after" 'BEGIN { exit !(t >= 0.9 && t <= 1.6) }'

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
