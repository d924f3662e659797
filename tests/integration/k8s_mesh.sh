#!/usr/bin/env bash
# Two "pods" as network namespaces, each an application plus a legate
# sidecar with legate-iptables rules, fed by one legate-control. The client
# application calls the server pod's address in plaintext; both sidecars
# capture the traffic, which crosses between the pods as mTLS with SPIFFE
# identities. Needs root, ip netns and iptables; skips (77) without them.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CONTROL=$BIN/../control-sample/legate-control
IPT=$SRC/scripts/legate-iptables

skip() { echo "SKIP: $*"; FAIL=0; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces"
command -v iptables >/dev/null || skip "iptables is not installed"
command -v setpriv >/dev/null || skip "setpriv is not installed"
NA=lga$$ NB=lgb$$
ip netns add "$NA" 2>/dev/null || skip "network namespaces cannot be created here"
ip netns add "$NB"
teardown() {
  ip netns pids "$NA" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids "$NB" 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.2
  ip netns del "$NA" 2>/dev/null; ip netns del "$NB" 2>/dev/null
  ip link del "va$$" 2>/dev/null; ip link del "vb$$" 2>/dev/null
}
trap 'teardown; release_ports; cleanup' EXIT

# Addresses inside the test's own namespaces only.
S=$(( ($$ % 200) + 20 ))
GA=10.$S.1.1 A=10.$S.1.2 GB=10.$S.2.1 B=10.$S.2.2
ip link add "va$$" type veth peer name eth0a$$ && ip link set "eth0a$$" netns "$NA"
ip link add "vb$$" type veth peer name eth0b$$ && ip link set "eth0b$$" netns "$NB"
ip addr add "$GA/24" dev "va$$"; ip link set "va$$" up
ip addr add "$GB/24" dev "vb$$"; ip link set "vb$$" up
ip -n "$NA" addr add "$A/24" dev "eth0a$$"; ip -n "$NA" link set "eth0a$$" up; ip -n "$NA" link set lo up
ip -n "$NB" addr add "$B/24" dev "eth0b$$"; ip -n "$NB" link set "eth0b$$" up; ip -n "$NB" link set lo up
ip -n "$NA" route add default via "$GA"; ip -n "$NB" route add default via "$GB"
sysctl -qw net.ipv4.ip_forward=1

# The mesh PKI: SPIFFE identities from one CA, and a rogue one.
chmod 755 "$WORK"; cd "$WORK"; mkdir -p pki; chmod 755 pki
mkca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "pki/$1.key" -out "pki/$1.pem" \
  -days 2 -subj "/CN=$1" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null; }
mkid() { # mkid NAME CA SPIFFE
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "pki/$1.key" -out "pki/$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=URI:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" > "pki/$1.ext"
  openssl x509 -req -in "pki/$1.csr" -CA "pki/$2.pem" -CAkey "pki/$2.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 2 -extfile "pki/$1.ext" -out "pki/$1.pem" 2>/dev/null
}
TD=spiffe://cluster.local
mkca mesh-ca; mkca rogue-ca
mkid client mesh-ca "$TD/ns/default/sa/client"
mkid server mesh-ca "$TD/ns/default/sa/server"
mkid rogue rogue-ca "$TD/ns/default/sa/client"

P_CP=$(free_port)
hcm() { # hcm PREFIX EXTRA ROUTE
  cat <<YAML
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: $1
$2
        route_config:
          virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: $3 } }] }]
        http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
YAML
}
cat > control.yaml <<YAML
secrets:
- name: mesh-ca
  validation_context:
    trusted_ca: { filename: pki/mesh-ca.pem }
nodes:
- node_id: client-7d9.default
  listeners:
  - name: outbound
    address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }
    use_original_dst: true
    listener_filters: [{ name: envoy.filters.listener.original_dst }]
    filter_chains:
    - filters:
$(hcm outbound "" outbound-mtls | sed 's/^/  /')
  clusters:
  - name: outbound-mtls
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificate_sds_secret_configs: [{ name: identity, sds_config: { ads: {} } }]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: "$TD/" } }]
            validation_context_sds_secret_config: { name: mesh-ca, sds_config: { ads: {} } }
  secrets:
  - name: identity
    tls_certificate: { certificate_chain: { filename: pki/client.pem }, private_key: { filename: pki/client.key } }
- node_id: server-5f2.default
  listeners:
  - name: inbound
    address: { socket_address: { address: 0.0.0.0, port_value: 15006 } }
    listener_filters: [{ name: envoy.filters.listener.original_dst }]
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [{ name: identity, sds_config: { ads: {} } }]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: "$TD/ns/default/sa/client" } }]
              validation_context_sds_secret_config: { name: mesh-ca, sds_config: { ads: {} } }
      filters:
$(hcm inbound "        forward_client_cert_details: SANITIZE_SET
        set_current_client_cert_details: { subject: true, uri: true }" inbound-app | sed 's/^/    /')
  clusters:
  - name: inbound-app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: inbound-app
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } } }] }]
  secrets:
  - name: identity
    tls_certificate: { certificate_chain: { filename: pki/server.pem }, private_key: { filename: pki/server.key } }
YAML
start_bg control "$CONTROL" -c control.yaml --listen "0.0.0.0:$P_CP" -l debug
wait_port "$P_CP"

