#!/usr/bin/env bash
# Regenerates the seed files of tests/fuzz/corpus/{http1,h2,xfcc}
# (seed-*): HTTP requests and HTTP/2 frames written here, certificates made
# by openssl. Regression inputs (regress-*) and the convert seeds (plain
# YAML/JSON files kept as they are) are never touched.
#   tests/fuzz/make-seeds.sh BUILD_DIR
# The xDS seeds carry a private key in their secrets, so they are never
# committed: tests/fuzz/run.sh makes them at run time, with a fresh PKI,
# from seeds/xds/*.yaml through xds-seed:
#   tests/fuzz/make-seeds.sh BUILD_DIR xds OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: make-seeds.sh BUILD_DIR [xds OUT_DIR]}" && pwd)
only=${2:-}
corpus=$here/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- HTTP/1.1 and HTTP/2 (the first byte is the driver's control byte,
# see hcm_driver.h) ----------------------------------------------------------
if [ -z "$only" ]; then
rm -f "$corpus"/http1/seed-* "$corpus"/h2/seed-*
python3 - "$corpus" <<'PY'
import struct, sys
out = sys.argv[1]

def w(target, name, data):
    with open(f"{out}/{target}/seed-{name}", "wb") as f:
        f.write(data)

# http1: ctl byte, then the bytes the client sends.
H = lambda s: s.replace("\n", "\r\n").encode()
h1 = {
    "get": (0x00, H("GET / HTTP/1.1\nHost: localhost\n\n")),
    "pipelined": (0x00, H("GET /exact HTTP/1.1\nHost: example.com\n\nHEAD /CI/x HTTP/1.1\nHost: api.x\n\n"
                          "GET /re/abc/12 HTTP/1.1\nHost: example.com\nConnection: close\n\n")),
    "post-length": (0x00, H("POST /missing HTTP/1.1\nHost: a\nContent-Length: 11\n\nhello world")),
    "chunked-trailers": (0x00, H("POST /od HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"
                                 "5;ext=1\nhello\n0\nx-trailer: 1\n\n")),
    "expect-continue": (0x08, H("PUT /upload HTTP/1.1\nHost: a\nExpect: 100-continue\nContent-Length: 3\n\nabc")),
    "http10-keepalive": (0x00, H("GET / HTTP/1.0\nConnection: keep-alive\n\nGET / HTTP/1.0\n\n")),
    "absolute-form": (0x00, H("GET http://example.com:80/exact?q=1 HTTP/1.1\nHost: ignored\n\n")),
    "options-star": (0x00, H("OPTIONS * HTTP/1.1\nHost: a\n\n")),
    "connect": (0x00, H("CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n\n")),
    "smuggle-cl-te": (0x00, H("POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n")),
    "smuggle-two-cl": (0x00, H("POST / HTTP/1.1\nHost: a\nContent-Length: 4\nContent-Length: 5\n\nabcde")),
    "te-gzip": (0x00, H("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n0\n\n")),
    "obs-fold": (0x00, H("GET / HTTP/1.1\nHost: a\nX-Long: a\n b\n\n")),
    "no-host": (0x00, H("GET / HTTP/1.1\n\n")),
    "headers-match": (0x00, H("PUT /hdr HTTP/1.1\nHost: example.com\nx-exact: yes\nx-present: 1\nx-re: 42\n"
                              "x-not: maybe\nContent-Length: 0\n\n")),
    "proxy-headers": (0x00, H("GET /off HTTP/1.1\nHost: other\nX-Forwarded-For: 10.0.0.1\nX-Forwarded-Proto: https\n"
                              "x-forwarded-client-cert: By=spiffe://a;Hash=00;URI=spiffe://b\nx-request-id: abc\n"
                              "Connection: x-remove-me, keep-alive\nx-remove-me: 1\nTE: trailers, deflate\n"
                              "x-consumer-username: admin\nUpgrade: websocket\nKeep-Alive: 5\n\n")),
    "redirects": (0x00, H("GET /redirect/https/x?y=1 HTTP/1.1\nHost: a\n\nGET /redirect HTTP/1.1\nHost: a:8080\n\n"
                          "GET /private HTTP/1.1\nHost: a\n\n")),
    "h2c-upgrade": (0x00, H("GET / HTTP/1.1\nHost: a\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\n"
                            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\n\n")),
    "split-chunks": (0x03, bytes([40, 100, 200]) + H("POST /missing HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"
                                                      "3\nabc\n4\ndefg\n0\n\nGET / HTTP/1.1\nHost: a\n\n")),
    "small-431": (0x04, H("GET / HTTP/1.1\nHost: a\n" + "".join(f"x-h{i}: {'v' * 20}\n" for i in range(12)) + "\n")),
    "small-big-reply": (0x04, H("GET /big HTTP/1.1\nHost: a\n\nGET /d HTTP/1.1\nHost: a\n\n")),
    "small-body": (0x04, H("POST /x HTTP/1.1\nHost: a\nContent-Length: 3000\n\n") + b"z" * 3000),
    "drain": (0x10, H("GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\nHost: a\n\n")),
    "timeouts-partial": (0x21, bytes([128]) + H("GET / HTTP/1.1\nHost: a\nX-Slow: 1\n\n")),
    "timeouts-idle": (0x24, H("GET /d HTTP/1.1\nHost: a\n\n")),
    "half-close": (0x08, H("POST /missing HTTP/1.0\nHost: a\n\nbody until the end")),
    "identity": (0x40, H("GET /private HTTP/1.1\nHost: other\nx-forwarded-client-cert: By=x;URI=y\n"
                         "x-consumer-id: forged\n\nGET / HTTP/1.1\nHost: example.com\n\n")),
    "identity-append": (0x44, H("GET /d HTTP/1.1\nHost: a\nx-forwarded-client-cert: By=\"a,b\";Hash=1\n\n")),
    "preface-h2": (0x00, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")),
}
# Chunk framing (issue 24, item 5): what a lenient http-parser accepts and
# legate refuses, valid extensions, and a bad chunk line in a later read.
CH = H("POST /x HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n")
h1.update({
    "strict-chunk-data-crlf": (0x00, CH + b"3\r\nabcXX0\r\n\r\n" + H("GET / HTTP/1.1\nHost: a\n\n")),
    "strict-chunk-size-ws": (0x00, CH + b"3 \r\nabc\r\n0\r\n\r\n"),
    "strict-chunk-ext-lf": (0x00, CH + b"3;a\nb\r\nabc\r\n0\r\n\r\n"),
    "strict-chunk-line-lf": (0x00, CH + b"3\nabc\r\n0\n\r\n"),
    "strict-chunk-ext-junk": (0x00, CH + b"3;a@b=\"x\ry\"\r\nabc\r\n0\r\n\r\n"),
    "chunk-ext-valid": (0x00, CH + b"3 ; a = b ;c=\"q \\\" s\xc3\xa9\"\r\nabc\r\n0;z\r\nx-t: 1\r\n\r\n"
                        + H("GET / HTTP/1.1\nHost: a\n\n")),
    "strict-chunk-split": (0x03, bytes([60, 128, 128]) + CH
                           + b"5;e=1\r\nhello\r\n3\r\nabc\r\n4\t\r\ndefg\r\n0\r\n\r\n"),
})
# Strict request heads (issue 24, items 4-6) and escaped-slash paths (item 2).
h1.update({
    "strict-chunked": (0x00, H("POST / HTTP/1.1\nHost: x\nTransfer-Encoding: identity, chunked\n\n3\nabcXX0\n\n"
                               "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n3 \nabc\n0\n\n")),
    "strict-host": (0x00, H("GET / HTTP/1.1\nHost: a\nHost: b\n\nGET http://u@good.example/ HTTP/1.1\nHost: evil\n\n"
                            "GET http://[::1]:80/x HTTP/1.1\nHost: \n\n")),
    "strict-target": (0x00, b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\nGET /caf\xc3\xa9#frag HTTP/1.1\r\nHost: x\r\n\r\n"),
    "escaped-slashes": (0x00, H("GET /a/..%2fadmin HTTP/1.1\nHost: x\n\nGET /%2Fadmin?q=%2F HTTP/1.1\nHost: x\n\n"
                                "GET /a%5c..%5Cb HTTP/1.1\nHost: x\n\n")),
})
for name, (ctl, data) in h1.items():
    w("http1", name, bytes([ctl]) + data)

# h2: ctl byte, then frames (the driver sends the preface).
def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, END_HEADERS, PADDED, PRIO, ACK = 0x1, 0x4, 0x8, 0x20, 0x1

def lit(name, value):           # literal without indexing, new name
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
def lit_idx(name, value):       # literal with incremental indexing, new name
    return b"\x40" + bytes([len(name)]) + name + bytes([len(value)]) + value
def req(path=b"/", authority=b"example.com", method=b"\x82", extra=b""):
    # :method GET (0x82) or POST (0x83), :scheme http, :path, :authority
    return method + b"\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01" + bytes([len(authority)]) + authority + extra
settings = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535) + struct.pack(">HI", 2, 0))

h2 = {
    "get": (0x00, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1, req())),
    "post-body-trailers": (0x00, settings + frame(HEADERS, END_HEADERS, 1, req(b"/missing", method=b"\x83",
                              extra=lit(b"content-length", b"10")))
                           + frame(DATA, 0, 1, b"hello") + frame(DATA, PADDED, 1, b"\x03world\x00\x00\x00")
                           + frame(HEADERS, END_STREAM | END_HEADERS, 1, lit(b"x-trailer", b"1"))),
    "continuation": (0x00, settings + frame(HEADERS, END_STREAM, 1, req(b"/exact")[:6])
                     + frame(CONT, 0, 1, req(b"/exact")[6:12]) + frame(CONT, END_HEADERS, 1, req(b"/exact")[12:])),
    "many-streams": (0x00, settings + b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1,
                                                     req(b"/re/ab/%d" % i, b"example.com")) for i in range(6))
                     + frame(PING, 0, 0, b"12345678") + frame(WINDOW, 0, 0, struct.pack(">I", 100000))),
    "hpack-dynamic": (0x00, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                             req(extra=lit_idx(b"x-exact", b"yes") + lit_idx(b"x-present", b"1")))
                      + frame(HEADERS, END_STREAM | END_HEADERS, 3, req(b"/hdr", method=b"\x83", extra=b"\xbf\xbe"))
                      + frame(SETTINGS, 0, 0, struct.pack(">HI", 1, 0))
                      + frame(HEADERS, END_STREAM | END_HEADERS, 5, b"\x3f\xe1\x1f" + req())),
    "priority-padded": (0x00, settings + frame(PRIORITY, 0, 3, struct.pack(">IB", 0x80000001, 200))
                        + frame(HEADERS, END_STREAM | END_HEADERS | PADDED | PRIO, 1,
                                b"\x02" + struct.pack(">IB", 3, 15) + req(b"/redirect") + b"\x00\x00")),
    "rst-and-goaway": (0x00, settings + frame(HEADERS, END_HEADERS, 1, req(b"/missing", method=b"\x83"))
                       + frame(RST, 0, 1, struct.pack(">I", 8)) + frame(HEADERS, END_HEADERS | END_STREAM, 3, req())
                       + frame(GOAWAY, 0, 0, struct.pack(">II", 3, 0) + b"bye")),
    "rapid-reset": (0x00, settings + b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, b"\x82\x86\x84\x01\x01a")
                                              + frame(RST, 0, 2 * i + 1, struct.pack(">I", 8)) for i in range(110))),
    "bad-requests": (0x00, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86" + b"\x01\x01a")
                     + frame(HEADERS, END_STREAM | END_HEADERS, 3, req(extra=lit(b"connection", b"close")))
                     + frame(HEADERS, END_STREAM | END_HEADERS, 5, b"\x82\x86\x84")
                     + frame(HEADERS, END_STREAM | END_HEADERS, 7, req(extra=lit(b"Upper", b"x")))),
    "authority-routes": (0x00, settings + b"".join(
        frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, req(p, a)) for i, (p, a) in enumerate([
            (b"/private", b"other"), (b"/off", b"other"), (b"/od/x", b"other"), (b"/missing", b"other"),
            (b"/redirect/https?a=b", b"other"), (b"/", b"api.x"), (b"/x", b"www.example.org")]))),
    "push-and-unknown": (0x00, settings + frame(PUSH, END_HEADERS, 1, struct.pack(">I", 2) + req())
                         + frame(0xfa, 0xff, 0, b"unknown")),
    "small-streams": (0x04, settings + b"".join(frame(HEADERS, END_HEADERS, 2 * i + 1, req(b"/d", method=b"\x83"))
                                                for i in range(5))
                      + frame(DATA, 0, 1, b"x" * 16384) + frame(DATA, 0, 1, b"y" * 16384)),
    "small-big-reply": (0x04, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1, req(b"/big"))),
    "small-headers": (0x04, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                             req(extra=b"".join(lit(b"x-h%d" % i, b"v" * 60) for i in range(12))))),
    "drain": (0x10 | 0x01, bytes([128]) + settings + frame(HEADERS, END_STREAM | END_HEADERS, 1, req())
              + frame(HEADERS, END_STREAM | END_HEADERS, 3, req())),
    "timeouts": (0x20 | 0x04, settings + frame(HEADERS, END_HEADERS, 1, req(b"/d", method=b"\x83"))),
    "flow-control": (0x04, frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 16)) + frame(HEADERS, END_STREAM | END_HEADERS, 1, req(b"/big"))
                     + frame(HEADERS, END_STREAM | END_HEADERS, 3, req(b"/exact"))
                     + frame(WINDOW, 0, 1, struct.pack(">I", 1000)) + frame(WINDOW, 0, 0, struct.pack(">I", 1000))
                     + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 70000))),
    "identity": (0x40, settings + frame(HEADERS, END_STREAM | END_HEADERS, 1, req(b"/private", b"other",
                                          extra=lit(b"x-forwarded-client-cert", b"By=x;URI=y")))),
    # A zero window on many streams (issue 24, item 1): nothing can be sent;
    # then windows open for some, and one is reset.
    "zero-window": (0x04, frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0))
                    + b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, req(b"/big")) for i in range(12))
                    + frame(WINDOW, 0, 3, struct.pack(">I", 5000)) + frame(WINDOW, 0, 0, struct.pack(">I", 5000))
                    + frame(RST, 0, 5, struct.pack(">I", 8)) + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1024))),
    "settings-ack-ping-ack": (0x08, settings + frame(SETTINGS, ACK, 0) + frame(PING, ACK, 0, b"abcdefgh")
                              + frame(WINDOW, 0, 1, struct.pack(">I", 1)) + frame(HEADERS, END_STREAM | END_HEADERS, 1, req())),
}
for name, (ctl, data) in h2.items():
    w("h2", name, bytes([ctl]) + data)
