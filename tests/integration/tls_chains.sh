#!/usr/bin/env bash
# Client certificate chains at the edge of what verification must get right:
# intermediates sent by the client, path length, key usage, name
# constraints. Each bad one fails the handshake; the good ones pass.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/env.sh"
"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"
C=$WORK/certs
mkdir -p pki
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "pki/$1.key" 2>/dev/null; }
sign() { # sign NAME ISSUER SUBJECT EXTENSIONS...
  local n=$1 iss=$2 subj=$3; shift 3
  key "$n"
  printf '%s\n' "$@" > "pki/$n.ext"
  openssl req -new -key "pki/$n.key" -subj "$subj" -out "pki/$n.csr" 2>/dev/null
  if [ "$iss" = self ]; then
    openssl x509 -req -in "pki/$n.csr" -signkey "pki/$n.key" -days 2 -extfile "pki/$n.ext" -out "pki/$n.pem" 2>/dev/null
  else
    openssl x509 -req -in "pki/$n.csr" -CA "pki/$iss.pem" -CAkey "pki/$iss.key" -set_serial "0x$(openssl rand -hex 8)" \
      -days 2 -extfile "pki/$n.ext" -out "pki/$n.pem" 2>/dev/null
  fi
}
CA="basicConstraints=critical,CA:TRUE"
KU_CA="keyUsage=critical,keyCertSign,cRLSign"
LEAF="basicConstraints=CA:FALSE"
sign root self "/CN=chain root" "$CA" "$KU_CA"
sign inter root "/CN=chain intermediate" "$CA" "$KU_CA"
sign leaf inter "/CN=leaf" "$LEAF" "extendedKeyUsage=clientAuth" "subjectAltName=DNS:client.example.org"
sign root0 self "/CN=pathlen root" "basicConstraints=critical,CA:TRUE,pathlen:0" "$KU_CA"
sign inter0 root0 "/CN=inter under pathlen 0" "$CA" "$KU_CA"
sign deep inter0 "/CN=deep" "$LEAF" "extendedKeyUsage=clientAuth"
sign serveronly root "/CN=server-only" "$LEAF" "extendedKeyUsage=serverAuth"
sign nokeyusage root "/CN=wrong key usage" "$LEAF" "keyUsage=critical,keyCertSign" "extendedKeyUsage=clientAuth"
sign nc root "/CN=constrained intermediate" "$CA" "$KU_CA" "nameConstraints=critical,permitted;DNS:.example.org"
sign inside nc "/CN=inside" "$LEAF" "extendedKeyUsage=clientAuth" "subjectAltName=DNS:a.example.org"
sign outside nc "/CN=outside" "$LEAF" "extendedKeyUsage=clientAuth" "subjectAltName=DNS:evil.example.com"
sign pinned self "/CN=pinned" "$LEAF" "extendedKeyUsage=clientAuth"
sign pinned2 self "/CN=pinned by key" "$LEAF" "extendedKeyUsage=clientAuth"
sign stranger self "/CN=stranger" "$LEAF" "extendedKeyUsage=clientAuth"
cat pki/root.pem pki/root0.pem > pki/trusted.pem
spki() { openssl x509 -in "pki/$1.pem" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64; }
der_hash() { openssl x509 -in "pki/$1.pem" -outform der | openssl dgst -sha256 -c | sed 's/.*= //'; }

