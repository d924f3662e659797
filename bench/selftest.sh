#!/usr/bin/env bash
# Functional checks of legate-load against nginx on 127.0.0.1 (well under 20 s):
# TLS and mTLS over h1 and h2, --new-conn, --hold, h2c, plain h1, headers,
# bodies, reconnects after the server closes, and each error counter.
# Prints "N passed, N failed" last; exits 1 if any check failed.
set -uo pipefail
. "$(dirname "$0")/testlib.sh"
lb_init
lb_make_certs
mkdir -p "$LB_DIR/www" && echo ok > "$LB_DIR/www/ok.txt"

P_TLS=$(lb_free_port)   # TLS, h2 and http/1.1 by ALPN
P_MTLS=$(lb_free_port)  # the same, requiring a client certificate
P_H1TLS=$(lb_free_port) # TLS without h2
P_PLAIN=$(lb_free_port) # cleartext HTTP/1.1
P_H2C=$(lb_free_port)   # cleartext prior-knowledge HTTP/2
P_SHORT=$(lb_free_port) # TLS, closes connections after 20 requests
LOCS="
        location / { return 200 \"ok\\n\"; }
        location /missing { return 404; }
        location /hdr {
            if (\$http_x_legate_test != \"yes\") { return 403; }
            return 200 \"ok\\n\";
        }
        location /slow {
            # One request a minute per X-Slow value, the others wait:
            # responses that never come within --timeout. (A \"return\"
            # would answer before limit_req runs.)
            limit_req zone=slow burst=1000;
            root $LB_DIR/www;
            try_files /ok.txt =404;
        }"
lb_start_nginx selftest "
    limit_req_zone \$http_x_slow zone=slow:1m rate=1r/m;
    server { listen 127.0.0.1:$P_TLS ssl http2; $LOCS }
    server {
        listen 127.0.0.1:$P_MTLS ssl http2;
        ssl_verify_client on;
        ssl_client_certificate $LB_DIR/ca.pem;
        $LOCS
    }
    server { listen 127.0.0.1:$P_H1TLS ssl; $LOCS }
    server { listen 127.0.0.1:$P_PLAIN; $LOCS }
    server { listen 127.0.0.1:$P_H2C http2; $LOCS }
    server { listen 127.0.0.1:$P_SHORT ssl http2; keepalive_requests 20; $LOCS }
" "$P_TLS" "$P_MTLS" "$P_H1TLS" "$P_PLAIN" "$P_H2C" "$P_SHORT"

D=$LB_DIR
MTLS=(--cert "$D/client.pem" --key "$D/client.key" --cacert "$D/ca.pem" --sni localhost)
SHORT=(-w 0.05 -d 0.25)
passed=0
failed=0
n=0

# check NAME RC CONDITIONS -- ARGS...: runs legate-load ARGS; passes if it
# exits with RC and every condition holds. Conditions: FIELD>N, FIELD=N on the
# RESULT line, "out:TEXT" (stdout contains TEXT), "err:TEXT" (stderr contains
# TEXT), "holding=N" (stdout has "HOLDING n=N"), "sorted" (p50 <= p90 <=
# p99 <= p999 <= max).
check() {
    local name=$1 want_rc=$2 conds=$3
    shift 4
    n=$((n + 1))
    local out="$D/t$n.out" err="$D/t$n.err" rc=0 why="" line c f v t0 ms
    t0=$(date +%s%N)
    timeout 60 "$LB_LOAD" "$@" >"$out" 2>"$err" || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    line=$(tail -n 1 "$out")
    [ "$rc" = "$want_rc" ] || why="exit status $rc, expected $want_rc"
    for c in $conds; do
        [ -n "$why" ] && break
        case "$c" in
        holding=*) grep -qx "HOLDING n=${c#holding=}" "$out" || why="no \"HOLDING n=${c#holding=}\"" ;;
        out:*) grep -qF -- "${c#out:}" "$out" || why="stdout lacks \"${c#out:}\"" ;;
        err:*) grep -qF -- "${c#err:}" "$err" || why="stderr lacks \"${c#err:}\"" ;;
        sorted)
            local prev=0 p
            for f in p50_us p90_us p99_us p999_us max_us; do
                p=$(lb_field "$line" "$f")
                [ -n "$p" ] && [ "$p" -ge "$prev" ] || { why="percentiles not ordered"; break; }
                prev=$p
            done ;;
        *\>*) f=${c%%>*}; v=$(lb_field "$line" "$f")
              [ -n "$v" ] && [ "$v" -gt "${c#*>}" ] || why="$f=$v, expected > ${c#*>}" ;;
        *=*) f=${c%%=*}; v=$(lb_field "$line" "$f")
             [ "$v" = "${c#*=}" ] || why="$f=$v, expected ${c#*=}" ;;
        esac
    done
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        echo "ok   $n $name (${ms} ms)"
    else
        failed=$((failed + 1))
        echo "FAIL $n $name: $why (${ms} ms)"
        echo "     legate-load $*"
        sed 's/^/     | /' "$out" "$err" | tail -n 12
    fi
}

T=https://127.0.0.1:$P_TLS
M=https://127.0.0.1:$P_MTLS
OKC="requests>0 errors=0 sorted"