PY
fi

# ---- certificates: xfcc seeds and the PEM the xds seeds carry --------------
c=$tmp/certs
mkdir -p "$c"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "$c/ca.key"
openssl req -x509 -new -key "$c/ca.key" -out "$c/ca.pem" -days 36500 -subj "/CN=legate test client CA/O=legate test" 2>/dev/null
leaf() { # leaf NAME SUBJECT DAYS SAN-LINES...
  local n=$1 subj=$2 days=$3; shift 3
  key "$c/$n.key"
  openssl req -new -key "$c/$n.key" -out "$c/$n.csr" -subj "$subj" -utf8 2>/dev/null
  { echo "subjectAltName=@alt"; echo "[alt]"; printf '%s\n' "$@"; } > "$c/$n.ext"
  openssl x509 -req -in "$c/$n.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days "$days" -extfile "$c/$n.ext" -out "$c/$n.pem" 2>/dev/null
}
leaf client "/CN=client/O=legate test" 36500 "URI.1=spiffe://example.org/ns/default/sa/client" \
  "DNS.1=client.internal" "email.1=a@example.com"
leaf quotes '/CN=a "quoted", name;x=y/O=Acme\, Inc./OU=ops+CN=x' 36500 "URI.1=spiffe://a/b,c;d=e" \
  'URI.2=http://x/%22q%22' "DNS.1=*.example.com" "DNS.2=api.example.com" "email.1=q@example.com"
