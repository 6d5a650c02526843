#!/bin/bash
# Start a real, loopback-only Kubernetes control plane for the e2e suite: etcd + kube-apiserver
# (+ kube-controller-manager when there is one: it deletes namespaces and collects garbage).
# Idempotent: a component whose saved PID is alive is left alone. Prints the kubeconfig path on
# stdout when ready.
#
#   tests/realkube/start.sh            # state in $REALKUBE_STATE (default: a folder under $TMPDIR)
#   tests/realkube/start.sh --check    # only say which binaries it would use (exit 1: none)
#   tests/realkube/stop.sh [--wipe]
#
# The binaries are found the way envtest (controller-runtime) finds them:
#   KUBEBUILDER_ASSETS                 the folder `setup-envtest use -p path` prints, holding
#                                      kube-apiserver and etcd (default /usr/local/kubebuilder/bin);
#                                      a kube-controller-manager put beside them is used too
#   TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD, TEST_ASSET_KUBE_CONTROLLER_MANAGER
#                                      one binary each, instead of the folder's
# etcd may also come from ETCD_BIN or the PATH (Debian: apt-get install etcd-server).
#
# Env: REALKUBE_STATE, ETCD_CLIENT_PORT (2379), ETCD_PEER_PORT (2380), APISERVER_PORT (6443),
#      KCM_PORT (10257), READY_TIMEOUT (120 s), APISERVER_EXTRA_ARGS,
#      START_KCM (auto: when the binary exists; 1: required; 0: never).
# Needs openssl and curl.
#
# Adapted from the project's realkube scripts (Apache License 2.0, see LICENSE beside this file).
# Changed: the binaries are found as described above instead of in a fixed folder; the
# controller manager starts when present; processes are recognised by their state folder.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
RK=${REALKUBE_STATE:-${TMPDIR:-/tmp}/realkube-$(id -u)}
ASSETS=${KUBEBUILDER_ASSETS:-/usr/local/kubebuilder/bin}
APISERVER_BIN=${TEST_ASSET_KUBE_APISERVER:-$ASSETS/kube-apiserver}
KCM_BIN=${TEST_ASSET_KUBE_CONTROLLER_MANAGER:-$ASSETS/kube-controller-manager}
ETCD_BIN=${TEST_ASSET_ETCD:-${ETCD_BIN:-}}
if [ -z "$ETCD_BIN" ]; then
  if [ -x "$ASSETS/etcd" ]; then ETCD_BIN=$ASSETS/etcd
  else ETCD_BIN=$(command -v etcd || echo /usr/bin/etcd)
  fi
fi
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
APISERVER_PORT=${APISERVER_PORT:-6443}
KCM_PORT=${KCM_PORT:-10257}
READY_TIMEOUT=${READY_TIMEOUT:-120}
START_KCM=${START_KCM:-auto}
PKI=$RK/pki
RUN=$RK/run
LOGS=$RK/logs
KUBECONFIG_OUT=$RK/kubeconfig

log() { echo "[start.sh] $*" >&2; }

