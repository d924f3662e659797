#!/usr/bin/env bash
# Large bodies through legate, checked byte for byte (sha256), for every
# pairing of client protocol and upstream protocol:
#   clients:   curl --http1.1, curl --http2-prior-knowledge (h2c), curl over
#              TLS with ALPN h2
#   upstreams: HTTP/1.1 (tests/peers/blob_server.py), HTTP/2 h2c (nghttpd)
# Downloads of 50 MiB, three times per pairing; uploads of 20 MiB (with a
# length, and chunked from the HTTP/1.1 client); slow readers (10 MiB read at
# 5 MB/s), which make legate hold the upstream back instead of failing or
# stalling. Every transfer has a deadline, and a download whose body stops
# growing for 4 s is stopped, so a stall fails its check (named after the
# pairing, marked STALLED) instead of hanging the test.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
# A stall never ends; a starved process (a sanitizer build beside another
# test on 2 cores) pauses for seconds. 12 s without a byte is a stall.
STALL_S=12
# Debian's python3 directly: a python3 shim earlier on PATH (pyenv) costs half
# a second per call, and free_port calls it once per port.
[ -x /usr/bin/python3 ] && python3() { /usr/bin/python3 "$@"; }

command -v nghttpd >/dev/null || { not_ok "nghttpd is installed (Debian: nghttp2-server)"; finish; exit 1; }

C=$WORK/certs
"$SRC/scripts/gen-certs.sh" "$C"
D=$WORK/docroot
mkdir -p "$D"
head -c $((50 << 20)) /dev/urandom >"$D/big"
head -c $((10 << 20)) "$D/big" >"$D/ten"
head -c $((20 << 20)) /dev/urandom >"$WORK/upload"
SUM_BIG=$(sha256sum <"$D/big" | cut -c1-64)
SUM_TEN=$(sha256sum <"$D/ten" | cut -c1-64)
SUM_UP=$(sha256sum <"$WORK/upload" | cut -c1-64)

P_PLAIN=$(free_port); P_TLS=$(free_port); P_H1=$(free_port); P_H2=$(free_port)
LEGATE_PORT=$P_PLAIN
start_bg up-h1 /usr/bin/python3 "$SRC/tests/peers/blob_server.py" "$P_H1" "$D"
# --echo-upload: a POST is answered with its own body.
start_bg up-h2 nghttpd --no-tls -a 127.0.0.1 -d "$D" --echo-upload "$P_H2"
wait_port "$P_H1" || { not_ok "HTTP/1.1 upstream started"; finish; exit 1; }
wait_port "$P_H2" || { not_ok "HTTP/2 upstream (nghttpd) started"; cat "$WORK/up-h2.log"; finish; exit 1; }

hcm() {
  cat <<YAML
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /h1/ }
                route: { cluster: h1, prefix_rewrite: /, timeout: 60s }
              - match: { prefix: /h2/ }
                route: { cluster: h2, prefix_rewrite: /, timeout: 60s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}
cat >"$WORK/legate.yaml" <<YAML
static_resources:
  listeners:
  - name: plain
    address: { socket_address: { address: 127.0.0.1, port_value: $P_PLAIN } }
    filter_chains:
    - filters:
$(hcm plain)
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: $P_TLS } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
      filters:
$(hcm tls)
  clusters:
$(static_cluster h1 "$P_H1")
$(static_cluster h2 "$P_H2" h2)
YAML

start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_TLS" || { not_ok "TLS listener up"; finish; exit 1; }

CLIENTS=(h1 h2c h2tls)
UPSTREAMS=(h1 h2)
declare -A CLIENT_NAME=([h1]="curl --http1.1" [h2c]="curl h2c (prior knowledge)" [h2tls]="curl TLS+ALPN h2")
declare -A CLIENT_HTTP=([h1]=1.1 [h2c]=2 [h2tls]=2)
declare -A UP_NAME=([h1]="HTTP/1.1 upstream" [h2]="HTTP/2 upstream")
declare -A DL_PATH=([h1]=/h1/files [h2]=/h2)

