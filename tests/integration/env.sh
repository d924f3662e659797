# Helpers for tests that run legate against real peers. Source after lib.sh.

# free_port: a TCP port on 127.0.0.1 that nothing listens on now. Ports are
# reserved under /tmp/legate-ports so concurrent tests never share one.
PORT_DIR=/tmp/legate-ports
mkdir -p "$PORT_DIR"
MY_PORTS=()
free_port() {
  local p
  while :; do
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    if mkdir "$PORT_DIR/$p" 2>/dev/null; then
      MY_PORTS+=("$p")
      echo "$p"
      return
    fi
  done
}
release_ports() { for p in "${MY_PORTS[@]}"; do rmdir "$PORT_DIR/$p" 2>/dev/null; done; }
trap 'release_ports; cleanup' EXIT

# wait_port PORT [SECONDS]: until something accepts on 127.0.0.1:PORT.
wait_port() {
  local end=$((SECONDS + ${2:-10}))
  while [ $SECONDS -lt $end ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# start_bg NAME CMD...: runs CMD in the background, output to $WORK/NAME.log.
start_bg() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "PID_${name//[^A-Za-z0-9_]/_}" %s "$!"
}

# start_nginx_mtls NAME PORT [h2]: nginx requiring a client certificate from
# cluster-ca, echoing what it saw in headers and in the body.
start_nginx_mtls() {
  local name=$1 port=$2 h2=${3:-} d="$WORK/nginx-$1"
  mkdir -p "$d"
  cat >"$d/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
error_log $d/error.log; pid $d/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d; uwsgi_temp_path $d; scgi_temp_path $d;
  server {
    listen 127.0.0.1:$port ssl ${h2:+http2};
    ssl_certificate $WORK/certs/upstream-server.pem;
    ssl_certificate_key $WORK/certs/upstream-server.key;
    ssl_verify_client on;
    ssl_client_certificate $WORK/certs/cluster-ca.pem;
    keepalive_requests 100000;
    location / {
      add_header x-client-subject \$ssl_client_s_dn always;
      add_header x-seen-xfcc \$http_x_forwarded_client_cert always;
      add_header x-seen-xff \$http_x_forwarded_for always;
      add_header x-seen-xfp \$http_x_forwarded_proto always;
      add_header x-seen-request-id \$http_x_request_id always;
      add_header x-seen-host \$host always;
      return 200 "subject=\$ssl_client_s_dn uri=\$request_uri proto=\$server_protocol\n";
    }
    location /status/ { return 418 "teapot\n"; }
  }
}
NGINX
  start_bg "nginx-$name" nginx -c "$d/nginx.conf"
  wait_port "$port"
}

# start_blackhole PORT: accepts connections and never answers.
start_blackhole() {
  start_bg "blackhole-$1" python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' "$1"
  wait_port "$1"
}

# start_full_backlog PORT: a listener whose accept queue is full, so new
# connections hang in SYN_SENT (an upstream black hole).
start_full_backlog() {
  start_bg "backlog-$1" python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError: pass
    fill.append(c)
print("ready", flush=True)
time.sleep(3600)
' "$1"
  local end=$((SECONDS + 5))
  until grep -q ready "$WORK/backlog-$1.log" 2>/dev/null || [ $SECONDS -gt $end ]; do sleep 0.05; done
}

# static_cluster NAME PORT [h2 [H2_OPTIONS]]: a STATIC cluster to
# 127.0.0.1:PORT, as one item of a bootstrap's "  clusters:" list; with h2,
# HTTP/2 to it (HttpProtocolOptions explicit_http_config), H2_OPTIONS the
# fields of its http2_protocol_options ("initial_stream_window_size: 65536").
static_cluster() {
  cat <<YAML
  - name: $1
    type: STATIC
    connect_timeout: 1s
YAML
  if [ "${3:-}" = h2 ]; then
    cat <<YAML
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: { ${4:-} } }
YAML
  fi
  cat <<YAML
    load_assignment:
      cluster_name: $1
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } }] }]
YAML
}

# start_legate NAME CONFIG [ARGS...]: runs legate and waits for its first
# listener port (LEGATE_PORT) to accept.
start_legate() {
  local name=$1 cfg=$2; shift 2
  start_bg "$name" "$BIN/legate" -c "$cfg" --concurrency 2 -l "${LEGATE_LOG_LEVEL:-info}" "$@"
  wait_port "$LEGATE_PORT" 10 || { not_ok "legate started"; cat "$WORK/$name.log"; return 1; }
}

# asan_build: true when $BIN/legate is built with AddressSanitizer (whose
# allocator quarantines freed memory: RSS is not legate's there).
# grep without -q reads to the end: with pipefail, a grep -q that stops
# early can SIGPIPE ldd or nm and make a match look like none.
asan_build() {
  ldd "$BIN/legate" 2>/dev/null | grep asan >/dev/null || nm "$BIN/legate" 2>/dev/null | grep __asan_init >/dev/null
}

# curl_mtls ARGS...: curl with the test client certificate and CA.
curl_mtls() {
  curl -s --cacert "$WORK/certs/ca.pem" --cert "$WORK/certs/client.pem" --key "$WORK/certs/client.key" "$@"
}
