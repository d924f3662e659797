#!/usr/bin/env bash
# /config_dump in Envoy's shape, read by a decoder that is not legate's:
# Python protobuf's json_format with Envoy's own protos (tests/protos/
# envoy-protos.sh), unknown fields refused. Once with a legate driven over
# ADS by legate-control (dynamic resources, warming, NACKs) and once with a
# static bootstrap; ?resource=, ?mask=, ?name_regex=, ?include_eds and their
# errors as Envoy answers them; secrets redacted everywhere; the old shape
# at /legate/config_dump. /clusters, /listeners (text and ?format=json) and
# /server_info in Envoy's shapes too.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CONTROL=$BIN/../control-sample/legate-control
PY=/usr/bin/python3

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
if ! "$SRC/tests/protos/envoy-protos.sh" envoy.pb; then
  not_ok "Envoy's protos compiled (tests/protos/envoy-protos.sh)"
  finish; exit 1
fi
# decodes FILE [MESSAGE]: "ok N" when FILE reads as Envoy's MESSAGE
decodes() { "$PY" "$SRC/tests/integration/envoy_json.py" envoy.pb "${2:-envoy.admin.v3.ConfigDump}" "$1"; }
# q FILE EXPR: a Python expression over d, the JSON in FILE
q() { "$PY" -c 'import json,sys,base64; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
NO_KEYS='PRIVATE KEY\|LS0tLS1CRUdJTiBQUklWQVRF\|LS0tLS1CRUdJTiBFQyBQUklWQVRF'

P_CP=$(free_port); P_L=$(free_port); P_L2=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port)
P_S=$(free_port); P_SADMIN=$(free_port)
start_nginx_mtls up "$P_UP"
A=http://127.0.0.1:$P_ADMIN

cp_config() { # cp_config [EXTRA_LISTENERS_YAML] [sed on the listener]
  sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
    -e "${2:-}" "$SRC/control-sample/examples/demo.yaml" > control.tmp
  if [ -n "${1:-}" ]; then
    "$PY" - control.tmp "$1" <<'PY'
import sys
p, extra = sys.argv[1], sys.argv[2]; s = open(p).read()
s = s.replace("\nroutes:\n", "\n" + extra + "\nroutes:\n", 1)
open(p, "w").write(s)
PY
  fi
  mv control.tmp control.yaml
}
sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$SRC/docs/examples/ads.yaml" > legate.yaml

# ---- dynamic: legate over ADS ------------------------------------------------------------
cp_config
start_bg control "$CONTROL" -c control.yaml --listen "127.0.0.1:$P_CP" --log-requests requests.jsonl
wait_port "$P_CP"
start_bg legate "$BIN/legate" -c legate.yaml --concurrency 2
for _ in $(seq 1 100); do [ "$(curl -s "$A/ready")" = LIVE ] && break; sleep 0.05; done
expect_eq "legate is ready with the ADS configuration" "LIVE" "$(curl -s "$A/ready")"

curl -s -D hdr.txt "$A/config_dump" > dump.json
check "/config_dump: application/json" grep -qi '^content-type: application/json' hdr.txt
expect_eq "/config_dump decodes as envoy.admin.v3.ConfigDump with Envoy's protos (every Any too)" \
  "ok 6" "$(decodes dump.json)"
expect_eq "... its configs in Envoy's order" \
  "BootstrapConfigDump ClustersConfigDump ListenersConfigDump ScopedRoutesConfigDump RoutesConfigDump SecretsConfigDump" \
  "$(q dump.json '" ".join(c["@type"].rsplit(".", 1)[1] for c in d["configs"])')"
expect_eq "bootstrap: the node and the ADS cluster, with last_updated" "sidecar-1 xds_cluster True" \
  "$(q dump.json 'd["configs"][0]["bootstrap"]["node"]["id"] + " " + d["configs"][0]["bootstrap"]["static_resources"]["clusters"][0]["name"] + " " + str(d["configs"][0]["last_updated"].endswith("Z"))')"
