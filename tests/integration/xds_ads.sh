#!/usr/bin/env bash
# legate driven over ADS by a real gRPC xDS server (legate-control): LDS,
# RDS, CDS, EDS and SDS; warming; ACK/NACK with versions, nonces and exact
# error details; updates under load; control plane loss and return.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
CONTROL=$BIN/../control-sample/legate-control

"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P_CP=$(free_port); P_L=$(free_port); P_L2=$(free_port); P_UP=$(free_port); P_ADMIN=$(free_port)
start_nginx_mtls up "$P_UP"

# control.yaml: the demo's resources with our ports, a direct-response route
# that tells which version serves, and optional extras.
#   cp_config MARKER [server-cert yes|no] [EXTRA_LISTENERS_YAML]
cp_config() {
  local marker=$1 cert=${2:-yes} extra=${3:-}
  sed -e "s/port_value: 10443/port_value: $P_L/; s/port_value: 10444/port_value: $P_UP/" \
    -e "s|    - match: { prefix: / }|    - match: { path: /marker }\n      direct_response: { status: 200, body: { inline_string: \"$marker\" } }\n    - match: { prefix: / }|" \
    "$SRC/control-sample/examples/demo.yaml" > control.tmp
  if [ "$cert" = no ]; then
    python3 - control.tmp <<'PY'
import sys, re
p = sys.argv[1]; s = open(p).read()
s = re.sub(r"- name: server-cert\n(  .*\n)+?(?=- name:)", "", s)
open(p, "w").write(s)
PY
  fi
  if [ -n "$extra" ]; then
    python3 - control.tmp "$extra" <<'PY'
import sys
p, extra = sys.argv[1], sys.argv[2]; s = open(p).read()
s = s.replace("\nroutes:\n", "\n" + extra + "\nroutes:\n", 1)
open(p, "w").write(s)
PY
  fi
  mv control.tmp control.yaml
}
reload_cp() { kill -HUP "$PID_control"; }

sed -e "s/port_value: 18000/port_value: $P_CP/; s/port_value: 9901/port_value: $P_ADMIN/" \
  "$SRC/docs/examples/ads.yaml" > legate.yaml
# Give up on missing resources after 2 s instead of Envoy's 15 s.
sed -i "s/initial_fetch_timeout: 15s/initial_fetch_timeout: 2s/" legate.yaml

# --- warming: the listener's certificate is not there yet ----------------------------
cp_config v1 no
start_bg control "$CONTROL" -c control.yaml --listen "127.0.0.1:$P_CP" --log-requests requests.jsonl -l debug
wait_port "$P_CP"
start_bg legate "$BIN/legate" -c legate.yaml --concurrency 2 -l debug
for _ in $(seq 1 100); do grep -q "RDS version" legate.log 2>/dev/null && break; sleep 0.05; done
sleep 0.5
check "warming: LDS, RDS, CDS, EDS arrived, the server certificate did not" grep -q "RDS version 1 applied" legate.log
check "warming: no connection accepted before the listener's certificate arrives" \
  bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$P_L) 2>/dev/null"
check "warming: legate says what the listener waits for" grep -q 'listener "https" is warming: waiting for secret "server-cert"' legate.log
ADMIN=http://127.0.0.1:$P_ADMIN
expect_eq "/ready while warming: 503 PRE_INITIALIZING" "503 PRE_INITIALIZING" \
  "$(curl -s -w '%{http_code}' -o ready.out "$ADMIN/ready") $(cat ready.out)"
for _ in $(seq 1 50); do grep -q 'not received within 2 s' legate.log && break; sleep 0.1; done
check "initial_fetch_timeout: legate gives up on the missing secret with a warning" \
  grep -q 'secret "server-cert" not received within 2 s (initial fetch timeout)' legate.log
expect_eq "... and is ready with the rest of the config" "200 LIVE" \
  "$(curl -s -w '%{http_code}' -o ready.out "$ADMIN/ready") $(cat ready.out)"
check "... while the listener that needs the secret stays closed" \
  bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$P_L) 2>/dev/null"

cp_config v2 yes
reload_cp
wait_port "$P_L" 5
body=$(curl_mtls "https://localhost:$P_L/app")
expect_eq "LDS+RDS+CDS+EDS+SDS: mTLS request through legate reaches the mTLS upstream with the SDS client certificate" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/app proto=HTTP/1.1" "$body"
expect_eq "HTTP/2 too" "200 2" "$(curl_mtls --http2 -o /dev/null -w '%{http_code} %{http_version}' "https://localhost:$P_L/app")"
expect_eq "RDS: the route table in force" "v2" "$(curl_mtls "https://localhost:$P_L/marker")"
expect_eq "/ready with everything: 200 LIVE" "200 LIVE" \
  "$(curl -s -w '%{http_code}' -o ready.out "$ADMIN/ready") $(cat ready.out)"