leaf utf8 "/CN=Ünïcødé 名前/O=legate test/emailAddress=x@y" 36500 "email.1=ops@example.org" \
  "DNS.1=xn--nxasmq6b.example" "URI.1=urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"
leaf many "/C=DE/ST=Berlin/L=Berlin/O=legate test/OU=a/OU=b/CN=many" 36500 "DNS.1=a.example.com" \
  "DNS.2=b.example.com" "DNS.3=C.EXAMPLE.com" "URI.1=spiffe://example.org/ns/x/sa/y" "email.1=b@example.net" \
  "IP.1=127.0.0.1" "IP.2=::1"
leaf expired "/CN=expired/O=legate test" -1 "DNS.1=expired.example.com"

if [ -z "$only" ]; then
  rm -f "$corpus"/xfcc/seed-*
  for n in client quotes utf8 many; do
    openssl x509 -in "$c/$n.pem" -outform DER -out "$corpus/xfcc/seed-$n.der"
  done
  cp "$c/quotes.pem" "$corpus/xfcc/seed-quotes.pem"
  cat "$c/client.pem" "$c/ca.pem" > "$corpus/xfcc/seed-chain.pem"
  echo "seeds written: $(ls "$corpus"/*/seed-* | wc -l) files"
  exit 0
fi