expect_eq "clusters: version_info, the static ADS cluster, backend active from CDS with its version" \
  "1 [xds_cluster] [backend] 1 type.googleapis.com/envoy.config.cluster.v3.Cluster []" \
  "$(q dump.json 'd["configs"][1]["version_info"], [c["cluster"]["name"] for c in d["configs"][1]["static_clusters"]], [c["cluster"]["name"] for c in d["configs"][1]["dynamic_active_clusters"]], d["configs"][1]["dynamic_active_clusters"][0]["version_info"], d["configs"][1]["dynamic_active_clusters"][0]["cluster"]["@type"], d["configs"][1].get("dynamic_warming_clusters", [])' | tr -d "(),'")"
expect_eq "listeners: https in active_state with its port, last_updated, no error_state" \
  "https $P_L True False" \
  "$(q dump.json '[(l["name"], l["active_state"]["listener"]["address"]["socket_address"]["port_value"], "last_updated" in l["active_state"], "error_state" in l) for l in d["configs"][2]["dynamic_listeners"]][0]' | tr -d "(),'")"
expect_eq "routes: the RDS route configuration 'local' with its version" "local 1" \
  "$(q dump.json '[r["route_config"]["name"] + " " + r["version_info"] for r in d["configs"][4]["dynamic_route_configs"]][0]')"
expect_eq "secrets: the SDS secrets, active" "['backend-client', 'client-ca', 'server-cert', 'upstream-ca']" \
  "$(q dump.json 'sorted(s["name"] for s in d["configs"][5]["dynamic_active_secrets"])')"
expect_eq "secrets: the private key redacted as Envoy does (its shape kept, its bytes \"[redacted]\")" \
  "[redacted]" \
  "$(q dump.json '[base64.b64decode(s["secret"]["tls_certificate"]["private_key"]["inline_bytes"]).decode() for s in d["configs"][5]["dynamic_active_secrets"] if s["name"] == "server-cert"][0]')"
check "/config_dump: no key material anywhere" bash -c "! grep -q '$NO_KEYS' dump.json"

curl -s "$A/config_dump?include_eds" > eds.json
expect_eq "?include_eds: an EndpointsConfigDump after the clusters, decoding too" \
  "ok 7 EndpointsConfigDump" "$(decodes eds.json) $(q eds.json 'd["configs"][2]["@type"].rsplit(".", 1)[1]')"
expect_eq "... with the static cluster's endpoints and backend's from EDS" "xds_cluster $P_CP | backend $P_UP" \
  "$(q eds.json '" | ".join(e["endpoint_config"]["cluster_name"] + " " + str(e["endpoint_config"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"]) for e in d["configs"][2]["static_endpoint_configs"] + d["configs"][2]["dynamic_endpoint_configs"])')"

curl -s "$A/config_dump?resource=dynamic_active_clusters&mask=cluster.name,version_info" > res.json
expect_eq "?resource=dynamic_active_clusters&mask=cluster.name,version_info: each DynamicCluster, trimmed" \
  "ok 1 | [{'@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster', 'version_info': '1', 'cluster': {'@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', 'name': 'backend'}}]" \
  "$(decodes res.json) | $(q res.json 'd["configs"]')"
curl -s "$A/config_dump?resource=dynamic_active_secrets" > res2.json
expect_eq "?resource=dynamic_active_secrets: the secrets alone, still redacted" "ok 4" "$(decodes res2.json)"
check "... with no key material" bash -c "! grep -q '$NO_KEYS' res2.json"
curl -s "$A/config_dump?mask=bootstrap.node.id" > mask.json
expect_eq "?mask=bootstrap.node.id: only the dumps the mask fits, only that field" \
  "ok 1 | [{'@type': 'type.googleapis.com/envoy.admin.v3.BootstrapConfigDump', 'bootstrap': {'node': {'id': 'sidecar-1'}}}]" \
  "$(decodes mask.json) | $(q mask.json 'd["configs"]')"
