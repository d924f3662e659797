#!/usr/bin/env bash
# Informational (1xx) responses through legate, as Envoy handles them:
# - an HTTP/1.1 upstream's 103 Early Hints (with its link header) reaches
#   HTTP/1.1 and HTTP/2 clients before the 200; an HTTP/1.0 client gets
#   the 200 alone;
# - an HTTP/2 upstream's 103 HEADERS, then HEADERS 200 + DATA + trailers:
#   the 200 is the response (not trailers), the body arrives whole;
# - Expect: 100-continue from HTTP/2 and HTTP/1.1 clients: a 100 before the
#   body; legate answers it itself (and drops Expect) unless
#   proxy_100_continue, which forwards Expect and relays the upstream's 100.
# Peers: tests/peers/h1_upstream_1xx.py, h2_upstream.py, h2_client.py
# (python3-h2), curl.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

PY=/usr/bin/python3
PEERS=$SRC/tests/peers
if ! $PY -c 'import h2' 2>/dev/null; then
  not_ok "python3-h2 is installed (scripts/packages.txt)"
  finish; exit 1
fi

P_H1=$(free_port); P_H2=$(free_port); P_BASE=$(free_port); P_P100=$(free_port)
start_bg h1up $PY "$PEERS/h1_upstream_1xx.py" "$P_H1"
start_bg h2up $PY "$PEERS/h2_upstream.py" "$P_H2"
wait_port "$P_H1"; wait_port "$P_H2"

config() { # config PORT EXTRA_HCM_FIELDS
  cat <<YAML
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          $2
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /h2/ }
                route: { cluster: h2up }
              - match: { prefix: / }
                route: { cluster: h1up }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
$(static_cluster h1up "$P_H1")
$(static_cluster h2up "$P_H2" h2)
YAML
}
config "$P_BASE" "" > "$WORK/base.yaml"
config "$P_P100" "proxy_100_continue: true" > "$WORK/p100.yaml"

