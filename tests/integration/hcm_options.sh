#!/usr/bin/env bash
# Listener options (freebind, ipv4_compat), route options (match.grpc,
# cluster_not_found_response_code) and HTTP connection manager options that
# change requests and responses:
# normalize_path and merge_slashes (the path is made canonical before
# routing, so /public/../admin cannot dodge a route for /admin, and goes
# upstream that way; without them legate routes and forwards the path as it
# came), path_with_escaped_slashes_action (REJECT_REQUEST, UNESCAPE_AND_REDIRECT,
# UNESCAPE_AND_FORWARD: the escaped-slash bypasses of a /admin route),
# server_header_transformation and via. HTTP/1.1 and HTTP/2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

P_NORM=$(free_port); P_RAW=$(free_port); P_ABSENT=$(free_port); P_UP=$(free_port)
P_VIP=$(free_port); P_DUAL=$(free_port); P_V6=$(free_port)
P_REJ=$(free_port); P_REDIR=$(free_port); P_FWD=$(free_port); P_ADMIN=$(free_port); P_SCHEME=$(free_port)
P_LR=$(free_port)
V6=0; grep -q '^0*1 ' /proc/net/if_inet6 2>/dev/null && V6=1
LEGATE_PORT=$P_NORM
start_bg up python3 "$SRC/tests/integration/upstream.py" "$P_UP" up
wait_port "$P_UP"

listener() { # listener NAME PORT EXTRA_HCM_FIELDS [ADDRESS [EXTRA_SOCKET_ADDRESS_FIELDS [EXTRA_LISTENER_FIELDS]]]
  cat <<YAML
  - name: $1
    address: { socket_address: { address: "${4:-127.0.0.1}", port_value: $2 ${5:-} } }
    ${6:-}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          $3
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /rpc/, grpc: {} }
                direct_response: { status: 200, body: { inline_string: "grpc\n" } }
              - match: { prefix: /rpc/ }
                direct_response: { status: 200, body: { inline_string: "not grpc\n" } }
              - match: { prefix: /viah2/ }
                route: { cluster: self_h2, prefix_rewrite: /h2seen/ }
              - match: { prefix: /gone404 }
                route: { cluster: gone, cluster_not_found_response_code: NOT_FOUND }
              - match: { prefix: /gone }
                route: { cluster: gone }
              - match: { prefix: /admin }
                direct_response: { status: 403, body: { inline_string: "admin is internal\n" } }
              - match: { prefix: / }
                route: { cluster: up }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
}
{
  echo "admin: { address: { socket_address: { address: 127.0.0.1, port_value: $P_ADMIN } } }"
  echo "static_resources:"
  echo "  listeners:"
  listener norm "$P_NORM" "normalize_path: true
          merge_slashes: true
          http2_protocol_options: { hpack_table_size: 0 }
          server_header_transformation: PASS_THROUGH
          via: legate-edge"
  listener raw "$P_RAW" "access_log: [{ name: envoy.access_loggers.file, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: $WORK/raw.log, log_format: { text_format_source: { inline_string: \"%REQ(:PATH)% %PROTOCOL% %REQ(:SCHEME)%\\n\" } } } }]"
  listener absent "$P_ABSENT" "server_header_transformation: APPEND_IF_ABSENT"
  listener scheme "$P_SCHEME" "scheme_header_transformation: { scheme_to_overwrite: https }"
  listener lr "$P_LR" "local_reply_config:
            mappers:
            - filter:
                and_filter:
                  filters:
                  - status_code_filter: { comparison: { op: EQ, value: { default_value: 404, runtime_key: lr.a } } }
                  - header_filter: { header: { name: x-mode, string_match: { exact: teapot } } }
              status_code: 418
              body: { inline_string: \"short and stout\\n\" }
              headers_to_add: [{ header: { key: x-mapped, value: teapot } }]
            - filter: { response_flag_filter: { flags: [NC] } }
              body_format_override:
                json_format: { code: \"%RESPONSE_CODE%\", msg: \"%LOCAL_REPLY_BODY%\", path: \"%REQ(:PATH)%\" }
            body_format:
              text_format: \"[%RESPONSE_CODE%] %LOCAL_REPLY_BODY%\"
              content_type: text/x-legate"
  listener rej "$P_REJ" "normalize_path: true
          path_with_escaped_slashes_action: REJECT_REQUEST"
  listener redir "$P_REDIR" "normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT"
  listener fwd "$P_FWD" "normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD"
  # an address this host does not have: only with freebind
  listener vip "$P_VIP" "" 192.0.2.7 "" "freebind: true"
  if [ $V6 = 1 ]; then
    listener dual "$P_DUAL" "" "::" ", ipv4_compat: true"
    listener v6 "$P_V6" "" "::"
  fi
  cat <<YAML
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: up, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_UP } } } }] }] }
  # HTTP/2 without an HPACK dynamic table, to legate's own "raw" listener
  - name: self_h2
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: { hpack_table_size: 0 } }
    load_assignment: { cluster_name: self_h2, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_RAW } } } }] }] }