P=$(free_port); P_PIN=$(free_port); P_ONLY=$(free_port)
listener() { # listener NAME PORT VALIDATION_CONTEXT
  cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates: [{ certificate_chain: { filename: $C/server.pem }, private_key: { filename: $C/server.key } }]
            validation_context: { $3 }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mtls
          route_config:
            virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: / }, direct_response: { status: 200, body: { inline_string: "in\n" } } }] }]
          http_filters: [{ name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]
YAML
}
{
  echo "static_resources:"
  echo "  listeners:"
  listener mtls "$P" "trusted_ca: { filename: $WORK/pki/trusted.pem }"
  # A CA and a pin: both must hold.
  listener pinned "$P_PIN" "trusted_ca: { filename: $WORK/pki/trusted.pem }, verify_certificate_spki: [\"$(spki leaf)\"]"
  # Pins without a CA (as in Envoy): the chain is not verified, the certificate must be one of these.
  listener pinonly "$P_ONLY" "verify_certificate_hash: [\"$(der_hash pinned)\"], verify_certificate_spki: [\"$(spki pinned2)\"]"
} > legate.yaml
LEGATE_PORT=$P start_legate legate legate.yaml || { finish; exit 1; }
try() { # try CERT KEY [INTERMEDIATES]: "200" or the TLS alert, from the listener on $PORT (default $P)
  local out chain=()
  [ -n "${3:-}" ] && chain=(-cert_chain "$3")
  out=$(printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    timeout 5 openssl s_client -connect "127.0.0.1:${PORT:-$P}" -servername localhost -CAfile "$C/ca.pem" \
      -cert "$1" -key "$2" "${chain[@]}" -ign_eof 2>&1)
  if grep -q "HTTP/1.1 200" <<<"$out"; then echo 200; else grep -o 'alert [a-z ]*' <<<"$out" | head -1; fi
}
expect_eq "leaf + intermediate sent by the client, root trusted: accepted" "200" "$(try pki/leaf.pem pki/leaf.key pki/inter.pem)"
expect_eq "leaf without its intermediate: unknown CA" "alert unknown ca" "$(try pki/leaf.pem pki/leaf.key)"
expect_eq "a chain longer than the root's pathlen:0 allows: refused" "alert unknown ca" "$(try pki/deep.pem pki/deep.key pki/inter0.pem)"
expect_eq "extendedKeyUsage serverAuth only (no clientAuth): unsupported certificate" "alert unsupported certificate" \
  "$(try pki/serveronly.pem pki/serveronly.key)"
expect_eq "keyUsage without digitalSignature: refused" "ok" \
  "$(r=$(try pki/nokeyusage.pem pki/nokeyusage.key); [ "$r" != 200 ] && [ -n "$r" ] && echo ok || echo "$r")"
expect_eq "a name inside the intermediate's nameConstraints: accepted" "200" "$(try pki/inside.pem pki/inside.key pki/nc.pem)"
expect_eq "a name outside them: refused" "alert certificate unknown" "$(try pki/outside.pem pki/outside.key pki/nc.pem)"
for r in "path length constraint exceeded (path length exceeded); client certificate: /CN=deep" \
         "unsuitable certificate purpose (wrong key usage); client certificate: /CN=server-only" \
         "permitted subtree violation (name constraints violated); client certificate: /CN=outside"; do
  check "the log says why: $r" grep -qF "$r" legate.log
done

expect_eq "CA and SPKI pin: the pinned leaf is accepted" "200" "$(PORT=$P_PIN try pki/leaf.pem pki/leaf.key pki/inter.pem)"
expect_eq "CA and SPKI pin: another leaf of the same CA is refused" "refused" \
  "$(r=$(PORT=$P_PIN try pki/inside.pem pki/inside.key pki/nc.pem); [ "$r" != 200 ] && [ -n "$r" ] && echo refused || echo "$r")"
expect_eq "CA and SPKI pin: the pinned key under no trusted CA is refused" "refused" \
  "$(r=$(PORT=$P_PIN try pki/leaf.pem pki/leaf.key); [ "$r" != 200 ] && [ -n "$r" ] && echo refused || echo "$r")"
check "the log says why: (certificate not pinned); client certificate: /CN=inside" \
  grep -qF "application verification failure (certificate not pinned); client certificate: /CN=inside" legate.log
expect_eq "pins without a CA: the certificate whose hash is pinned is accepted" "200" \
  "$(PORT=$P_ONLY try pki/pinned.pem pki/pinned.key)"
expect_eq "pins without a CA: the certificate whose key is pinned is accepted" "200" \
  "$(PORT=$P_ONLY try pki/pinned2.pem pki/pinned2.key)"
for who in stranger leaf; do
  expect_eq "pins without a CA: $who (not pinned) is refused" "refused" \
    "$(r=$(PORT=$P_ONLY try pki/$who.pem pki/$who.key); [ "$r" != 200 ] && [ -n "$r" ] && echo refused || echo "$r")"
done
check "the log says why: (certificate not pinned); client certificate: /CN=stranger" \
  grep -qF "application verification failure (certificate not pinned); client certificate: /CN=stranger" legate.log
kill -TERM "$PID_legate"; wait "$PID_legate"; rc=$?
expect_eq "SIGTERM: exit code 0" "0" "$rc"
finish