curl -s "$ADMIN/legate/config_dump" > dump.json
out=$(python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))["dynamic"]
l=[r for r in d["listeners"]["resources"] if r["name"]=="https"][0]
s=[r for r in d["secrets"]["resources"] if r["name"]=="server-cert"][0]
print(l["state"], l["resource"]["address"]["socket_address"]["port_value"], d["secrets"]["version_info"],
      s["resource"]["tls_certificate"]["private_key"], sorted(d["secrets"]["subscribed"]))' dump.json)
expect_eq "/config_dump: applied resources with versions, the private key redacted" \
  "active $P_L 2 [redacted] ['backend-client', 'client-ca', 'server-cert', 'upstream-ca']" "$out"
check "/config_dump: no key material anywhere" bash -c "! grep -q 'PRIVATE KEY\|LS0tLS1CRUdJTiBQUklWQVRF\|LS0tLS1CRUdJTiBFQyBQUklWQVRF' dump.json"
out=$(curl -s "$ADMIN/certs" | python3 -c '
import json,sys
c=[e for e in json.load(sys.stdin)["certificates"] if e["source"].startswith("sds:server-cert")][0]["cert_chain"][0]
print(c["subject"], [n.get("dns") or n.get("ip_address") for n in c["subject_alt_names"]], c["days_until_expiration"] in (29, 30))')
expect_eq "/certs: the SDS server certificate with its SANs and days until expiry" \
  "/O=legate test/CN=localhost ['localhost', 'legate.test', '127.0.0.1'] True" "$out"

# --- ACKs: every response is acknowledged with its version and nonce -----------------------
acks_ok() {
  python3 - "$WORK/control.log" "$WORK/requests.jsonl" <<'PY'
import json, re, sys
sent = re.findall(r'sent (\w+) version (\S+) nonce (\S+)', open(sys.argv[1]).read())
reqs = [json.loads(l) for l in open(sys.argv[2])]
short = lambda u: u.rsplit(".", 1)[-1]
bad = []
for typ, ver, nonce in sent:
    ack = [r for r in reqs if r["response_nonce"] == nonce and short(r["type_url"]) == typ]
    if not ack or ack[0]["version_info"] != ver or ack[0]["error_detail"]:
        bad.append((typ, ver, nonce, ack[:1]))
print("all %d responses ACKed with their version and nonce" % len(sent) if not bad else "bad: %r" % bad)
PY
}
out=$(acks_ok)
check "ACKs carry the response's version and nonce ($out)" grep -q "^all [1-9][0-9]* responses ACKed" <<<"$out"
first_lds=$(python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if "Listener" in l]
print(r[0]["node"], repr(r[0]["version_info"]), repr(r[0]["response_nonce"]))' requests.jsonl)
expect_eq "the first LDS request names the node, with no version and no nonce" "sidecar-1 '' ''" "$first_lds"

# --- a bad listener is NACKed, a good one in the same response applies ------------------------
GOOD_L2="- name: second
  address: { socket_address: { address: 127.0.0.1, port_value: $P_L2 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: second
        route_config: { virtual_hosts: [{ name: all, domains: [\"*\"], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: { inline_string: second } } }] }] }
        http_filters: [{ name: envoy.filters.http.router, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]"
BAD_L="- name: broken
  address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: broken
        codec_type: HTTP3
        route_config: { virtual_hosts: [{ name: all, domains: [\"*\"] }] }
        http_filters: [{ name: envoy.filters.http.router, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]"
cp_config v3 yes "$GOOD_L2
$BAD_L"
reload_cp
wait_port "$P_L2" 5
expect_eq "a good listener in a response with a bad one is applied" "second" "$(curl -s "http://127.0.0.1:$P_L2/")"
for _ in $(seq 1 50); do grep -q '"error_detail":"[^"]' requests.jsonl && break; sleep 0.1; done
nack=$(python3 -c '
import json,sys
reqs=[json.loads(l) for l in open(sys.argv[1]) if "Listener" in l]
i=max(k for k,r in enumerate(reqs) if r["error_detail"])
acked=[r["version_info"] for r in reqs[:i] if r["response_nonce"] and not r["error_detail"]][-1]
print("previous" if reqs[i]["version_info"] == acked else "not previous", "|", reqs[i]["error_detail"])' requests.jsonl)
expect_eq "the NACK keeps the previous version and names the listener and the field" \
  'previous | listener "broken": filter_chains[0].filters[0].typed_config.codec_type: only AUTO, HTTP1 and HTTP2 are supported' "$nack"
expect_eq "traffic keeps flowing on the last good config" "v3" "$(curl_mtls "https://localhost:$P_L/marker")"
check "legate logs the rejection" grep -q 'LDS version 3 rejected: listener "broken"' legate.log

# --- a field legate does not implement is refused, not ignored --------------------------------
last_nack() { # last_nack TYPE: the newest error_detail of that type's requests
  python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if sys.argv[2] in l]
print([x["error_detail"] for x in r if x["error_detail"]][-1])' requests.jsonl "$1"
}
sed -i "s/stat_prefix: ingress_https/stat_prefix: ingress_https\n        xff_num_trusted_hops: 1/" control.yaml
sed -i "s/route: { cluster: backend, timeout: 15s }/route: { cluster: backend, timeout: 14s, retry_policy: { retry_on: 5xx, num_retries: 2 } }/" control.yaml
reload_cp
# until legate-control has logged both NACKs
for _ in $(seq 1 100); do
  last_nack Listener 2>/dev/null | grep -q xff_num_trusted_hops && last_nack RouteConfiguration 2>/dev/null | grep -q retry_on && break
  sleep 0.1
done
expect_eq "LDS: xff_num_trusted_hops is refused with its path" \
  'listener "https": filter_chains[0].filters[0].typed_config.xff_num_trusted_hops: not supported; listener "broken": filter_chains[0].filters[0].typed_config.codec_type: only AUTO, HTTP1 and HTTP2 are supported' \
  "$(last_nack Listener)"
expect_eq "RDS: a retry policy is refused with its path" \
  'route configuration "local": virtual_hosts[0].routes[1].route.retry_policy.retry_on: retries are not supported' \
  "$(last_nack RouteConfiguration)"
expect_eq "the refused listener keeps serving with its last good version (and routes)" "v3" \
  "$(curl_mtls "https://localhost:$P_L/marker")"
cp_config v3 yes "$GOOD_L2"
reload_cp

# --- a listener update under constant load loses no request -----------------------------------
urls=(); for i in $(seq 1 300); do urls+=(-o /dev/null "https://localhost:$P_L/app/$i"); done
# 150 requests a second for 2 s, on kept-alive connections
curl_mtls --rate 150/s -w '%{http_code}\n' "${urls[@]}" > load.out 2>&1 &
load=$!
for v in 4 5 6; do
  sleep 0.3
  # a new stat_prefix: the listener resource changes, its connections drain
  sed -i "s/stat_prefix: ingress_https[0-9]*/stat_prefix: ingress_https$v/" control.yaml
  reload_cp
done
wait $load
expect_eq "300 requests on kept-alive connections across 3 listener updates: all 200" \
  "300" "$(grep -c '^200$' load.out)"
check "the listener was updated meanwhile (its connections drained)" grep -q "listener https changed: draining" legate.log

# --- removals ------------------------------------------------------------------------------------
cp_config v7 yes
sed -i 's/route: { cluster: backend, timeout: 15s }/route: { cluster: gone, timeout: 15s }/' control.yaml
reload_cp
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$P_L2") 2>/dev/null || break; sleep 0.1; done
check "a listener removed from LDS stops accepting" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$P_L2) 2>/dev/null"
expect_eq "a route to a cluster that does not exist: 503" "503 cluster not found" \
  "$(curl_mtls -w '%{http_code} ' -o body.out "https://localhost:$P_L/app"; cat body.out)"
cp_config v8 yes
reload_cp
for _ in $(seq 1 50); do [ "$(curl_mtls "https://localhost:$P_L/marker")" = v8 ] && break; sleep 0.1; done

# --- the control plane goes away and comes back ----------------------------------------------
held=$(grep -o "SDS version [0-9]* applied" legate.log | tail -1 | cut -d' ' -f3)
kill -9 "$PID_control"; wait "$PID_control" 2>/dev/null
sleep 0.5
expect_eq "control plane down: traffic keeps flowing" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/down proto=HTTP/1.1" "$(curl_mtls "https://localhost:$P_L/down")"
check "legate noticed and backs off" grep -q "ADS stream to 127.0.0.1:$P_CP closed" legate.log
cp_config v9 yes
: > requests.jsonl
start_bg control "$CONTROL" -c control.yaml --listen "127.0.0.1:$P_CP" --log-requests requests.jsonl -l debug
for _ in $(seq 1 100); do [ "$(curl_mtls "https://localhost:$P_L/marker")" = v9 ] && break; sleep 0.1; done
expect_eq "control plane back: the new config applies" "v9" "$(curl_mtls "https://localhost:$P_L/marker")"
resent=$(python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1])]
sds=[x for x in r if "Secret" in x["type_url"]][0]
print(len(sds["resource_names"]), "names, version", sds["version_info"])' requests.jsonl)
expect_eq "on reconnect legate re-sends its SDS names and the version it holds" "4 names, version $held" "$resent"
expect_eq "... and still reaches the upstream" \
  "subject=CN=legate-cluster-backend,O=legate test uri=/up proto=HTTP/1.1" "$(curl_mtls "https://localhost:$P_L/up")"

kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