YAML
} > "$WORK/legate.yaml"
start_legate legate "$WORK/legate.yaml" || { finish; exit 1; }
wait_port "$P_RAW"

get() { # get PORT PATH [curl args]: "status body" (--path-as-is: curl sends the path unchanged)
  local port=$1 path=$2; shift 2
  curl -s --path-as-is "$@" -w ' %{http_code}' "http://127.0.0.1:$port$path" | tr -d '\n'
}
expect_eq "normalize_path: /public/../admin is routed as /admin" "admin is internal 403" "$(get "$P_NORM" /public/../admin)"
expect_eq "... and so is an escaped dot-dot" "admin is internal 403" "$(get "$P_NORM" /public/%2e%2E/admin)"
expect_eq "... and a backslash" "admin is internal 403" "$(get "$P_NORM" '/public\..\admin')"
expect_eq "merge_slashes: //admin is routed as /admin" "admin is internal 403" "$(get "$P_NORM" //admin)"
expect_eq "HTTP/2 too" "admin is internal 403" "$(get "$P_NORM" /public/../admin --http2-prior-knowledge)"
expect_eq "the upstream gets the normalized path; the query is left alone" \
  "up GET /public/a/b?x=/../y bytes=0 200" "$(get "$P_NORM" '/public/./a//b?x=/../y')"
expect_eq "unreserved escapes are decoded, an escaped slash stays escaped (upper-case hex)" \
  "up GET /public/a%2Fb~ bytes=0 200" "$(get "$P_NORM" '/public/%61%2fb%7E')"
expect_eq "a broken escape: 400" "invalid path 400" "$(get "$P_NORM" /public/%zz)"
expect_eq "without the options: /public/../admin is routed and forwarded as it came" \
  "up GET /public/../admin bytes=0 200" "$(get "$P_RAW" /public/../admin)"
expect_eq "... //admin too" "up GET //admin bytes=0 200" "$(get "$P_RAW" //admin)"

# --- path_with_escaped_slashes_action --------------------------------------------
# The probe's bypasses of a /admin route (an upstream that decodes %2F, as
# nginx does, would serve /admin to them): none may reach the upstream.
BYPASSES=(/public/..%2fadmin /%2Fadmin /public%2F%2E%2E%2Fadmin '/public/..%5cadmin')
for path in "${BYPASSES[@]}"; do
  expect_eq "REJECT_REQUEST: $path is refused" "escaped slashes in path 400" "$(get "$P_REJ" "$path")"
  expect_eq "UNESCAPE_AND_REDIRECT: $path is sent to the unescaped, normalized path" "307 /admin" \
    "$(curl -s --path-as-is -o /dev/null -w '%{http_code} %header{location}' "http://127.0.0.1:$P_REDIR$path")"
  expect_eq "UNESCAPE_AND_FORWARD: $path is routed as /admin" "admin is internal 403" "$(get "$P_FWD" "$path")"
done
expect_eq "UNESCAPE_AND_REDIRECT: a client that follows lands on the /admin route" "admin is internal 403" \
  "$(get "$P_REDIR" /public/..%2fadmin -L)"
expect_eq "UNESCAPE_AND_REDIRECT over HTTP/2 too" "307 /admin" \
  "$(curl -s --path-as-is --http2-prior-knowledge -o /dev/null -w '%{http_code} %header{location}' "http://127.0.0.1:$P_REDIR/%2Fadmin")"
expect_eq "UNESCAPE_AND_REDIRECT: a gRPC call cannot follow: INTERNAL (13), as Envoy" "200 13" \
  "$(curl -s --path-as-is --http2-prior-knowledge -o /dev/null -H 'content-type: application/grpc' -d '' \
     -w '%{http_code} %header{grpc-status}' "http://127.0.0.1:$P_REDIR/svc%2FMethod")"
expect_eq "UNESCAPE_AND_FORWARD: the upstream gets plain slashes" "up GET /public/a/b bytes=0 200" \
  "$(get "$P_FWD" /public/a%2Fb)"
expect_eq "every action: a path without escaped slashes goes on as before; the query keeps its escapes" \
  "up GET /public/x?q=%2F bytes=0 200|up GET /public/x?q=%2F bytes=0 200|up GET /public/x?q=%2F bytes=0 200" \
  "$(get "$P_REJ" '/public/x?q=%2F')|$(get "$P_REDIR" '/public/x?q=%2F')|$(get "$P_FWD" '/public/x?q=%2F')"
