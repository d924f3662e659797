# Shared by bench/validate.sh and bench/selftest.sh (sourced, not run):
# a scratch directory, certificates made with openssl, nginx on 127.0.0.1,
# and cleanup of everything started here.
#
# After lb_init: $LB_DIR (scratch), $LB_LOAD (the legate-load binary).

LB_PIDS=()

lb_cleanup() {
    local pid
    for pid in "${LB_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${LB_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${LB_DIR:-}" ] && [ -z "${LB_KEEP:-}" ]; then
        rm -rf "$LB_DIR"
    fi
}

lb_init() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -z "${LEGATE_LOAD:-}" ]; then
        for LEGATE_LOAD in "$root/build-load/bench/legate-load" "$root/build/bench/legate-load" \
                           "$root/build-asan/bench/legate-load"; do
            [ -x "$LEGATE_LOAD" ] && break
        done
    fi
    if [ ! -x "$LEGATE_LOAD" ]; then
        echo "legate-load not built (set LEGATE_LOAD=path)" >&2
        exit 1
    fi
    LB_LOAD=$LEGATE_LOAD
    command -v nginx >/dev/null || PATH=$PATH:/usr/sbin
    command -v nginx >/dev/null || { echo "nginx not found" >&2; exit 1; }
    LB_DIR=$(mktemp -d /tmp/legate-load.XXXXXX)
    trap lb_cleanup EXIT
    trap 'exit 130' INT TERM
    # --hold opens thousands of sockets; nginx needs as many.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# ECDSA P-256 everywhere: a CA, a server certificate for localhost and
# 127.0.0.1, a client certificate, and a second CA that signed nothing here.
lb_make_certs() {
    local d=$LB_DIR
    (
        cd "$d"
        key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
        key ca.key
        openssl req -x509 -new -key ca.key -days 2 -subj /CN=legate-load-test-ca -out ca.pem
        key other-ca.key
        openssl req -x509 -new -key other-ca.key -days 2 -subj /CN=other-ca -out other-ca.pem
        key server.key
        openssl req -new -key server.key -subj /CN=localhost -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        key client.key
        openssl req -new -key client.key -subj /CN=legate-load-client -out client.csr
        printf 'extendedKeyUsage=clientAuth\n' > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAserial ca.srl -days 2 \
            -extfile client.ext -out client.pem
    ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; echo "openssl failed" >&2; exit 1; }
}

# Prints a TCP port on 127.0.0.1 that no socket uses (and that no earlier
# call returned). Taken below the ephemeral range, so that client sockets
# do not take it before nginx binds it.
LB_PORTS_GIVEN=" "
lb_free_port() {
    local i port lo hi
    read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range || { lo=32768; hi=60999; }
    [ "$lo" -gt 12000 ] || lo=32768
    for i in $(seq 1 100); do
        port=$((10000 + RANDOM % (lo - 10000)))
        case "$LB_PORTS_GIVEN" in *" $port "*) continue ;; esac
        if command -v ss >/dev/null && [ -n "$(ss -Htan "( sport = :$port )" 2>/dev/null)" ]; then
            continue
        fi
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            LB_PORTS_GIVEN="$LB_PORTS_GIVEN$port "
            echo "$port"
            return 0
        fi
    done
    echo "no free port" >&2
    return 1
}

# Waits (at most 5 s) until 127.0.0.1:$1 accepts connections.
lb_wait_port() {
    local i
    for i in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# lb_start_nginx NAME SERVER_BLOCKS PORT...: runs nginx (one process, pinned
# to CPU 0) with the given server { } blocks, waits for every PORT.
lb_start_nginx() {
    local name=$1 servers=$2 port
    shift 2
    local d="$LB_DIR/nginx-$name"
    mkdir -p "$d/logs"
    cat > "$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 16000; }
http {
    access_log off;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    ssl_certificate $LB_DIR/server.pem;
    ssl_certificate_key $LB_DIR/server.key;
$servers
}
EOF
    taskset -c 0 nginx -p "$d" -e "$d/logs/error.log" -c "$d/nginx.conf" \
        >"$d/logs/stdout" 2>&1 &
    LB_PIDS+=($!)
    for port in "$@"; do
        if ! lb_wait_port "$port"; then
            echo "nginx ($name) did not listen on $port:" >&2
            cat "$d/logs/stdout" "$d/logs/error.log" >&2
            exit 1
        fi
    done
}

# lb_field LINE NAME: the value of NAME=... in a RESULT line.
lb_field() {
    local kv
    for kv in $1; do
        case "$kv" in "$2="*) echo "${kv#*=}"; return 0 ;; esac
    done
    echo ""
}