check "h1 over TLS" 0 "$OKC" -- -p h1 -c 4 "${SHORT[@]}" "$T/"
check "h2 over TLS, 2 threads" 0 "$OKC" -- -p h2 -c 4 -m 8 -t 2 "${SHORT[@]}" "$T/"
check "h1 mTLS" 0 "$OKC" -- -p h1 -c 4 "${SHORT[@]}" "${MTLS[@]}" "$M/"
check "h2 mTLS" 0 "$OKC" -- -p h2 -c 4 -m 4 "${SHORT[@]}" "${MTLS[@]}" "$M/"
check "h1 mTLS --new-conn" 0 "$OKC" -- -p h1 -c 4 --new-conn "${SHORT[@]}" "${MTLS[@]}" "$M/"
check "h2 mTLS --new-conn" 0 "$OKC" -- -p h2 -c 4 --new-conn "${SHORT[@]}" "${MTLS[@]}" "$M/"
check "h1 mTLS --hold -c 2000" 0 "holding=2000 requests=2000 errors=0" -- \
    -p h1 -c 2000 --hold 0.2 "${MTLS[@]}" "$M/"
check "h2 mTLS --hold -c 200, 2 threads" 0 "holding=200 requests=200 errors=0" -- \
    -p h2 -c 200 -t 2 --hold 0.2 "${MTLS[@]}" "$M/"
check "cleartext h1" 0 "$OKC" -- -p h1 -c 4 "${SHORT[@]}" "http://127.0.0.1:$P_PLAIN/"
check "cleartext h2 (prior knowledge)" 0 "$OKC" -- -p h2 -c 2 -m 4 "${SHORT[@]}" "http://127.0.0.1:$P_H2C/"
check "h1 -H reaches the server" 0 "$OKC" -- -p h1 -c 2 -H "X-Legate-Test: yes" "${SHORT[@]}" "$T/hdr"
check "h2 -H reaches the server" 0 "$OKC" -- -p h2 -c 2 -H "X-Legate-Test: yes" "${SHORT[@]}" "$T/hdr"
check "h1 --body-size 100000" 0 "$OKC" -- -p h1 -c 2 --body-size 100000 "${SHORT[@]}" "$T/"
check "h2 --body-size 100000" 0 "$OKC" -- -p h2 -c 2 -m 2 --body-size 100000 "${SHORT[@]}" "$T/"
check "h1 server closes after 20 requests: no errors" 0 "$OKC" -- -p h1 -c 4 "${SHORT[@]}" "https://127.0.0.1:$P_SHORT/"
check "h2 server sends GOAWAY after 20 requests: no errors" 0 "$OKC" -- -p h2 -c 4 -m 4 "${SHORT[@]}" "https://127.0.0.1:$P_SHORT/"
check "404 counts in err_status" 1 "requests=0 err_status>0" -- -p h1 -c 2 -w 0 -d 0.2 "$T/missing"
check "h2 403 counts in err_status" 1 "requests=0 err_status>0" -- -p h2 -c 2 -w 0 -d 0.2 "$T/hdr"
# nginx completes the handshake without a client certificate and answers 400.
check "mTLS without a client certificate: refused" 1 "requests=0 err_status>0" -- \
    -p h1 -c 2 -w 0 -d 0.2 --cacert "$D/ca.pem" --sni localhost "$M/"
check "h2 mTLS without a client certificate: refused" 1 "requests=0 err_status>0" -- \
    -p h2 -c 2 -w 0 -d 0.2 "$M/"
check "--cacert of another CA: err_tls" 1 "requests=0 err_tls>0 out:certificate" -- \
    -p h1 -c 2 -w 0 -d 0.2 --cacert "$D/other-ca.pem" --sni localhost "$T/"
check "--sni not in the certificate: err_tls" 1 "requests=0 err_tls>0" -- \
    -p h1 -c 2 -w 0 -d 0.2 --cacert "$D/ca.pem" --sni wrong.example "$T/"
check "-p h2 but the server has no h2: clear failure" 1 "err:ALPN" -- -p h2 -c 1 -w 0 -d 0.2 "https://127.0.0.1:$P_H1TLS/"
check "nothing listening: err_connect" 1 "requests=0 err_connect>0" -- -p h1 -c 2 -w 0 -d 0.2 "http://127.0.0.1:$(lb_free_port)/"
# The first request of each run is answered at once, the rest time out.
check "h1 slow responses: err_timeout" 0 "requests=1 err_timeout>2" -- -p h1 -c 3 -w 0 -d 0.6 \
    --timeout 0.15 -H "X-Slow: h1-$$" "$T/slow"
check "h2 slow responses: err_timeout" 0 "requests=1 err_timeout>2" -- -p h2 -c 1 -m 3 -w 0 -d 0.6 \
    --timeout 0.15 -H "X-Slow: h2-$$" "$T/slow"
check "usage: bad -p" 2 "" -- -p h3 "$T/"
check "usage: no URL" 2 "" -- -c 4
check "usage: -c 0" 2 "" -- -c 0 "$T/"
check "usage: bad URL" 2 "" -- "ftp://127.0.0.1/"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