curl -s "$A/config_dump?mask=static_clusters" > mask2.json
expect_eq "?mask=static_clusters: the one dump with that field, trimmed to it" \
  "ok 1 ClustersConfigDump static_clusters" \
  "$(decodes mask2.json) $(q mask2.json '" ".join([d["configs"][0]["@type"].rsplit(".", 1)[1]] + [k for k in d["configs"][0] if k != "@type"])')"
expect_eq "?mask= whose paths fit no one dump together: 400" "400" \
  "$(curl -s -w '%{http_code}' -o /dev/null "$A/config_dump?mask=static_clusters,dynamic_listeners")"
curl -s "$A/config_dump?name_regex=back.*" > re.json
expect_eq "?name_regex=back.*: whole-name matches only (backend, no xds_cluster, no https)" \
  "ok 6 [] ['backend'] [] ['backend-client']" \
  "$(decodes re.json) $(q re.json '[c["cluster"]["name"] for c in d["configs"][1].get("static_clusters", [])], [c["cluster"]["name"] for c in d["configs"][1]["dynamic_active_clusters"]], d["configs"][2].get("dynamic_listeners", []), [s["name"] for s in d["configs"][5]["dynamic_active_secrets"]]' | tr -d '(),')"
expect_eq "?resource= that no dump has: 404 as Envoy" "404 nope not found in config dump" \
  "$(curl -s -w '%{http_code} ' -o body.txt "$A/config_dump?resource=nope")$(cat body.txt)"
expect_eq "?resource= a field that is not repeated: 400 as Envoy" \
  "400 version_info is not a repeated field. Use ?mask=version_info to get only this field" \
  "$(curl -s -w '%{http_code} ' -o body.txt "$A/config_dump?resource=version_info")$(cat body.txt)"
expect_eq "?mask= that fits no dump: 400 as Envoy" \
  "400 FieldMask nope could not be successfully applied to any configs." \
  "$(curl -s -w '%{http_code} ' -o body.txt "$A/config_dump?mask=nope")$(cat body.txt)"
expect_eq "?resource=&mask= through a field that is not the element's Any: 400" "400" \
  "$(curl -s -w '%{http_code}' -o /dev/null "$A/config_dump?resource=dynamic_listeners&mask=active_state.listener.name")"
expect_eq "?name_regex= that does not compile: 400" "400" \
  "$(curl -s -w '%{http_code}' -o /dev/null "$A/config_dump?name_regex=%28")"

# ---- /clusters and /listeners: Envoy's text and ?format=json ---------------------------------
curl -s -D hdr.txt "$A/clusters" > clusters.txt
check "/clusters: Envoy's text, text/plain" grep -qi '^content-type: text/plain' hdr.txt
check "... backend::added_via_api::true, its EDS service name" \
  grep -qx 'backend::added_via_api::true' clusters.txt
check "... each host's lines: cluster::address::name::value" \
  bash -c "grep -qx 'backend::127.0.0.1:$P_UP::health_flags::healthy' clusters.txt && grep -qx 'backend::127.0.0.1:$P_UP::weight::1' clusters.txt && grep -qx 'backend::127.0.0.1:$P_UP::rq_active::0' clusters.txt && grep -qx 'xds_cluster::added_via_api::false' clusters.txt"
curl -s "$A/clusters?format=json" > clusters.json
expect_eq "/clusters?format=json decodes as envoy.admin.v3.Clusters with Envoy's protos" "ok 1" \
  "$(decodes clusters.json envoy.admin.v3.Clusters)"
expect_eq "... backend added via the API, its host with address, weight, EDS health" \
  "True 127.0.0.1 $P_UP 1 HEALTHY" \
  "$(q clusters.json '[(c["added_via_api"], h["address"]["socket_address"]["address"], h["address"]["socket_address"]["port_value"], h["weight"], h["health_status"]["eds_health_status"]) for c in d["cluster_statuses"] if c["name"] == "backend" for h in c["host_statuses"]][0]' | tr -d "(),'")"