# up NAME CONFIG PORT: starts legate; fails fast (with its error) when it exits.
up() {
  start_bg "$1" "$BIN/legate" -c "$2" --concurrency 2 -l info
  local pid_var="PID_$1" end=$((SECONDS + 10))
  while [ $SECONDS -lt $end ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && { ok "legate ($1) started"; return 0; }
    kill -0 "${!pid_var}" 2>/dev/null || break
    sleep 0.05
  done
  not_ok "legate ($1) started"
  sed 's/^/     /' "$WORK/$1.log" | tail -5
  return 1
}
up legate_base "$WORK/base.yaml" "$P_BASE"
up legate_p100 "$WORK/p100.yaml" "$P_P100"

BODY_SHA=$(seq -f '%05g' 0 2999 | sha256sum | cut -d' ' -f1)
LINK='</style.css>; rel=preload; as=style'
H2LINK='</h2.css>; rel=preload; as=style'
h2c() { timeout 20 $PY "$PEERS/h2_client.py" "$@" 2>&1; }
# h1 OUT CURL_ARGS...: curl -v; $OUT.err has the trace, $OUT the body.
h1() { local o=$1; shift; curl -sv --max-time 5 -o "$o" "$@" 2>"$o.err"; }
codes() { sed -n 's/^< HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$1" | tr '\n' ' ' | sed 's/ $//'; }
# block FILE CODE: the header lines curl showed for the response with CODE.
block() { tr -d '\r' <"$1" | awk -v c="$2" '/^< HTTP\//{on = ($3 == c); next} on && /^< /'; }
# seq_of OUTPUT: the h2 client's informational and final statuses, in order.
seq_of() { grep -E '^(info|response) ' <<<"$1" | cut -d' ' -f1-2 | paste -sd'|'; }
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
show() { sed 's/^/     | /' <<<"$1"; }

# --- 103 Early Hints from an HTTP/1.1 upstream -------------------------------------------------
B=http://127.0.0.1:$P_BASE
h1 "$WORK/e11" --http1.1 "$B/early/h1"
expect_eq "h1 upstream 103 -> HTTP/1.1 client: a 103, then the 200" "103 200" "$(codes "$WORK/e11.err")"
check "... the 103 carries the upstream's link header" grep -qixF "< link: $LINK" <<<"$(block "$WORK/e11.err" 103)"
expect_eq "... and the 200's body is whole" "$BODY_SHA" "$(sha "$WORK/e11")"

out=$(h2c "$P_BASE" request GET /early/h2)
expect_eq "h1 upstream 103 -> HTTP/2 client: an informational HEADERS :status 103, then :status 200" \
  "info 103|response 200" "$(seq_of "$out")"
check "... the 103 carries the upstream's link header" grep -qF "link=$LINK" <<<"$(grep '^info 103' <<<"$out")"
expect_eq "... and the body is whole, the stream ends" "body 18000 $BODY_SHA|end" \
  "$(grep -E '^(body|end|reset|timeout)' <<<"$out" | paste -sd'|')"

h1 "$WORK/e10" -0 "$B/early/h10"
expect_eq "h1 upstream 103 -> HTTP/1.0 client: the 200 alone (no 1xx to HTTP/1.0)" "200" "$(codes "$WORK/e10.err")"
expect_eq "... with the whole body" "$BODY_SHA" "$(sha "$WORK/e10")"

# --- an HTTP/2 upstream: 103 HEADERS, then 200 HEADERS + DATA + trailers -------------------------
out=$(h2c "$P_BASE" request GET /h2/plain)
expect_eq "h2 upstream without a 103 (control): HTTP/2 client gets 200 and the body" \
  "response 200|body 18000 $BODY_SHA|end" \
  "$(grep -E '^(response|body|end|reset|timeout)' <<<"$out" | sed 's/^response 200 .*/response 200/' | paste -sd'|')"
start=$SECONDS
out=$(h2c "$P_BASE" request GET /h2/early)
expect_eq "h2 upstream 103 + 200 + DATA + trailers -> HTTP/2 client: the 200 is the response, body whole, in time" \
  "response 200|body 18000 $BODY_SHA|end" \
  "$(grep -E '^(response|body|end|reset|timeout)' <<<"$out" | sed 's/^response 200 .*/response 200/' | paste -sd'|')"
[ $((SECONDS - start)) -le 4 ] || echo "     (took $((SECONDS - start)) s)"
expect_eq "... and the upstream's 103 went before it" "info 103|response 200" "$(seq_of "$out")"
check "... with its link" grep -qF "link=$H2LINK" <<<"$(grep '^info 103' <<<"$out")"
grep -q '^response 200' <<<"$out" || show "$out"
h1 "$WORK/h2e11" --http1.1 "$B/h2/early"
expect_eq "h2 upstream 103 + 200 + DATA + trailers -> HTTP/1.1 client: 103 then 200" "103 200" "$(codes "$WORK/h2e11.err")"
expect_eq "... with the whole body within 5 s" "$BODY_SHA" "$(sha "$WORK/h2e11")"
check "... the 103 carries the link" grep -qixF "< link: $H2LINK" <<<"$(block "$WORK/h2e11.err" 103)"

# --- Expect: 100-continue, legate answering ------------------------------------------------------
head -c 5000 /dev/zero > "$WORK/5k"
out=$(h2c "$P_BASE" request POST /expect/h2 5000 expect)
expect_eq "HTTP/2 client with expect: 100-continue: a :status 100 within 2 s, before the body" \
  "continue" "$(head -1 <<<"$out")"
expect_eq "... then the upstream's 200, with the whole body received; Expect not forwarded (legate answered it)" \
  "response 200|text expect=- bytes=5000" \
  "$(grep -E '^(response|text) ' <<<"$out" | sed 's/^response 200 .*/response 200/' | paste -sd'|')"
h1 "$WORK/x11" --http1.1 --expect100-timeout 2 -H 'Expect: 100-continue' --data-binary @"$WORK/5k" "$B/expect/h1"
expect_eq "HTTP/1.1 client with Expect: 100-continue: 100, then 200" "100 200" "$(codes "$WORK/x11.err")"
expect_eq "... the body got through; Expect not forwarded (legate answered it)" "expect=- bytes=5000" "$(cat "$WORK/x11")"

# --- Expect: 100-continue with proxy_100_continue: true ------------------------------------------
P=http://127.0.0.1:$P_P100
out=$(h2c "$P_P100" request POST /expect/p100-h2 5000 expect)
expect_eq "proxy_100_continue, HTTP/2 client: a :status 100 within 2 s" "continue" "$(head -1 <<<"$out")"
check "... the upstream's 100, relayed (it carries x-upstream-100)" grep -q "^info 100 .*x-upstream-100=yes" <<<"$out"
expect_eq "... then 200; the upstream got Expect: 100-continue and the whole body" \
  "response 200|text expect=100-continue bytes=5000" \
  "$(grep -E '^(response|text) ' <<<"$out" | sed 's/^response 200 .*/response 200/' | paste -sd'|')"
grep -q '^response 200' <<<"$out" || show "$out"
h1 "$WORK/p11" --http1.1 --expect100-timeout 2 -H 'Expect: 100-continue' --data-binary @"$WORK/5k" "$P/expect/p100-h1"
expect_eq "proxy_100_continue, HTTP/1.1 client: one 100, then 200" "100 200" "$(codes "$WORK/p11.err")"
check "... the 100 is the upstream's (x-upstream-100: yes)" grep -qixF "< x-upstream-100: yes" <<<"$(block "$WORK/p11.err" 100)"
expect_eq "... the upstream got Expect: 100-continue and the whole body" "expect=100-continue bytes=5000" "$(cat "$WORK/p11" 2>/dev/null)"
check "... the upstream's log agrees" grep -q "^request POST /expect/p100-h1 HTTP/1.1 expect=100-continue" "$WORK/h1up.log"

# --- still standing --------------------------------------------------------------------------------------
for l in legate_base legate_p100; do
  pid_var="PID_$l"
  if kill -0 "${!pid_var}" 2>/dev/null; then
    kill -TERM "${!pid_var}"; wait "${!pid_var}"; rc=$?
    expect_eq "$l: still running at the end, SIGTERM exits 0" "0" "$rc"
  else
    not_ok "$l: still running at the end"
  fi
  check "$l: no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/$l.log'"
done
finish