# curl_for CLIENT PATH: sets CURL_ARGS and URL for a request from that
# client. curl ends a transfer that takes over 60 s, or averages under
# 1 KiB/s for 5 s (its measure lags a stall by some seconds), with exit code 28.
curl_for() {
  CURL_ARGS=(-sS --max-time 90 --speed-limit 1024 --speed-time "$STALL_S")
  case $1 in
    h1) CURL_ARGS+=(--http1.1); URL=http://127.0.0.1:$P_PLAIN$2 ;;
    h2c) CURL_ARGS+=(--http2-prior-knowledge); URL=http://127.0.0.1:$P_PLAIN$2 ;;
    h2tls) CURL_ARGS+=(--http2 --cacert "$C/ca.pem" --resolve "localhost:$P_TLS:127.0.0.1"); URL=https://localhost:$P_TLS$2 ;;
  esac
}
META_FMT='META %{http_code} %{size_download} http=%{http_version}\n'
XFER_ERR=$WORK/xfer.log

# download CLIENT PATH [CURL ARGS...]: sets GOT to "CODE BYTES http=VERSION
# sha=SHA256 rc=CURL_EXIT" for one download, with "rc=stalled" when the body
# stopped growing for STALL_S seconds (then curl is stopped); curl's errors
# are in $XFER_ERR. Runs in this shell (not in $(...)), so that cleanup knows
# the curl process.
download() {
  local body=$WORK/body size=-1 still=0 now rc
  curl_for "$1" "$2"; shift 2
  : >"$body"
  start_bg xfer curl "${CURL_ARGS[@]}" "$@" -o "$body" -w "$META_FMT" "$URL"
  while kill -0 "$PID_xfer" 2>/dev/null; do
    sleep 0.25
    now=$(stat -c %s "$body" 2>/dev/null || echo 0)
    if [ "$now" = "$size" ]; then still=$((still + 1)); else still=0; size=$now; fi
    if [ "$still" -ge $((STALL_S * 4)) ]; then
      kill "$PID_xfer" 2>/dev/null
      wait "$PID_xfer" 2>/dev/null
      GOT="- $now http=? sha=$(sha256sum <"$body" | cut -c1-64) rc=stalled"
      rm -f "$body"
      return
    fi
  done
  wait "$PID_xfer"; rc=$?
  GOT="$(grep '^META ' "$XFER_ERR" | tail -n1 | cut -d' ' -f2-) sha=$(sha256sum <"$body" | cut -c1-64) rc=$rc"
  rm -f "$body"
}
# upload CLIENT PATH [CURL ARGS...]: the same for a request whose response
# comes after the upload (no watcher: curl's own speed limit ends a stall).
upload() {
  local sum rc
  curl_for "$1" "$2"; shift 2
  sum=$(curl "${CURL_ARGS[@]}" "$@" -o - -w "%{stderr}$META_FMT" "$URL" \
          2>"$XFER_ERR" | sha256sum | cut -c1-64; exit "${PIPESTATUS[0]}")
  rc=$?
  echo "$(grep '^META ' "$XFER_ERR" | tail -n1 | cut -d' ' -f2-) sha=$sum rc=$rc"
}
# expect_xfer LABEL EXPECTED ACTUAL: expect_eq, and on failure says whether
# the transfer stalled and what curl said.
expect_xfer() {
  local before=$FAIL
  expect_eq "$1" "$2" "$3"
  if [ "$FAIL" -ne "$before" ]; then
    case $3 in
      *rc=stalled) echo "     STALLED (no byte for ${STALL_S} s): $1" ;;
      *rc=28) echo "     STALLED or too slow: $1" ;;
    esac
    grep -v '^META ' "$XFER_ERR" | head -n 3 | sed 's/^/     /'
  fi
}
SECONDS0=$SECONDS