stats=$(curl -s "http://127.0.0.1:$P_ADMIN/stats")
expect_eq "counters: http.rej.downstream_rq_failed_path_normalization" \
  "http.rej.downstream_rq_failed_path_normalization: ${#BYPASSES[@]}" \
  "$(grep '^http.rej.downstream_rq_failed_path_normalization:' <<<"$stats")"
expect_eq "counters: http.redir.downstream_rq_redirected_with_normalized_path" \
  "http.redir.downstream_rq_redirected_with_normalized_path: $(( ${#BYPASSES[@]} + 3 ))" \
  "$(grep '^http.redir.downstream_rq_redirected_with_normalized_path:' <<<"$stats")"


# --- server_header_transformation, via ------------------------------------------
server() { # server PORT PATH [curl args]: the response's server and via headers, and the body
  curl -s -D - -H 'via: 1.1 client' "${@:3}" "http://127.0.0.1:$1$2" | tr -d '\r' |
    awk 'tolower($1) == "server:" { s = $2 } tolower($1) == "via:" { sub(/^[^ ]* /, ""); v = $0 }
         /^$/ { body = 1; next } body { b = $0 } END { printf "server=%s via=%s %s", s ? s : "-", v ? v : "-", b }'
}
expect_eq "PASS_THROUGH: the upstream's server header; via appended to the request and the response" \
  "server=upstream-py via=legate-edge via=1.1 client, legate-edge" "$(server "$P_NORM" /server/x)"
expect_eq "PASS_THROUGH: no server header when the upstream sends none, nor on local replies" \
  "server=- server=-" "$(server "$P_NORM" /public/x | cut -d' ' -f1) $(server "$P_NORM" /admin | cut -d' ' -f1)"
expect_eq "OVERWRITE (the default): legate's; no via of its own" "server=legate via=- via=1.1 client" \
  "$(server "$P_RAW" /server/x)"
expect_eq "APPEND_IF_ABSENT: the upstream's when it sends one" "server=upstream-py" \
  "$(server "$P_ABSENT" /server/x | cut -d' ' -f1)"
expect_eq "APPEND_IF_ABSENT: legate's otherwise" "server=legate" "$(server "$P_ABSENT" /public/x | cut -d' ' -f1)"
expect_eq "HTTP/2: the same" "server=upstream-py via=legate-edge via=1.1 client, legate-edge" \
  "$(server "$P_NORM" /server/x --http2-prior-knowledge)"
expect_eq "... (it was HTTP/2)" "2" "$(curl -s -o /dev/null -w '%{http_version}' --http2-prior-knowledge "http://127.0.0.1:$P_NORM/server/x")"

# --- listener options ----------------------------------------------------------------
check "freebind: legate listens on 192.0.2.7, which this host does not have" \
  grep -q "listener vip on 192.0.2.7:$P_VIP" "$WORK/legate.log"
if [ $V6 = 1 ]; then
  expect_eq "ipv4_compat: a :: listener takes IPv4 connections" "up GET /x bytes=0 200" "$(get "$P_DUAL" /x)"
  expect_eq "without it, a :: listener takes IPv6 only" "000 up GET /x bytes=0 200" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_V6/x") $(curl -s -w ' %{http_code}' "http://[::1]:$P_V6/x" | tr -d '\n')"
else
  echo "skip - IPv6 is not available here: ipv4_compat not checked"
fi

# --- HTTP/2 options ---------------------------------------------------------------------
check "hpack_table_size: 0 is advertised in legate's SETTINGS" \
  bash -c "nghttp -v 'http://127.0.0.1:$P_NORM/public/x' | grep -q 'SETTINGS_HEADER_TABLE_SIZE(0x01):0\]'"
check "... and the default (4096) elsewhere" \
  bash -c "nghttp -v 'http://127.0.0.1:$P_RAW/public/x' | grep -q 'SETTINGS_HEADER_TABLE_SIZE(0x01):4096\]'"
for i in 1 2 3; do # the same headers again: a dynamic table would index them
  expect_eq "a cluster with hpack_table_size: 0 speaks HTTP/2 to its upstream ($i)" \
    "up GET /h2seen/$i bytes=0 200" "$(get "$P_ABSENT" /viah2/$i)"
done
for _ in $(seq 1 30); do [ "$(grep -c '^/h2seen/[123] HTTP/2 http$' "$WORK/raw.log" 2>/dev/null)" = 3 ] && break; sleep 0.1; done
expect_eq "... over HTTP/2 (legate's own listener logged it), :scheme http as the upstream is plaintext" "3" \
  "$(grep -c '^/h2seen/[123] HTTP/2 http$' "$WORK/raw.log")"
