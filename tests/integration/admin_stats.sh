#!/usr/bin/env bash
# The admin interface of a running legate: stats with Envoy's names summed
# over workers, valid Prometheus output, /clusters and /listeners, and the
# POST-only endpoints that change state.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
P1=$(free_port); P_ADMIN=$(free_port); P_UP=$(free_port)
start_nginx_mtls up "$P_UP"
sed -e "s/port_value: 8443/port_value: $P1/; s/port_value: 9901/port_value: $P_ADMIN/; s/port_value: 9443/port_value: $P_UP/" \
  -e "s|path: /dev/stdout|path: $WORK/access.log|" "$SRC/docs/examples/static-mtls.yaml" > legate.yaml
# and a second, JSON, access log
python3 - legate.yaml "$WORK/access.json" <<'PY'
import sys
p, path = sys.argv[1], sys.argv[2]
s = open(p).read()
i = s.index("          access_log:\n") + len("          access_log:\n")
s = s[:i] + """          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: %s
              log_format:
                json_format: { code: "%%RESPONSE_CODE%%", path: "%%REQ(:PATH)%%", flags: "%%RESPONSE_FLAGS%%", peer: "%%DOWNSTREAM_PEER_URI_SAN%%", ua: "%%REQ(USER-AGENT)%%", missing: "%%REQ(X-NOPE)%%", line: "%%REQ(:METHOD)%% %%RESPONSE_CODE%%" }
""" % path + s[i:]
open(p, "w").write(s)
PY
LEGATE_PORT=$P1 start_legate legate legate.yaml || { finish; exit 1; }
A=http://127.0.0.1:$P_ADMIN
U=https://localhost:$P1

for i in $(seq 1 10); do curl_mtls -o /dev/null "$U/ok/$i"; done
curl_mtls -o /dev/null "$U/healthz"
for i in 1 2 3; do curl -s -o /dev/null --cacert "$C/ca.pem" "$U/nocert"; done
stat() { curl -s "$A/stats" | sed -n "s/^$1: //p"; }
L=listener.0.0.0.0_$P1
expect_eq "http.<prefix>.downstream_rq_total counts every request, summed over workers" "11" "$(stat http.ingress_https.downstream_rq_total)"
expect_eq "http.<prefix>.downstream_rq_2xx" "11" "$(stat http.ingress_https.downstream_rq_2xx)"
expect_eq "cluster.<name>.upstream_rq_total counts proxied requests only" "10" "$(stat cluster.backend.upstream_rq_total)"
expect_eq "cluster.<name>.upstream_rq_2xx" "10" "$(stat cluster.backend.upstream_rq_2xx)"
# 14 clients, and the probe that waited for the port
expect_eq "listener.<address>.downstream_cx_total" "15" "$(stat "$L.downstream_cx_total")"
expect_eq "listener.<address>.ssl.handshake" "11" "$(stat "$L.ssl.handshake")"
expect_eq "listener.<address>.ssl.fail_verify_no_cert" "3" "$(stat "$L.ssl.fail_verify_no_cert")"
check "cluster.<name>.upstream_rq_time is a histogram with 10 samples" \
  grep -q "^cluster.backend.upstream_rq_time: count=10 " <(curl -s "$A/stats")
check "server.days_until_first_cert_expiring" grep -qE "^server.days_until_first_cert_expiring: (29|30)$" <(curl -s "$A/stats")
expect_eq "/stats?filter=" "cluster.backend.upstream_rq_total: 10" "$(curl -s "$A/stats?filter=backend.upstream_rq_total")"

curl -s "$A/stats/prometheus" > prom.txt
out=$(python3 - prom.txt <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|\+Inf|NaN)$')
types, seen_family, errors = {}, [], []
buckets = {}
for l in lines:
    if l.startswith("# TYPE "):
        _, _, name, t = l.split(" ")
        if name in types: errors.append("family declared twice: " + name)
        types[name] = t; seen_family.append(name); continue
    m = sample.match(l)
    if not m: errors.append("bad line: " + l); continue
    name = m.group(1)
    base = re.sub(r'_(bucket|sum|count)$', '', name) if re.sub(r'_(bucket|sum|count)$', '', name) in types else name
    if base not in types: errors.append("no TYPE for " + name)
    elif seen_family[-1] != base: errors.append("family not contiguous: " + name)
    if name.endswith("_bucket"):
        key = (base, re.sub(r',?le="[^"]*"', '', m.group(2) or ""))
        v = float(m.group(4))
        if buckets.get(key, 0) > v: errors.append("buckets not cumulative: " + l)
        buckets[key] = v
