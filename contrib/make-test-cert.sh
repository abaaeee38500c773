#!/bin/sh
# Makes a throw-away CA and a server certificate it signed, to try qalqan's
# DoT, DoH and DoQ (README "Encrypted DNS"); the integration tests use it too.
# Not for production: use a certificate from your CA or ACME (Let's Encrypt).
#
#   contrib/make-test-cert.sh [DIR] [NAME] [DAYS]
#
# DIR (default config/tls) receives ca.pem (give it to clients: kdig
# +tls-ca=, curl --cacert), fullchain.pem and key.pem ([tls] cert and key;
# key.pem mode 0600). The certificate covers NAME (default dns.qalqan.test),
# 127.0.0.1 and ::1, and is valid for DAYS days (default 30).
set -eu
dir=${1:-config/tls}
name=${2:-dns.qalqan.test}
days=${3:-30}
mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/ca.key" -out "$dir/ca.pem" -days "$days" -subj "/CN=qalqan test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$tmp/key.pem" -out "$tmp/server.csr" -subj "/CN=$name" 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:127.0.0.1,IP:::1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$name" > "$tmp/server.ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$dir/ca.pem" -CAkey "$tmp/ca.key" -CAserial "$tmp/ca.srl" -CAcreateserial \
    -out "$tmp/cert.pem" -days "$days" -extfile "$tmp/server.ext" 2>/dev/null
# replace, never rewrite in place: a running qalqan reloads on the rename
mv "$tmp/key.pem" "$dir/key.pem.new" && mv "$dir/key.pem.new" "$dir/key.pem"
chmod 644 "$dir/ca.pem"
cp "$tmp/cert.pem" "$dir/fullchain.pem.new" && chmod 644 "$dir/fullchain.pem.new" && mv "$dir/fullchain.pem.new" "$dir/fullchain.pem"
echo "$dir/fullchain.pem and $dir/key.pem for $name (CA: $dir/ca.pem), valid $days days"