expect_eq "scheme_header_transformation.scheme_to_overwrite: https" "up GET /h2seen/s bytes=0 200" "$(get "$P_SCHEME" /viah2/s)"
for _ in $(seq 1 30); do grep -q '^/h2seen/s HTTP/2 https$' "$WORK/raw.log" && break; sleep 0.1; done
check "... the HTTP/2 upstream saw :scheme https" grep -q '^/h2seen/s HTTP/2 https$' "$WORK/raw.log"

# --- local_reply_config ------------------------------------------------------------------
lr() { curl -s -D "$WORK/lr.h" -o "$WORK/lr.b" "$@"; tr -d '\r' <"$WORK/lr.h" >"$WORK/lr.hh"; }
lr -H 'x-mode: teapot' "http://127.0.0.1:$P_LR/gone404"
check "local_reply_config: status and header filters (and_filter) map a 404 to 418" grep -q '^HTTP/1.1 418' "$WORK/lr.hh"
expect_eq "... with the mapper's body, through body_format" "[418] short and stout" "$(cat "$WORK/lr.b")"
check "... the body_format's content_type" grep -qi '^content-type: text/x-legate$' "$WORK/lr.hh"
check "... and the mapper's headers_to_add" grep -qi '^x-mapped: teapot$' "$WORK/lr.hh"
lr "http://127.0.0.1:$P_LR/gone404"
check "without the header the 404 stays" grep -q '^HTTP/1.1 404' "$WORK/lr.hh"
expect_eq "... and the next mapper takes it (flag NC): its JSON body_format_override" \
  '{"code":404,"msg":"cluster not found\n","path":"/gone404"}' "$(cat "$WORK/lr.b")"
lr "http://127.0.0.1:$P_LR/gone"
check "response_flag_filter NC: a JSON body_format_override" grep -qi '^content-type: application/json$' "$WORK/lr.hh"
expect_eq "... rendered with the reply's code (a number), body and the request" '{"code":503,"msg":"cluster not found\n","path":"/gone"}' \
  "$(cat "$WORK/lr.b")"
lr "http://127.0.0.1:$P_LR/admin"
expect_eq "a direct_response is a local reply too: body_format, the body as it is (newline kept)" \
  "[403] admin is internal|" "$(tr '\n' '|' <"$WORK/lr.b")"
lr "http://127.0.0.1:$P_LR/proxied"
expect_eq "an upstream's response is not mapped" "up GET /proxied bytes=0" "$(cat "$WORK/lr.b")"
out=$(curl -s --http2-prior-knowledge -H 'x-mode: teapot' -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_LR/gone404")
expect_eq "... the same over HTTP/2" 418 "$out"
bad_lr() { # bad_lr NAME EXPECTED MAPPER_YAML
  { echo "static_resources:"; echo "  listeners:"; listener bad 1 "local_reply_config: { mappers: [ $3 ] }"; } >"$WORK/bad.yaml"
  local out
  out=$("$BIN/legate" -c "$WORK/bad.yaml" --mode validate 2>&1)
  check "$1 ($out)" grep -qF -- "$2" <<<"$out"
}
bad_lr "an unknown response flag is refused by path" \
  'local_reply_config.mappers[0].filter.response_flag_filter.flags[0]: unknown response flag "XX"' \
  '{ filter: { response_flag_filter: { flags: [XX] } } }'
bad_lr "a status_code out of range is refused" 'local_reply_config.mappers[0].status_code: must be in [200, 600), got 700' \
  '{ filter: { not_health_check_filter: {} }, status_code: 700 }'
bad_lr "a filter legate lacks is refused by name" 'unknown field "grpc_status_filter"' \
  '{ filter: { grpc_status_filter: {} } }'

# --- route options ------------------------------------------------------------------
expect_eq "match.grpc: a gRPC content-type matches" "grpc 200" \
  "$(get "$P_RAW" /rpc/x -H 'content-type: application/grpc+proto' -d x)"
expect_eq "match.grpc: another content-type goes to the next route" "not grpc 200" \
  "$(get "$P_RAW" /rpc/x -H 'content-type: application/json' -d x)"
expect_eq "match.grpc: no content-type either" "not grpc 200" "$(get "$P_RAW" /rpc/x)"
expect_eq "cluster_not_found_response_code: NOT_FOUND" "cluster not found 404" "$(get "$P_RAW" /gone404)"
expect_eq "... and the default, 503" "cluster not found 503" "$(get "$P_RAW" /gone)"

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
finish
