#!/bin/bash
# Self-signed PKI for the loopback-only test apiserver. Idempotent: only creates missing files.
#
#   tests/realkube/gen-pki.sh DIR
#
# Copied from the project's realkube scripts (Apache License 2.0, see LICENSE beside this file);
# changed: DIR is required (the PKI is never written into the repository).
set -euo pipefail
[ -n "${1:-}" ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"; cd "$1"
umask 077
[ -f ca.key ] || openssl genrsa -out ca.key 2048 2>/dev/null
[ -f ca.crt ] || openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=realkube-ca" -out ca.crt
# apiserver serving cert (loopback + in-cluster names)
if [ ! -f apiserver.crt ]; then
  openssl genrsa -out apiserver.key 2048 2>/dev/null
  cat > apiserver.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
  openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
fi
# admin client cert: user "admin", group system:masters
if [ ! -f admin.crt ]; then
  openssl genrsa -out admin.key 2048 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
  openssl req -new -key admin.key -subj "/O=system:masters/CN=admin" -out admin.csr
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 -extfile client.ext -out admin.crt 2>/dev/null
fi
# front-proxy (aggregation layer / requestheader auth) CA + client cert
[ -f front-proxy-ca.key ] || openssl genrsa -out front-proxy-ca.key 2048 2>/dev/null
[ -f front-proxy-ca.crt ] || openssl req -x509 -new -key front-proxy-ca.key -sha256 -days 3650 -subj "/CN=realkube-front-proxy-ca" -out front-proxy-ca.crt
if [ ! -f front-proxy-client.crt ]; then
  openssl genrsa -out front-proxy-client.key 2048 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
  openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out front-proxy-client.csr
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial -sha256 -days 3650 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
fi
# service-account signing keypair
[ -f sa.key ] || openssl genrsa -out sa.key 2048 2>/dev/null
[ -f sa.pub ] || openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
# static token file: token,user,uid,"groups"
[ -f tokens.csv ] || printf '%s,admin,admin-uid,"system:masters"\n' "$(openssl rand -hex 16)" > tokens.csv
chmod 600 *.key tokens.csv
