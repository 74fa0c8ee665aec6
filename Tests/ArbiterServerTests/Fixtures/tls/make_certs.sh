#!/usr/bin/env bash
# Test-only certificates for the TLS tests (TLSTests.swift): never use these keys for anything else.
#   ca.pem / ca.key            the test CA
#   server.pem / server.key    arbiterd's certificate, for localhost and 127.0.0.1, signed by the CA
#   client.pem / client.key    a client certificate signed by the CA (mutual TLS)
#   stranger.pem / stranger.key  a client certificate signed by another CA (other-ca.pem): mTLS refuses it
# EC P-256 keys, valid for 100 years. Made with OpenSSL 3.0 (Debian 12): bash make_certs.sh
set -euo pipefail
cd "$(dirname "$0")"
days=36500
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -days $days -subj "/CN=Arbiter test CA" -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
key other-ca.key
openssl req -x509 -new -key other-ca.key -days $days -subj "/CN=Some other CA" -out other-ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() {  # name CN signer extension
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days $days -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf server "arbiterd test server" ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client "pricing-svc" ca "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
leaf stranger "stranger" other-ca "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ./*.srl other-ca.key
