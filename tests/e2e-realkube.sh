#!/usr/bin/env bash
# The e2e suite against a real Kubernetes API server, in one command (CI runs it from .ci/run).
#
#   tests/e2e-realkube.sh            start ../shared/realkube (etcd + kube-apiserver +
#                                    kube-controller-manager 1.28, loopback only), run the e2e
#                                    suite against it with the default test threads, check that
#                                    nothing is left behind, stop the server (also on failure;
#                                    a server that was already running is left running)
#   INVITE_OPERATOR_E2E_KUBECONFIG=~/.kube/config tests/e2e-realkube.sh
#                                    the same against any cluster: no server is started or stopped
#   E2E_RUNS=2 tests/e2e-realkube.sh run the suite (and the check) twice on the same server
#   tests/e2e-realkube.sh -- --test-threads=1
#                                    arguments after the script go to `cargo test`
#
# Needs etcd for realkube (Debian: apt-get update && apt-get install -y etcd-server). realkube's
# own variables pass through (REALKUBE_STATE, APISERVER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
# KCM_PORT: set them to run beside another instance); REALKUBE is its directory.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

suite=(--test 'e2e_*' --test admission --test rbac)

log "building the e2e tests"
cargo test --locked --no-run "${suite[@]}" --test leftovers

if [ -z "${INVITE_OPERATOR_E2E_KUBECONFIG:-}" ]; then
  REALKUBE=${REALKUBE:-$(cd .. && pwd)/shared/realkube}
  # A server that was already running (same REALKUBE_STATE) is used and left running.
  state=${REALKUBE_STATE:-${TMPDIR:-/tmp}/realkube-$(id -u)}
  pid=$(cat "$state/run/kube-apiserver.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "using the running server of $state"
  else
    log "starting $REALKUBE (with kube-controller-manager)"
    trap '"$REALKUBE/stop.sh"' EXIT
    trap 'exit 130' INT TERM
  fi
  INVITE_OPERATOR_E2E_KUBECONFIG=$(START_KCM=1 "$REALKUBE/start.sh")
  export INVITE_OPERATOR_E2E_KUBECONFIG
fi

status=0
for run in $(seq 1 "${E2E_RUNS:-1}"); do
  log "e2e suite against the cluster of $INVITE_OPERATOR_E2E_KUBECONFIG (run $run of ${E2E_RUNS:-1})"
  started=$SECONDS
  cargo test --locked --no-fail-fast "${suite[@]}" "$@" || status=1
  echo "e2e suite run $run: $((SECONDS - started))s"
  log "nothing left behind (run $run)"
  cargo test --locked --test leftovers -- --ignored || status=1
done
exit $status