print("valid" if not errors else errors[:3])
PY
)
expect_eq "/stats/prometheus is valid exposition format (TYPE lines, contiguous families, cumulative buckets)" "valid" "$out"
check "prometheus: a counter with its cluster label" \
  grep -q '^legate_cluster_upstream_rq_total{envoy_cluster_name="backend"} 10$' prom.txt
check "prometheus: the request time histogram" \
  grep -q '^legate_cluster_upstream_rq_time_bucket{envoy_cluster_name="backend",le="+Inf"} 10$' prom.txt

out=$(curl -s "$A/legate/clusters" | python3 -c '
import json,sys
c=[x for x in json.load(sys.stdin)["clusters"] if x["name"]=="backend"][0]
print(c["type"], c["tls"], c["upstream_rq_total"], [e["address"] for e in c["endpoints"]])')
expect_eq "/clusters: type, TLS, request count and endpoints" "STATIC True 10 ['127.0.0.1:$P_UP']" "$out"
out=$(curl -s "$A/legate/listeners" | python3 -c '
import json,sys
l=json.load(sys.stdin)["listeners"][0]
print(l["name"], l["address"], l["added_via_api"])')
expect_eq "/listeners" "https 0.0.0.0:$P1 False" "$out"

# Access logs: written off the request path, within ~100 ms.
sleep 0.3
line=$(grep -m1 '"GET /ok/1 HTTP/2"' access.log)
check "text access log: one line per request with Envoy's operators" \
  grep -qE '^\[20[0-9-]+T[0-9:.]+Z\] "GET /ok/1 HTTP/2" 200 - 0 [0-9]+ [0-9]+ "127.0.0.1:'"$P_UP"'" "CN=client,O=legate test" "spiffe://example.org/ns/default/sa/client" TLSv1.3 127.0.0.1:[0-9]+$' <<<"$line"
expect_eq "text access log: every request, including local replies" "11" "$(grep -c 'HTTP/2" 200' access.log)"
out=$(python3 -c '
import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
r=[x for x in rows if x["path"]=="/healthz"][0]
print(len(rows), r["code"], r["flags"], r["peer"], r["missing"], r["line"], r["ua"].startswith("curl/"))' access.json)
expect_eq "JSON access log: typed values, null for missing ones" \
  "11 200 None spiffe://example.org/ns/default/sa/client None GET 200 True" "$out"

# State-changing endpoints take POST only.
for p in /healthcheck/fail /healthcheck/ok /drain_listeners /quitquitquit "/logging?level=debug"; do
  expect_eq "GET $p is refused (405)" "405" "$(curl -s -o /dev/null -w '%{http_code}' "$A$p")"
done
expect_eq "GET /ready before: 200 LIVE" "200 LIVE" "$(curl -s -w '%{http_code} ' -o r.out "$A/ready"; cat r.out)"
curl -s -X POST "$A/healthcheck/fail" >/dev/null
expect_eq "after POST /healthcheck/fail: /ready 503" "503 HEALTH_CHECK_FAILED" "$(curl -s -w '%{http_code} ' -o r.out "$A/ready"; cat r.out)"
curl -s -X POST "$A/healthcheck/ok" >/dev/null
expect_eq "after POST /healthcheck/ok: /ready 200" "200 LIVE" "$(curl -s -w '%{http_code} ' -o r.out "$A/ready"; cat r.out)"
expect_eq "POST /logging?level=debug" "level: debug" "$(curl -s -X POST "$A/logging?level=debug")"
curl_mtls -o /dev/null "$U/healthz"
check "... takes effect at once" grep -q "\[debug\]" legate.log
expect_eq "POST /logging with a bad level: 400" "400" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$A/logging?level=loud")"
curl -s -X POST "$A/drain_listeners" >/dev/null
sleep 0.2
expect_eq "after POST /drain_listeners: new connections are refused" "000" \
  "$(curl_mtls -o /dev/null -w '%{http_code}' --max-time 3 "$U/x")"
expect_eq "... while the admin still answers" "200" "$(curl -s -o /dev/null -w '%{http_code}' "$A/ready")"
curl -s -X POST "$A/quitquitquit" >/dev/null
wait "$PID_legate"; rc=$?
expect_eq "POST /quitquitquit: legate exits 0" "0" "$rc"
check "no sanitizer report" bash -c "! grep -q 'ERROR: AddressSanitizer\|runtime error\|LeakSanitizer' '$WORK/legate.log'"
finish