# ---- xDS responses (at run time, into OUT_DIR) ------------------------------------
[ "$only" = xds ] || { echo "usage: make-seeds.sh BUILD_DIR [xds OUT_DIR]" >&2; exit 2; }
out=${3:?usage: make-seeds.sh BUILD_DIR xds OUT_DIR}
mkdir -p "$out"
for y in "$here"/seeds/xds/*.yaml; do
  n=$(basename "$y" .yaml)
  # PEM as one line with "\n" escapes, for YAML double-quoted strings.
  python3 - "$y" "$tmp/$n.yaml" "$c" <<'PY'
import sys
src, dst, c = sys.argv[1:]
pem = lambda f: open(f"{c}/{f}").read().replace("\n", "\\n")
text = open(src).read()
for k, f in {"@CA@": "ca.pem", "@CERT@": "client.pem", "@KEY@": "client.key", "@EXPIRED_CERT@": "expired.pem"}.items():
    text = text.replace(k, pem(f))
open(dst, "w").write(text)
PY
  "$build/tests/fuzz/xds-seed" "$tmp/$n.yaml" "$out/seed-$n"
  # Each response on its own too: a smaller start for the fuzzer.
  awk -v out="$tmp/$n.part" 'BEGIN { k = 1 } /^---$/ { k++; next } { print > (out k) }' "$tmp/$n.yaml"
  for p in "$tmp/$n".part*; do
    k=${p##*.part}
    "$build/tests/fuzz/xds-seed" "$p" "$out/seed-$n-$k"
  done
done