# --- downloads: 50 MiB, three times per pairing ---------------------------------------------
# One at a time: a client that reads as fast as legate writes is what shows
# a writer that waits for a writable event that never comes.
for c in "${CLIENTS[@]}"; do
  for u in "${UPSTREAMS[@]}"; do
    for i in 1 2 3; do
      download "$c" "${DL_PATH[$u]}/big"
      expect_xfer "download 50 MiB: ${CLIENT_NAME[$c]} -> legate -> ${UP_NAME[$u]} ($i/3)" \
        "200 $((50 << 20)) http=${CLIENT_HTTP[$c]} sha=$SUM_BIG rc=0" "$GOT"
    done
  done
done
echo "     (downloads took $((SECONDS - SECONDS0)) s)"
SECONDS0=$SECONDS

# --- uploads: 20 MiB ------------------------------------------------------------------------------
# What the upstream saw: blob_server.py answers "sha256=... bytes=...", so
# the expected answer is known; nghttpd echoes the body back whole.
UP_H1_ANSWER=$(printf 'sha256=%s bytes=%s\n' "$SUM_UP" $((20 << 20)))
UP_H1_SUM=$(printf '%s\n' "$UP_H1_ANSWER" | sha256sum | cut -c1-64)
UP_H1_LEN=$(( ${#UP_H1_ANSWER} + 1 ))
for c in "${CLIENTS[@]}"; do
  expect_xfer "upload 20 MiB: ${CLIENT_NAME[$c]} -> legate -> HTTP/1.1 upstream (the upstream's sha256 of it)" \
    "200 $UP_H1_LEN http=${CLIENT_HTTP[$c]} sha=$UP_H1_SUM rc=0" \
    "$(upload "$c" /h1/upload --data-binary @"$WORK/upload")"
  expect_xfer "upload 20 MiB: ${CLIENT_NAME[$c]} -> legate -> HTTP/2 upstream (echoed back whole)" \
    "200 $((20 << 20)) http=${CLIENT_HTTP[$c]} sha=$SUM_UP rc=0" \
    "$(upload "$c" /h2/upload --data-binary @"$WORK/upload")"
done
for u in "${UPSTREAMS[@]}"; do
  if [ "$u" = h1 ]; then want="200 $UP_H1_LEN http=1.1 sha=$UP_H1_SUM rc=0"
  else want="200 $((20 << 20)) http=1.1 sha=$SUM_UP rc=0"; fi
  expect_xfer "upload 20 MiB chunked: curl --http1.1 -> legate -> ${UP_NAME[$u]}" "$want" \
    "$(upload h1 "/$u/upload" -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/upload")"
done

echo "     (uploads took $((SECONDS - SECONDS0)) s)"
SECONDS0=$SECONDS

# --- slow readers: 10 MiB read at 5 MB/s -------------------------------------------------------
# legate must hold the upstream back (flow control, or not reading it) and
# resume it as the client reads, instead of failing or stalling.
for c in h1 h2c; do
  for u in "${UPSTREAMS[@]}"; do
    download "$c" "${DL_PATH[$u]}/ten" --limit-rate 5M
    expect_xfer "slow reader (5 MB/s) 10 MiB: ${CLIENT_NAME[$c]} -> legate -> ${UP_NAME[$u]}" \
      "200 $((10 << 20)) http=${CLIENT_HTTP[$c]} sha=$SUM_TEN rc=0" "$GOT"
  done
done
echo "     (slow readers took $((SECONDS - SECONDS0)) s)"

# --- still serving -----------------------------------------------------------------------------------
download h2c /h1/files/ten
expect_xfer "after all that, a 10 MiB download still works (h2c -> HTTP/1.1 upstream)" \
  "200 $((10 << 20)) http=2 sha=$SUM_TEN rc=0" "$GOT"
check "legate is still running" kill -0 "$PID_legate"
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
echo "     (whole test: ${SECONDS} s)"
finish
