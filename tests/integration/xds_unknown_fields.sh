#!/usr/bin/env bash
# Fields that legate's trimmed protos lack, served over ADS as Envoy's full
# protos encode them (tests/integration/ads_raw.py, a Python gRPC server):
# a Cluster with transport_socket_matches, common_lb_config,
# upstream_bind_config or a field number Envoy does not have either is
# NACKed by path while the last good cluster keeps serving; an HCM with
# tracing and request_id_extension is ACKed with a warning and counted.
# Then validation at the right place: a listener using RDS whose routes
# never come is NACKed on the LDS for an unsupported HTTP filter type, and
# a network filter of an unknown type is named by its type URL.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
cd "$WORK"
P_CP=$(free_port); P_L=$(free_port); P_L2=$(free_port); P_L3=$(free_port)
P_UP=$(free_port); P_UP2=$(free_port); P_ADMIN=$(free_port)

protoc -I "$SRC/proto" -I /usr/include --include_imports --descriptor_set_out=legate.pb \
  $(cd "$SRC/proto" && find . -name '*.proto' | sed 's|^\./||' | sort) ||
  { not_ok "protoc made a descriptor set of legate's protos"; finish; exit 1; }

cat > scenario.py <<PY
P_L, P_L2, P_L3, P_UP, P_UP2 = $P_L, $P_L2, $P_L3, $P_UP, $P_UP2
PY
cat >> scenario.py <<'PY'
CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster'
LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener'
HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'

# Fields as Envoy's protos number them, which legate's protos lack:
TSM = b'\xda\x02\x05\x0a\x03tls'  # Cluster 43 transport_socket_matches [{name: tls}]
CLB = b'\xda\x01\x00'             # Cluster 27 common_lb_config {}
UBC = b'\xaa\x01\x00'             # Cluster 21 upstream_bind_config {}
F999 = b'\xb8\x3e\x01'            # Cluster 999 (no such field in Envoy either)
TRACING = b'\x3a\x00'             # HttpConnectionManager 7 tracing {}
RID = b'\xa2\x02\x00'             # HttpConnectionManager 36 request_id_extension {}


def steps(M, Any, parse):
    def cluster(name, port, extra=b''):
        c = parse('envoy.config.cluster.v3.Cluster', {
            'name': name, 'type': 'STATIC', 'connect_timeout': '1s',
            'load_assignment': {'cluster_name': name, 'endpoints': [{'lb_endpoints': [
                {'endpoint': {'address': {'socket_address': {'address': '127.0.0.1', 'port_value': port}}}}]}]}})
        return Any(type_url=CDS, value=c.SerializeToString() + extra)

    def hcm(marker=None, rds=None, extra=b'', first_filter=None):
        d = {'stat_prefix': 'ingress'}
        if rds:
            d['rds'] = {'route_config_name': rds, 'config_source': {'ads': {}, 'resource_api_version': 'V3'}}
        else:
            d['route_config'] = {'name': 'local', 'virtual_hosts': [{'name': 'all', 'domains': ['*'], 'routes': [
                {'match': {'path': '/marker'}, 'direct_response': {'status': 200, 'body': {'inline_string': marker}}},
                {'match': {'prefix': '/'}, 'route': {'cluster': 'backend'}}]}]}
        h = parse(HCM, d)
        if first_filter:
            h.http_filters.add(name=first_filter[0], typed_config=Any(type_url=first_filter[1]))
        h.http_filters.add(name='envoy.filters.http.router', typed_config=Any(type_url=ROUTER))
        return Any(type_url='type.googleapis.com/' + HCM, value=h.SerializeToString() + extra)

    def listener(name, port, typed_config):
        l = parse('envoy.config.listener.v3.Listener', {
            'name': name, 'address': {'socket_address': {'address': '127.0.0.1', 'port_value': port}}})
        l.filter_chains.add().filters.add(name='envoy.filters.network.http_connection_manager',
                                          typed_config=typed_config)
        return Any(type_url=LDS, value=l.SerializeToString())

    l_v2 = listener('l', P_L, hcm('v2', extra=TRACING + RID))
    return [
        {CDS: [cluster('backend', P_UP)], LDS: [listener('l', P_L, hcm('v1'))]},
        # 1: refused clusters; "backend" would move to up-B if it were taken
        {CDS: [cluster('backend', P_UP2, TSM + CLB + UBC), cluster('c2', P_UP2, CLB),
               cluster('c3', P_UP2, UBC), cluster('c4', P_UP2, F999)]},
        # 2: observability-only fields: accepted
        {LDS: [l_v2]},
        # 3: a listener waiting for routes that never come, with an HTTP
        # filter legate lacks; a network filter of a type legate lacks
        {LDS: [l_v2,
               listener('r', P_L2, hcm(rds='r-routes',
                                       first_filter=('envoy.filters.http.lua',
                                                     'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua'))),
               listener('n', P_L3, Any(type_url='type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy',
                                       value=b'\x0a\x01x'))]},
    ]
PY

start_bg up-a python3 "$SRC/tests/integration/upstream.py" "$P_UP" up-A
start_bg up-b python3 "$SRC/tests/integration/upstream.py" "$P_UP2" up-B
start_bg ads /usr/bin/python3 "$SRC/tests/integration/ads_raw.py" "$P_CP" legate.pb scenario.py requests.jsonl
wait_port "$P_CP" 10 || { not_ok "the ADS server started"; cat ads.log; finish; exit 1; }
wait_port "$P_UP" 10 && wait_port "$P_UP2" 10 || { not_ok "the upstreams started"; cat up-a.log; finish; exit 1; }

sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$SRC/docs/examples/ads.yaml" > legate.yaml
LEGATE_PORT=$P_L start_legate legate legate.yaml || { cat ads.log; finish; exit 1; }
ADMIN=http://127.0.0.1:$P_ADMIN

# answer NONCE: the request that answered the response with that nonce, as
# "VERSION|ERROR" (ERROR "-" for an ACK); waits up to 10 s.
answer() {
  local out=""
  for _ in $(seq 1 200); do
    out=$(python3 - "$1" <<'PY'
import json, sys
for line in open("requests.jsonl"):
    r = json.loads(line)
    if r["response_nonce"] == sys.argv[1]:
        print("%s|%s" % (r["version_info"], r["error_detail"] if r["error_detail"] is not None else "-"))
        break
PY
)
    [ -n "$out" ] && break
    sleep 0.05
  done
  echo "$out"
}
stat() { curl -s "$ADMIN/stats" | awk -v k="$1:" '$1 == k { print $2 }'; }

expect_eq "CDS version 1 ACKed" "1|-" "$(answer 0-Cluster)"
expect_eq "LDS version 1 ACKed" "1|-" "$(answer 0-Listener)"
expect_eq "traffic reaches the cluster" "up-A GET / bytes=0" "$(curl -s "http://127.0.0.1:$P_L/")"

# --- 1: clusters with fields legate lacks ------------------------------------------------
touch go-1
nack=$(answer 1-Cluster)
check "CDS: NACKed, the version held at 1" grep -q '^1|' <<<"$nack"
for want in 'cluster "backend": transport_socket_matches: not supported' \
            'cluster "c2": common_lb_config: not supported' \
            'cluster "c3": upstream_bind_config: not supported' \
            'cluster "c4": field number 999 of envoy.config.cluster.v3.Cluster is unknown'; do
  check "CDS NACK names the field: $want" grep -qF "$want" <<<"$nack"
done
[ "$FAIL" -eq 0 ] || echo "     NACK: $nack"
expect_eq "the last good cluster keeps serving (not the refused one, up-B)" "up-A GET / bytes=0" \
  "$(curl -s "http://127.0.0.1:$P_L/")"
expect_eq "cluster_manager.cds.update_rejected" "1" "$(stat cluster_manager.cds.update_rejected)"
check "/config_dump does not list the refused clusters" \
  bash -c "! curl -s '$ADMIN/config_dump' | grep -q '\"c2\"'"

# --- 2: an HCM with tracing and request_id_extension ---------------------------------------
touch go-2
expect_eq "LDS with tracing and request_id_extension: ACKed" "3|-" "$(answer 2-Listener)"
for _ in $(seq 1 100); do [ "$(curl -s "http://127.0.0.1:$P_L/marker")" = v2 ] && break; sleep 0.05; done
expect_eq "... and applied" "v2" "$(curl -s "http://127.0.0.1:$P_L/marker")"
check "a warning names the ignored tracing field by path" \
  grep -q 'listener "l": filter_chains\[0\].filters\[0\].typed_config.tracing: ignored: legate does not trace' legate.log
check "... and request_id_extension" \
  grep -q 'listener "l": filter_chains\[0\].filters\[0\].typed_config.request_id_extension: ignored' legate.log
expect_eq "xds.ignored_fields counts both" "2" "$(stat xds.ignored_fields)"
expect_eq "xds.ignored_field.HttpConnectionManager.tracing" "1" "$(stat xds.ignored_field.HttpConnectionManager.tracing)"
expect_eq "traffic still reaches the cluster" "up-A GET / bytes=0" "$(curl -s "http://127.0.0.1:$P_L/")"
check "/legate/config_dump lists the listener's ignored fields" bash -c "curl -s '$ADMIN/legate/config_dump' | \
  /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); r=[x for x in d[\"dynamic\"][\"listeners\"][\"resources\"] if x[\"name\"]==\"l\"][0]; sys.exit(0 if r[\"ignored_fields\"]==[\"filter_chains[0].filters[0].typed_config.tracing\",\"filter_chains[0].filters[0].typed_config.request_id_extension\"] else 1)'"

# --- 3: validation when LDS arrives ---------------------------------------------------------
touch go-3
nack=$(answer 3-Listener)
check "LDS: NACKed, the version held at 3" grep -q '^3|' <<<"$nack"
check "a listener waiting for RDS is refused on the LDS for its unsupported HTTP filter type" grep -qF \
  'listener "r": filter_chains[0].filters[0].typed_config.http_filters[0].typed_config: HTTP filter type "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua" ("envoy.filters.http.lua") is not supported' \
  <<<"$nack"
check "a network filter of an unknown type is named by its type URL" grep -qF \
  'listener "n": filter_chains[0].filters[0].typed_config: network filter type "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy" is not supported' \
  <<<"$nack"
check "... not by a name that contradicts the message" \
  bash -c "! grep -qF 'got \"envoy.filters.network.http_connection_manager\"' <<<'$nack'"
[ "$FAIL" -eq 0 ] || echo "     NACK: $nack"
sleep 0.3
check "no RDS subscription for the refused listener's routes" bash -c "! grep -q 'r-routes' requests.jsonl"
expect_eq "the good listener serves on" "v2" "$(curl -s "http://127.0.0.1:$P_L/marker")"
finish