expect_eq "/listeners: Envoy's text" "https::127.0.0.1:$P_L" "$(curl -s "$A/listeners")"
curl -s "$A/listeners?format=json" > listeners.json
expect_eq "/listeners?format=json decodes as envoy.admin.v3.Listeners, with the address" "ok 1 https $P_L" \
  "$(decodes listeners.json envoy.admin.v3.Listeners) $(q listeners.json 'd["listener_statuses"][0]["name"] + " " + str(d["listener_statuses"][0]["local_address"]["socket_address"]["port_value"])')"
expect_eq "/legate/clusters and /legate/listeners keep legate's JSON" "EDS https" \
  "$(curl -s "$A/legate/clusters" | "$PY" -c 'import json,sys; print([c["type"] for c in json.load(sys.stdin)["clusters"] if c["name"] == "backend"][0])') $(curl -s "$A/legate/listeners" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["name"])')"

# ---- /server_info: Envoy's ServerInfo ---------------------------------------------------------
curl -s "$A/server_info" > si.json
expect_eq "/server_info decodes as envoy.admin.v3.ServerInfo with Envoy's protos" "ok 1" \
  "$(decodes si.json envoy.admin.v3.ServerInfo)"
expect_eq "... state, node, command line options, primitive fields printed as Envoy's" \
  "LIVE sidecar-1 2 legate.yaml Serve disabled True" \
  "$(q si.json 'd["state"], d["node"]["id"], d["command_line_options"]["concurrency"], d["command_line_options"]["config_path"], d["command_line_options"]["mode"], d["hot_restart_version"], d["uptime_current_epoch"].endswith("s")' | tr -d "(),'")"
curl -s -X POST "$A/healthcheck/fail" >/dev/null
curl -s "$A/server_info" > si2.json
expect_eq "... a failed health check is DRAINING, as Envoy reports it" "DRAINING" "$(q si2.json 'd["state"]')"
curl -s -X POST "$A/healthcheck/ok" >/dev/null
expect_eq "/legate/server_info keeps legate's shape (the command line as given)" "legate.yaml" \
  "$(curl -s "$A/legate/server_info" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["command_line"][d["command_line"].index("-c") + 1])')"

# ---- NACKs: error_state where the resource is --------------------------------------------
HCM='"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
BAD_L="- { name: broken, address: { socket_address: { address: 127.0.0.1, port_value: $P_L2 } },
    filter_chains: [{ filters: [{ name: envoy.filters.network.http_connection_manager,
      typed_config: { $HCM, stat_prefix: broken, codec_type: HTTP3, route_config: {} } }] }] }"
# a new listener that is refused, and a new version of https that is too
cp_config "$BAD_L" "s/codec_type: AUTO/codec_type: HTTP3/"
kill -HUP "$PID_control"
for _ in $(seq 1 100); do grep -q 'LDS version 2 rejected' legate.log && break; sleep 0.05; done
curl -s "$A/config_dump" > nack.json
expect_eq "after a NACK the dump still decodes" "ok 6" "$(decodes nack.json)"
out=$(q nack.json '"\n".join("%s active=%s error=%s | %s" % (l["name"], "active_state" in l, l.get("error_state", {}).get("version_info"), l.get("error_state", {}).get("details")) for l in d["configs"][2]["dynamic_listeners"])')
expect_eq "https keeps its active version and gets error_state with the refused version and its own error" \
  'https active=True error=2 | listener "https": filter_chains[0].filters[0].typed_config.codec_type: only AUTO, HTTP1 and HTTP2 are supported' \
  "$(echo "$out" | grep '^https')"
expect_eq "the new listener that was refused: listed by name with its error_state alone" \
  'broken active=False error=2 | listener "broken": filter_chains[0].filters[0].typed_config.codec_type: only AUTO, HTTP1 and HTTP2 are supported' \
  "$(echo "$out" | grep '^broken')"
check "error_state.last_update_attempt is a timestamp" \
  test "$(q nack.json 'all(l["error_state"]["last_update_attempt"].endswith("Z") for l in d["configs"][2]["dynamic_listeners"])')" = True
