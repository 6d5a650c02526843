#!/usr/bin/env bash
# The e2e suite against a real Kubernetes API server, in one command (CI runs it from .ci/run).
#
#   tests/e2e-realkube.sh            start etcd + kube-apiserver (+ kube-controller-manager when
#                                    there is one) on loopback with tests/realkube/start.sh, run
#                                    the e2e suite against it with the default test threads,
#                                    check that nothing is left behind, stop the server (also on
#                                    failure; a server that was already running is left running)
#   INVITE_OPERATOR_E2E_KUBECONFIG=~/.kube/config tests/e2e-realkube.sh
#                                    the same against any cluster: no server is started or stopped
#   E2E_RUNS=2 tests/e2e-realkube.sh run the suite (and the check) twice on the same server
#   E2E_TESTS="userinvite rbac" tests/e2e-realkube.sh
#                                    only these areas, modules of tests/e2e/ (default: all of the
#                                    `e2e` test binary but `crds` and `telemetry`, which need no
#                                    API server, and `leftovers`, the final check;
#                                    then tests/realkube/test_helm_lifecycle.py: helm upgrades
#                                    keep resources Ready, examples show no kubectl diff;
#                                    E2E_HELM=1 or 0 turns that on or off)
#   tests/e2e-realkube.sh -- --test-threads=1
#                                    arguments after the script go to `cargo test`
#
# Where the server comes from (the envtest convention of Kubernetes projects):
#   KUBEBUILDER_ASSETS               the folder with kube-apiserver and etcd (what
#                                    `setup-envtest use -p path` prints; default
#                                    /usr/local/kubebuilder/bin); a kube-controller-manager beside
#                                    them is started too. TEST_ASSET_KUBE_APISERVER,
#                                    TEST_ASSET_ETCD, TEST_ASSET_KUBE_CONTROLLER_MANAGER and
#                                    ETCD_BIN name single binaries; etcd is also looked up on the
#                                    PATH (Debian: apt-get install etcd-server).
#   REALKUBE                         instead, a folder with a realkube-style start.sh and stop.sh
#                                    (started with START_KCM=1)
# Without either, the script fails and says how to get them.
#
# Server variables pass through (set them to run beside another instance): REALKUBE_STATE,
# APISERVER_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, KCM_PORT, APISERVER_EXTRA_ARGS (default on
# 1.28 and 1.29: ValidatingAdmissionPolicy turned on, for the chart's statusWriterPolicy test). Without kube-controller-manager,
# deleted namespaces never go away: the check that nothing is left behind is then skipped (and
# says so).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# One test binary, `e2e` (tests/e2e/main.rs); areas are its modules, chosen by test-name filter.
# The old names of the test files (e2e_userinvite) still work.
filters=()
if [ -n "${E2E_TESTS:-}" ]; then
  read -r -a names <<< "$E2E_TESTS"
  for t in "${names[@]}"; do
    filters+=("${t#e2e_}::")
  done
else
  filters=(--skip crds:: --skip telemetry::)
fi
# The arguments after the script go to `cargo test`; the filters go to the test binary, after
# the `--` (added when the arguments have none).
has_separator=0
for a in "$@"; do
  [ "$a" = "--" ] && has_separator=1
done
[ "$has_separator" = 1 ] || set -- "$@" --

leftovers=1
if [ -z "${INVITE_OPERATOR_E2E_KUBECONFIG:-}" ]; then
  if [ -n "${REALKUBE:-}" ]; then
    start=$REALKUBE/start.sh
    stop=$REALKUBE/stop.sh
    export START_KCM=1   # realkube starts its controller manager only when asked
    [ -x "$start" ] && [ -x "$stop" ] || { echo "REALKUBE=$REALKUBE has no start.sh and stop.sh" >&2; exit 1; }
  else
    start=$PWD/tests/realkube/start.sh
    stop=$PWD/tests/realkube/stop.sh
    # Fail before compiling when there is no server to start (the message says how to get one).
    "$start" --check
    # ValidatingAdmissionPolicy (the chart's statusWriterPolicy, tests/e2e/rbac.rs) is served from
    # Kubernetes 1.30; 1.28 and 1.29 serve it as v1beta1 only when turned on.
    apiserver=${TEST_ASSET_KUBE_APISERVER:-${KUBEBUILDER_ASSETS:-/usr/local/kubebuilder/bin}/kube-apiserver}
    if [ -z "${APISERVER_EXTRA_ARGS+set}" ] && "$apiserver" --version 2>/dev/null | grep -qE 'v1\.(28|29)\.'; then
      export APISERVER_EXTRA_ARGS="--feature-gates=ValidatingAdmissionPolicy=true --runtime-config=admissionregistration.k8s.io/v1beta1=true"
    fi
  fi
fi

log "building the e2e tests"
cargo test --locked --no-run --test e2e
# The charts' lifecycle test (Python, Helm from helm-python-sdk) runs with the whole suite only.
helm_lifecycle=${E2E_HELM:-$([ -z "${E2E_TESTS:-}" ] && echo 1 || echo 0)}
if [ "$helm_lifecycle" = 1 ]; then
  command -v kubectl >/dev/null || { echo "the charts' lifecycle test needs kubectl on the PATH (or E2E_HELM=0)" >&2; exit 1; }
  cargo build --locked --bin invite-operator
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/invite-operator
  python3 -m pip install -q -r tests/chart/requirements.txt
fi

if [ -z "${INVITE_OPERATOR_E2E_KUBECONFIG:-}" ]; then
  # A server that was already running (same REALKUBE_STATE) is used and left running.
  state=${REALKUBE_STATE:-${TMPDIR:-/tmp}/realkube-$(id -u)}
  pid=$(cat "$state/run/kube-apiserver.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "using the running server of $state"
  else
    log "starting $start"
    trap '"$stop"' EXIT
    trap 'exit 130' INT TERM
  fi
  INVITE_OPERATOR_E2E_KUBECONFIG=$("$start")
  export INVITE_OPERATOR_E2E_KUBECONFIG
  pid=$(cat "$state/run/kube-controller-manager.pid" 2>/dev/null || true)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    leftovers=0
  fi
fi

status=0
for run in $(seq 1 "${E2E_RUNS:-1}"); do
  log "e2e suite against the cluster of $INVITE_OPERATOR_E2E_KUBECONFIG (run $run of ${E2E_RUNS:-1})"
  started=$SECONDS
  cargo test --locked --no-fail-fast --test e2e "$@" "${filters[@]}" || status=1
  echo "e2e suite run $run: $((SECONDS - started))s"
  if [ "$helm_lifecycle" = 1 ]; then
    log "the charts' lifecycle: helm upgrade keeps every resource Ready, examples show no diff (run $run)"
    INVITE_OPERATOR_BIN=$bin PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider \
      tests/realkube/test_helm_lifecycle.py || status=1
  fi
  if [ "$leftovers" = 1 ]; then
    log "nothing left behind (run $run)"
    cargo test --locked --test e2e -- --ignored --exact leftovers::nothing_the_suite_created_is_left || status=1
  else
    log "SKIPPED: the check that nothing is left behind (no kube-controller-manager, so deleted namespaces stay Terminating)"
  fi
done
exit $status
