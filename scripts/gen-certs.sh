#!/usr/bin/env bash
# Makes a throwaway PKI for the examples, the demo and the tests, with the
# openssl CLI (ECDSA P-256, valid 30 days). Usage: scripts/gen-certs.sh DIR
#
#   ca.pem                 CA of legate's server certificates
#   server.pem/.key        localhost, legate.test, 127.0.0.1
#   shop.pem/.key          shop.example.com, *.shop.example.com
#   api.pem/.key           api.example.com
#   client-ca.pem          CA that legate trusts for client certificates
#   client.pem/.key        spiffe://example.org/ns/default/sa/client
#   partner-ca.pem         a second client CA (the SNI example)
#   upstream-ca.pem        CA of the upstream's server certificate
#   upstream-server.pem    backend.internal, localhost, 127.0.0.1
#   cluster-ca.pem         CA the upstream trusts for legate's client certificates
#   upstream-client.pem    CN=legate-cluster-backend (a cluster's own certificate)
#   default-client.pem     CN=legate-default-client (the data-plane-wide default)
# Keys are written 0600. Nothing here is fit for production.
set -euo pipefail
dir=${1:?usage: gen-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

ca() { # ca NAME CN
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.pem" -days 30 -subj "/O=legate test/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # leaf NAME CA CN SAN EKU
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/O=legate test/CN=$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$5" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "legate test server CA"
ca client-ca "legate test client CA"
ca partner-ca "legate test partner CA"
ca upstream-ca "legate test upstream CA"
ca cluster-ca "legate test cluster client CA"
leaf server ca localhost "DNS:localhost,DNS:legate.test,IP:127.0.0.1" serverAuth
leaf shop ca shop.example.com "DNS:shop.example.com,DNS:*.shop.example.com" serverAuth
leaf api ca api.example.com "DNS:api.example.com" serverAuth
leaf client client-ca client \
  "URI:spiffe://example.org/ns/default/sa/client,DNS:client.example.org,email:client@example.org" clientAuth
leaf upstream-server upstream-ca backend.internal "DNS:backend.internal,DNS:localhost,IP:127.0.0.1" serverAuth
leaf upstream-client cluster-ca legate-cluster-backend "DNS:legate.test" clientAuth
leaf default-client cluster-ca legate-default-client "DNS:legate.test" clientAuth
chmod 644 ./*.pem