how_to_get_them() {
  cat >&2 <<HELP
[start.sh] The real-API-server suite needs kube-apiserver and etcd. Get them either way:
  - setup-envtest (what Kubernetes projects use; needs Go):
      go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest
      export KUBEBUILDER_ASSETS=\$(setup-envtest use -p path 1.28.x)
    (envtest has no kube-controller-manager: put one of the same version in that folder, or
    set TEST_ASSET_KUBE_CONTROLLER_MANAGER, so that deleted namespaces really go away)
  - or by hand: Debian's etcd (apt-get update && apt-get install -y etcd-server) and the
    kube-apiserver and kube-controller-manager binaries of a Kubernetes release
    (https://dl.k8s.io/v1.28.7/bin/linux/amd64/kube-apiserver, ...) in one folder, named by
    KUBEBUILDER_ASSETS (or TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD).
  Or run against a cluster you have: INVITE_OPERATOR_E2E_KUBECONFIG=path/to/kubeconfig.
HELP
}

missing=0
[ -x "$APISERVER_BIN" ] || { log "no kube-apiserver at $APISERVER_BIN"; missing=1; }
[ -x "$ETCD_BIN" ] || { log "no etcd at $ETCD_BIN"; missing=1; }
if [ "$START_KCM" = 1 ] && [ ! -x "$KCM_BIN" ]; then
  log "START_KCM=1 but no kube-controller-manager at $KCM_BIN"; missing=1
fi
if [ "$missing" = 1 ]; then how_to_get_them; exit 1; fi
with_kcm=0
if [ "$START_KCM" != 0 ] && [ -x "$KCM_BIN" ]; then with_kcm=1; fi

if [ "${1:-}" = --check ]; then
  log "kube-apiserver: $APISERVER_BIN ($("$APISERVER_BIN" --version 2>/dev/null || echo '?'))"
  log "etcd: $ETCD_BIN"
  if [ "$with_kcm" = 1 ]; then log "kube-controller-manager: $KCM_BIN"
  else log "kube-controller-manager: none (deleted namespaces stay Terminating)"
  fi
  exit 0
fi

mkdir -p "$RUN" "$LOGS" "$RK/etcd-data"
chmod 700 "$RK/etcd-data"

# What identifies each process of this state folder in its command line (stop.sh uses the same).
ETCD_MATCH=$RK/etcd-data
APISERVER_MATCH=--cert-dir=$RUN/apiserver-certs
KCM_MATCH=--cert-dir=$RUN/kcm-certs

# alive NAME PATTERN: true if run/NAME.pid names a live process whose cmdline contains PATTERN
alive() {
  local pidf="$RUN/$1.pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$2"
}

# launch NAME CMD...: start CMD detached (own session), log to logs/NAME.log, save PID to run/NAME.pid
launch() {
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  log "started $name (pid $(cat "$RUN/$name.pid")), log: $LOGS/$name.log"
}

# wait_for NAME PIDNAME PATTERN CMD...: poll CMD until it succeeds, the process dies, or the timeout passes
wait_for() {
  local name=$1 pidname=$2 pattern=$3; shift 3
  local deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pidname" "$pattern"; then
      log "$name exited during start-up; last log lines:"; tail -n 30 "$LOGS/$pidname.log" >&2; return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name not ready after ${READY_TIMEOUT}s; last log lines:"; tail -n 30 "$LOGS/$pidname.log" >&2; return 1
    fi
    sleep 0.3
  done
}

"$HERE/gen-pki.sh" "$PKI"

T0=$(date +%s.%N)

# ---- etcd, loopback only ----
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
if alive etcd "$ETCD_MATCH"; then
  log "etcd already running (pid $(cat "$RUN/etcd.pid"))"
else
  launch etcd "$ETCD_BIN" --name realkube --data-dir "$RK/etcd-data" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "realkube=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --initial-cluster-token realkube \
    --auto-compaction-retention 1 --quota-backend-bytes 2147483648 \
    --logger zap --log-outputs stderr --log-level warn
fi
etcd_healthy() { curl -fsS --max-time 2 "$ETCD_URL/health" | grep -q '"health":"true"'; }
wait_for etcd etcd "$ETCD_MATCH" etcd_healthy

# ---- kube-apiserver, loopback only ----
API_URL=https://127.0.0.1:$APISERVER_PORT
if alive kube-apiserver "$APISERVER_MATCH"; then
  log "kube-apiserver already running (pid $(cat "$RUN/kube-apiserver.pid"))"
else
  # shellcheck disable=SC2086
  launch kube-apiserver "$APISERVER_BIN" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="$ETCD_URL" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=RBAC \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --cert-dir="$RUN/apiserver-certs" \
    --v=1 ${APISERVER_EXTRA_ARGS:-}
fi
api_ready() {
  [ "$(curl -sS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL/readyz")" = ok ]
}
wait_for kube-apiserver kube-apiserver "$APISERVER_MATCH" api_ready

# ---- kubeconfig for user "admin" (group system:masters), client-cert auth ----
umask 077
cat > "$KUBECONFIG_OUT.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: realkube
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/admin.crt")
    client-key-data: $(base64 -w0 < "$PKI/admin.key")
- name: admin-token
  user:
    token: $(cut -d, -f1 "$PKI/tokens.csv" | head -n1)
contexts:
- name: realkube
  context: {cluster: realkube, user: admin, namespace: default}
- name: realkube-token
  context: {cluster: realkube, user: admin-token, namespace: default}
current-context: realkube
KUBECONFIG
mv "$KUBECONFIG_OUT.tmp" "$KUBECONFIG_OUT"

# ---- kube-controller-manager (namespace deletion, garbage collection, SA tokens, ...) ----
if [ "$with_kcm" = 1 ]; then
  if alive kube-controller-manager "$KCM_MATCH"; then
    log "kube-controller-manager already running (pid $(cat "$RUN/kube-controller-manager.pid"))"
  else
    launch kube-controller-manager "$KCM_BIN" \
      --kubeconfig="$KUBECONFIG_OUT" --authentication-kubeconfig="$KUBECONFIG_OUT" --authorization-kubeconfig="$KUBECONFIG_OUT" \
      --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
      --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
      --use-service-account-credentials=true \
      --controllers='*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-ttl' \
      --cert-dir="$RUN/kcm-certs" --v=1
  fi
  kcm_healthy() { [ "$(curl -sk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz")" = ok ]; }
  wait_for kube-controller-manager kube-controller-manager "$KCM_MATCH" kcm_healthy
else
  log "no kube-controller-manager: deleted namespaces stay Terminating"
fi

T1=$(date +%s.%N)
log "control plane ready in $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b-a}')s at $API_URL"
echo "$KUBECONFIG_OUT"