expect_eq "/legate/config_dump (legate's own shape) lists the same NACKs per resource" "broken https" \
  "$(curl -s "$A/legate/config_dump" | "$PY" -c 'import json,sys; d=json.load(sys.stdin)["dynamic"]["listeners"]; print(" ".join(sorted(e["name"] for e in d["errors"])))')"
cp_config
kill -HUP "$PID_control"
for _ in $(seq 1 100); do grep -q 'LDS version 3 applied' legate.log && break; sleep 0.05; done
expect_eq "the next ACK clears error_state (and forgets the refused listener)" "['https'] []" \
  "$(curl -s "$A/config_dump" > ack.json; q ack.json '[l["name"] for l in d["configs"][2]["dynamic_listeners"]], [l for l in d["configs"][2]["dynamic_listeners"] if "error_state" in l]' | tr -d '(),')"
expect_eq "/legate/config_dump keeps the old shape (dynamic resources with state)" "active" \
  "$(curl -s "$A/legate/config_dump" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print([r["state"] for r in d["dynamic"]["listeners"]["resources"] if r["name"] == "https"][0])')"

# ---- static: a bootstrap with inline TLS, routes and a secret ------------------------------
sed -e "s/port_value: 8443/port_value: $P_S/; s/port_value: 9901/port_value: $P_SADMIN/; s/port_value: 9443/port_value: $P_UP/" \
  -e "s|path: /dev/stdout|path: $WORK/access.log|" "$SRC/docs/examples/static-mtls.yaml" > static.yaml
# a static secret with its key inline
"$PY" - static.yaml "$C/server.pem" "$C/server.key" <<'PY'
import sys, json
p, crt, key = sys.argv[1:4]
s = open(p).read()
sec = """  secrets:
  - name: inline-cert
    tls_certificate:
      certificate_chain: { inline_string: %s }
      private_key: { inline_string: %s }
""" % (json.dumps(open(crt).read()), json.dumps(open(key).read()))
s = s.replace("static_resources:\n", "static_resources:\n" + sec, 1)
open(p, "w").write(s)
PY
LEGATE_PORT=$P_S start_legate static static.yaml || { finish; exit 1; }
curl -s "http://127.0.0.1:$P_SADMIN/config_dump?include_eds" > static.json
expect_eq "static bootstrap: /config_dump?include_eds decodes with Envoy's protos" "ok 7" "$(decodes static.json)"
expect_eq "... static listener, cluster, endpoints, the listener's inline route_config, the secret" \
  "1 1 1 local [inline-cert]" \
  "$(q static.json 'len(d["configs"][3]["static_listeners"]), len(d["configs"][1]["static_clusters"]), len(d["configs"][2]["static_endpoint_configs"]), d["configs"][5]["static_route_configs"][0]["route_config"]["name"], [s["name"] for s in d["configs"][6]["static_secrets"]]' | tr -d "(),'")"
expect_eq "... no version_info and nothing dynamic without xDS" "False False" \
  "$(q static.json '"version_info" in d["configs"][1], "dynamic_listeners" in d["configs"][3]' | tr -d '(),')"
expect_eq "... an inline private key and a key file's name, both \"[redacted]\" in place" "[redacted] [redacted] [redacted]" \
  "$(q static.json 'd["configs"][6]["static_secrets"][0]["secret"]["tls_certificate"]["private_key"]["inline_string"], d["configs"][0]["bootstrap"]["static_resources"]["secrets"][0]["tls_certificate"]["private_key"]["inline_string"], d["configs"][3]["static_listeners"][0]["listener"]["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0]["private_key"]["filename"]' | tr -d '(),'"'")"
check "... and no key material anywhere" bash -c "! grep -q '$NO_KEYS' static.json"
check "... nor in /legate/config_dump" bash -c "! curl -s http://127.0.0.1:$P_SADMIN/legate/config_dump | grep -q '$NO_KEYS'"
finish