# One bootstrap for both pods; the downward API's variables make the node id.
cat > bootstrap.yaml <<YAML
node: { id: "\${POD_NAME}.\${POD_NAMESPACE}", cluster: mesh }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 9901 } } }
dynamic_resources:
  ads_config: { api_type: GRPC, transport_api_version: V3, grpc_services: [{ envoy_grpc: { cluster_name: xds } }] }
  lds_config: { ads: {} }
  cds_config: { ads: {} }
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "\${XDS_HOST}", port_value: $P_CP } } } }] }]
YAML
chmod 644 bootstrap.yaml

for ns in "$NA" "$NB"; do
  ip netns exec "$ns" "$IPT" --inbound-port 15006 --outbound-port 15001 --uid 1337 \
    --exclude-inbound-ports 9901 --exclude-outbound-ports "$P_CP" > "iptables-$ns.log"
done
check "legate-iptables is idempotent (a second run leaves the same rules)" bash -c "
  before=\$(ip netns exec $NA iptables -t nat -S | sort)
  ip netns exec $NA $IPT --inbound-port 15006 --outbound-port 15001 --uid 1337 --exclude-inbound-ports 9901 --exclude-outbound-ports $P_CP >/dev/null
  [ \"\$before\" = \"\$(ip netns exec $NA iptables -t nat -S | sort)\" ]"

# Pod B: the application, then its sidecar (as uid 1337, like the manifest).
ip netns exec "$NB" /usr/bin/python3 -c '
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("server app saw: xfcc=%s from=%s\n" % (self.headers.get("x-forwarded-client-cert"), self.client_address[0])).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()' > app-b.log 2>&1 &
PIDS+=($!)
# The application listens before anything calls it (Python starts slowly on
# a busy machine).
for _ in $(seq 1 200); do
  ip netns exec "$NB" ss -ltn 'sport = :8080' | grep -q LISTEN && break
  sleep 0.05
done
sidecar() { # sidecar NS POD_NAME GATEWAY LOG
  ip netns exec "$1" env POD_NAME="$2" POD_NAMESPACE=default XDS_HOST="$3" \
    setpriv --reuid 1337 --regid 1337 --clear-groups "$BIN/legate" -c "$WORK/bootstrap.yaml" --concurrency 1 -l debug \
    > "$4" 2>&1 &
  PIDS+=($!)
  SIDECARS+=($!)
}
SIDECARS=()
sidecar "$NB" server-5f2 "$GB" legate-b.log
sidecar "$NA" client-7d9 "$GA" legate-a.log
ready() { ip netns exec "$1" curl -s "http://127.0.0.1:9901/ready"; }
for _ in $(seq 1 100); do [ "$(ready "$NA")" = LIVE ] && [ "$(ready "$NB")" = LIVE ] && break; sleep 0.1; done
expect_eq "both sidecars got their own config from one legate-control (node ids from the environment)" \
  "LIVE LIVE" "$(ready "$NA") $(ready "$NB")"

# The client application calls the server pod's address, in plaintext.
out=$(ip netns exec "$NA" curl -s -m 5 "http://$B:8080/hello")
check "the plaintext call from pod A reaches the application in pod B" grep -q "^server app saw: " <<<"$out"
check "... through pod B's sidecar (the app sees it coming from 127.0.0.1)" grep -q "from=127.0.0.1$" <<<"$out"
xfcc=$(sed -n 's/^server app saw: xfcc=\(.*\) from=.*/\1/p' <<<"$out")
check "... with the client's SPIFFE identity in XFCC, checked by the receiving sidecar" \
  grep -q "By=$TD/ns/default/sa/server;Hash=[0-9a-f]*;Subject=\"CN=client\";URI=$TD/ns/default/sa/client" <<<"$xfcc"
stat() { ip netns exec "$1" curl -s "http://127.0.0.1:9901/stats" | sed -n "s/^$2: //p"; }
expect_eq "pod A's sidecar captured it (outbound listener, ORIGINAL_DST cluster)" "1 1" \
  "$(stat "$NA" http.outbound.downstream_rq_total) $(stat "$NA" cluster.outbound-mtls.upstream_rq_total)"
expect_eq "pod B's sidecar captured it over mTLS (inbound listener, TLS handshake)" "1 1" \
  "$(stat "$NB" http.inbound.downstream_rq_total) $(stat "$NB" listener.0.0.0.0_15006.ssl.handshake)"

# Peers without a valid identity, from outside the pods.
out=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$B:8080/hello")
expect_eq "a plaintext client outside the mesh is refused (it meets pod B's mTLS listener)" "000" "$out"
out=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -k --cert pki/rogue.pem --key pki/rogue.key "https://$B:8080/hello")
expect_eq "a client whose certificate is from another CA is refused at the handshake" "000" "$out"
check "pod B's sidecar counted it as a failed verification" \
  test "$(stat "$NB" listener.0.0.0.0_15006.ssl.fail_verify_error)" -ge 1

for p in "${SIDECARS[@]}"; do kill -TERM "$p"; done
rcs=""; for p in "${SIDECARS[@]}"; do wait "$p"; rcs="$rcs$?"; done
expect_eq "both sidecars stop cleanly on SIGTERM" "00" "$rcs"
check "no sanitizer report from either sidecar" \
  bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate-a.log' '$WORK/legate-b.log'"

ip netns exec "$NA" "$IPT" --cleanup >/dev/null
expect_eq "legate-iptables --cleanup removes its chains" "0" \
  "$(ip netns exec "$NA" iptables -t nat -S | grep -c LEGATE || true)"
finish
