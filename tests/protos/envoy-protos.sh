#!/usr/bin/env bash
# Envoy's own v3 protos, compiled into one descriptor set, for tests that
# read what legate writes with a decoder that is not legate's (Python
# protobuf's json_format with Envoy's full messages, not legate's trimmed
# ones in proto/).
#
#   tests/protos/envoy-protos.sh OUT.pb
#
# Source: the npm package @grpc/grpc-js-xds 1.14.1 (Apache-2.0), whose deps/
# carries envoyproxy/envoy's api/ (envoy-api, Apache-2.0), cncf/xds (udpa,
# xds; Apache-2.0), googleapis (Apache-2.0) and bufbuild/protoc-gen-validate
# (Apache-2.0) -- the same canonical tree scripts/trim-protos.py trims
# proto/ from. It is fetched with `npm pack` (checked against the sha512
# below) into a cache, never committed. Its validate.proto is older than
# its envoy-api and lacks StringRules.ignore_empty (field 26), which a few
# Envoy files set as an option: it is added to a copy; options do not change
# what a message reads.
#
# Needs npm and protoc (Debian: nodejs npm protobuf-compiler, both in
# scripts/install-deps.sh); fails without them: the proof is not optional.
set -euo pipefail
out=$1
pkg=@grpc/grpc-js-xds@1.14.1
tgz=grpc-grpc-js-xds-1.14.1.tgz
sha512=F2mVXwEeMWw1znPUrp+8ykjsIOVnf7Rv+EyIvXOfz73w5tNolCnzokpLkE/d2Ehx30PJmZXqCQdMpx8DcBJohA==
cache=${LEGATE_PROTO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/legate-test-protos}

for t in npm protoc; do
  command -v "$t" >/dev/null 2>&1 || { echo "envoy-protos.sh: $t is needed (Debian: nodejs npm protobuf-compiler)" >&2; exit 1; }
done
mkdir -p "$cache"
# One fetch at a time (ctest runs tests in parallel).
exec 9>"$cache/.lock"
flock 9
if [ ! -d "$cache/package/deps/envoy-api" ]; then
  if ! (cd "$cache" && npm pack --silent "$pkg" >/dev/null 2>"$cache/npm.log"); then
    cat "$cache/npm.log" >&2
    echo "envoy-protos.sh: npm pack $pkg failed" >&2
    exit 1
  fi
  got=$(openssl dgst -sha512 -binary "$cache/$tgz" | base64 -w0)
  if [ "$got" != "$sha512" ]; then
    echo "envoy-protos.sh: $tgz: sha512 $got, expected $sha512" >&2
    rm -f "$cache/$tgz"
    exit 1
  fi
  rm -rf "$cache/package.tmp" && mkdir "$cache/package.tmp"
  tar xzf "$cache/$tgz" -C "$cache/package.tmp"
  rm -rf "$cache/package" && mv "$cache/package.tmp/package" "$cache/package" && rmdir "$cache/package.tmp"
fi
deps=$cache/package/deps
mkdir -p "$cache/pgv/validate"
sed 's/^    optional string not_contains = 23;/&\n    optional bool ignore_empty = 26;/' \
  "$deps/protoc-gen-validate/validate/validate.proto" > "$cache/pgv/validate/validate.proto"
flock -u 9

wkt=$(dirname "$(dirname "$(dirname "$(find /usr/include /usr/local/include -path '*google/protobuf/any.proto' 2>/dev/null | head -1)")")")
# The admin dump and every type legate writes inside an Any: resources,
# extensions legate knows, and legate's own (proto/legate, resolved against
# Envoy's full files).
src=$(cd "$(dirname "$0")/../.." && pwd)
protoc -I "$deps/envoy-api" -I "$deps/googleapis" -I "$cache/pgv" -I "$deps/xds" -I "$wkt" -I "$src/proto" \
  --include_imports --descriptor_set_out="$out" \
  envoy/admin/v3/config_dump.proto envoy/admin/v3/server_info.proto envoy/admin/v3/clusters.proto \
  envoy/admin/v3/listeners.proto \
  envoy/config/bootstrap/v3/bootstrap.proto \
  envoy/extensions/transport_sockets/tls/v3/tls.proto envoy/extensions/transport_sockets/tls/v3/secret.proto \
  envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto \
  envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto \
  envoy/extensions/filters/network/connection_limit/v3/connection_limit.proto \
  envoy/extensions/filters/http/router/v3/router.proto \
  envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto \
  envoy/extensions/filters/listener/original_dst/v3/original_dst.proto \
  envoy/extensions/access_loggers/file/v3/file.proto \
  envoy/extensions/upstreams/http/v3/http_protocol_options.proto \
  $(cd "$src/proto" && find legate -name '*.proto' | sort)
