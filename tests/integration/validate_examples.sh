#!/usr/bin/env bash
# `legate --mode validate` accepts every shipped example and rejects every
# broken bootstrap with exit 1 and a one-line message naming the field.
source "$(dirname "$0")/lib.sh"

# The examples name certificates relative to the working directory, as a
# deployment would: validation loads them, so make them.
"$SRC/scripts/gen-certs.sh" "$WORK/certs"
cd "$WORK"

for f in "$SRC"/docs/examples/*.yaml "$SRC"/docs/examples/*.json; do
  out=$("$BIN/legate" --mode validate -c "$f" 2>&1); rc=$?
  expect_eq "valid: $(basename "$f") exits 0" "0" "$rc"
  expect_eq "valid: $(basename "$f") says OK" "configuration '$f' OK" "$out"
done

for f in "$SRC"/tests/fixtures/bootstrap-bad/*.yaml; do
  want=$(sed -n '1s/^# expect: //p' "$f")
  out=$("$BIN/legate" --mode validate -c "$f" 2>&1); rc=$?
  expect_eq "invalid: $(basename "$f") exits 1" "1" "$rc"
  expect_eq "invalid: $(basename "$f") message" "legate: error: $f: $want" "$out"
done

# Enum names in any case, as Envoy reads them: its examples write
# "type: strict_dns" and "lb_policy: round_robin".
cat > "$WORK/lower.yaml" <<'YAML'
static_resources:
  clusters:
  - name: svc
    type: strict_dns
    lb_policy: round_robin
    connect_timeout: 1s
    load_assignment:
      cluster_name: svc
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: localhost, port_value: 8080 } } } }] }]
YAML
out=$("$BIN/legate" --mode validate -c "$WORK/lower.yaml" 2>&1); rc=$?
expect_eq "enum names in lower case (type: strict_dns) are accepted" "0 configuration '$WORK/lower.yaml' OK" "$rc $out"

# Environment variables in the bootstrap: one ConfigMap for every pod.
cat > "$WORK/env.yaml" <<'YAML'
node: { id: "${POD_NAME}.${POD_NAMESPACE:-default}", cluster: "${APP:-web}" }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } }
YAML
out=$(POD_NAME=pod-7 POD_NAMESPACE=shop "$BIN/legate" --mode validate -c "$WORK/env.yaml" 2>&1); rc=$?
expect_eq "\${VAR} and \${VAR:-default} in the bootstrap are expanded" "0 configuration '$WORK/env.yaml' OK" "$rc $out"

out=$("$BIN/legate" --mode validate -c "$WORK/missing.yaml" 2>&1); rc=$?
expect_eq "missing file exits 1" "1" "$rc"
expect_eq "missing file message" "legate: error: $WORK/missing.yaml: No such file or directory" "$out"

out=$("$BIN/legate" --mode validate 2>&1); rc=$?
expect_eq "no -c exits 1" "1" "$rc"
expect_eq "no -c message" "legate: -c/--config-path is required" "$out"

out=$("$BIN/legate" -c x --log-level loud 2>&1); rc=$?
expect_eq "bad log level exits 1" "1" "$rc"
expect_eq "bad log level message" 'legate: --log-level: unknown level "loud"' "$out"

printf '\x0a\x03\x0a\x01' > "$WORK/broken.pb"
out=$("$BIN/legate" --mode validate -c "$WORK/broken.pb" 2>&1); rc=$?
expect_eq "truncated binary bootstrap exits 1" "1" "$rc"
expect_eq "truncated binary bootstrap message" \
  "legate: error: $WORK/broken.pb: not a valid binary envoy.config.bootstrap.v3.Bootstrap" "$out"

# Validation loads what the config names: a missing certificate is an error
# that names the field and the file.
mv certs/server.key certs/server.key.gone
out=$("$BIN/legate" --mode validate -c "$SRC/docs/examples/static-mtls.yaml" 2>&1); rc=$?
expect_eq "missing key file exits 1" "1" "$rc"
expect_eq "missing key file message" \
  "legate: error: $SRC/docs/examples/static-mtls.yaml: static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key.filename: certs/server.key: No such file or directory" "$out"
mv certs/server.key.gone certs/server.key
# A key that is not the certificate's.
cp certs/server.key certs/server.key.orig
cp certs/api.key certs/server.key
out=$("$BIN/legate" --mode validate -c "$SRC/docs/examples/static-mtls.yaml" 2>&1); rc=$?
expect_eq "mismatched key exits 1" "1" "$rc"
expect_eq "mismatched key message" \
  "legate: error: $SRC/docs/examples/static-mtls.yaml: static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key: does not match the first certificate of certificate_chain" "$out"
cp certs/server.key.orig certs/server.key

# Every field that xds/unsupported.c refuses is in the reference's table.
missing=$(grep -oE '^ +\{[A-Z0-9]+, "[a-z_0-9]+", U_|"[a-z_0-9]+", U_' "$SRC/xds/unsupported.c" | grep -oE '"[a-z_0-9]+"' | tr -d '"' |
  while read -r f; do grep -q "\.$f\` |" "$SRC/docs/resources.md" || echo "$f"; done)
n=$(grep -c ', U_[A-Z_]*, ' "$SRC/xds/unsupported.c")
expect_eq "docs/resources.md lists the $n fields legate refuses" "" "$missing"
[ "$n" -gt 30 ] || not_ok "xds/unsupported.c's rules were found ($n)"

finish
