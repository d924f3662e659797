# make_bad_clients DIR: client certificates that must be refused, next to
# what scripts/gen-certs.sh made in DIR (it needs client-ca.pem/.key):
#   other-client.pem/.key  signed by an unrelated CA (other-ca.pem)
#   expired.pem/.key       client-ca, valid 2020-01-01 .. 2020-02-01
#   notyet.pem/.key        client-ca, valid from 2099
#   revoked.pem/.key       client-ca, revoked in crl.pem
#   badsan.pem/.key        client-ca, SAN spiffe://evil.org/...
#   client2.pem/.key       client-ca, spiffe://example.org/ns/default/sa/other
#   crl.pem                client-ca's CRL (revoked.pem in it)
make_bad_clients() {
  local d=$1 db
  db=$(mktemp -d "$d/.ca.XXXXXX")
  touch "$db/index.txt"
  echo 1000 > "$db/serial"
  echo 1000 > "$db/crlnumber"
  cat > "$db/ca.cnf" <<CNF
[ ca ]
default_ca = c
[ c ]
database = $db/index.txt
serial = $db/serial
crlnumber = $db/crlnumber
new_certs_dir = $db
certificate = $d/client-ca.pem
private_key = $d/client-ca.key
default_md = sha256
default_crl_days = 30
policy = p
unique_subject = no
copy_extensions = copy
[ p ]
commonName = supplied
organizationName = optional
CNF
  req() { # req NAME SAN
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/$1.key" -out "$db/$1.csr" \
      -subj "/O=legate test/CN=$1" -addext "subjectAltName=$2" -addext "extendedKeyUsage=clientAuth" \
      -addext "basicConstraints=CA:FALSE" 2>/dev/null
  }
  sign() { # sign NAME START END
    openssl ca -batch -config "$db/ca.cnf" -in "$db/$1.csr" -out "$d/$1.pem" -notext \
      -startdate "$2" -enddate "$3" >/dev/null 2>&1
  }
  local now_s now_e
  now_s=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
  now_e=$(date -u -d '+30 days' +%Y%m%d%H%M%SZ)
  req expired "URI:spiffe://example.org/ns/default/sa/expired"
  sign expired 20200101000000Z 20200201000000Z
  req notyet "URI:spiffe://example.org/ns/default/sa/notyet"
  sign notyet 20990101000000Z 20990201000000Z
  req revoked "URI:spiffe://example.org/ns/default/sa/revoked"
  sign revoked "$now_s" "$now_e"
  req badsan "URI:spiffe://evil.org/ns/x/sa/y"
  sign badsan "$now_s" "$now_e"
  req client2 "URI:spiffe://example.org/ns/default/sa/other"
  sign client2 "$now_s" "$now_e"
  openssl ca -batch -config "$db/ca.cnf" -revoke "$d/revoked.pem" >/dev/null 2>&1
  openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$d/crl.pem" >/dev/null 2>&1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/other-ca.key" \
    -out "$d/other-ca.pem" -days 30 -subj "/CN=some other CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/other-client.key" \
    -out "$db/other.csr" -subj "/CN=other-client" 2>/dev/null
  printf 'subjectAltName=URI:spiffe://example.org/ns/default/sa/client\nextendedKeyUsage=clientAuth\n' > "$db/other.ext"
  openssl x509 -req -in "$db/other.csr" -CA "$d/other-ca.pem" -CAkey "$d/other-ca.key" -set_serial 7 \
    -days 30 -extfile "$db/other.ext" -out "$d/other-client.pem" 2>/dev/null
  rm -rf "$db"
  for f in expired notyet revoked badsan client2 other-client; do
    [ -s "$d/$f.pem" ] || { echo "make_bad_clients: $f.pem was not made" >&2; return 1; }
  done
  [ -s "$d/crl.pem" ] || { echo "make_bad_clients: no crl.pem" >&2; return 1; }
}
