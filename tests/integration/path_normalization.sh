#!/usr/bin/env bash
# normalize_path and merge_slashes: the path is made canonical before
# routing (so /public/../admin cannot dodge a route for /admin) and goes
# upstream that way; without them, legate routes and forwards the path as
# it came. HTTP/1.1 and HTTP/2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"

P_NORM=$(free_port); P_RAW=$(free_port); P_UP=$(free_port)
LEGATE_PORT=$P_NORM
start_bg up python3 "$SRC/tests/integration/upstream.py" "$P_UP" up
wait_port "$P_UP"

listener() { # listener NAME PORT EXTRA_HCM_FIELDS
  cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
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
  echo "static_resources:"
  echo "  listeners:"
  listener norm "$P_NORM" "normalize_path: true
          merge_slashes: true"
  listener raw "$P_RAW" ""
  cat <<YAML
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: up, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_UP } } } }] }] }
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

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
finish
