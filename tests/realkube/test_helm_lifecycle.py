"""The charts' lifecycle on a real API server, as a platform team runs it.

- `helm upgrade` of both charts (operator and endpoint) while UserInvitations are Ready: the
  endpoint is updated in place (same uid, never missing), and no UserInvitation leaves Ready,
  watched every 100 ms during the upgrades and for a while after them.
- Every example, applied with `kubectl apply`, shows no difference with `kubectl diff`
  (client-side diff against the live object): no CRD default adds a field the manifest did
  not write.

Run by tests/e2e-realkube.sh after the Rust e2e suite, against the same server
(INVITE_OPERATOR_E2E_KUBECONFIG), with the operator binary of the build
(INVITE_OPERATOR_BIN). Helm is helm-python-sdk's (tests/chart/requirements.txt). The cluster has
no nodes: the chart's Deployment never starts a pod, so the operator runs beside the cluster as
a local process, with the chart's release namespace as its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "deploy" / "charts"
KUBECONFIG = os.environ.get("INVITE_OPERATOR_E2E_KUBECONFIG")
BINARY = os.environ.get("INVITE_OPERATOR_BIN")
TOKEN = "upgrade-test-token"
SUITE_LABEL = "invite-e2e"

pytestmark = pytest.mark.skipif(
    not KUBECONFIG or not BINARY,
    reason="needs a real API server (INVITE_OPERATOR_E2E_KUBECONFIG) and the operator binary "
    "(INVITE_OPERATOR_BIN): run tests/e2e-realkube.sh",
)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def apply(objects: list[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def helm_config(namespace: str) -> Any:
    import helm_python as helm

    return helm.Config(namespace=namespace, kubeconfig_path=KUBECONFIG)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"invite-helm-{uuid.uuid4().hex[:8]}"
    apply([{"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {SUITE_LABEL: "true"}}}])
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def ready(invitation: dict[str, Any]) -> str:
    for condition in (invitation.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return f'{condition["status"]}/{condition.get("reason")}'
    return "none"


class Watcher(threading.Thread):
    """Reads the UserInvitations and the endpoint every 100 ms and keeps whatever is not as it
    should be: an invitation not Ready=True, a missing endpoint, an endpoint with another uid."""

    def __init__(self, namespace: str, endpoint: str, uid: str) -> None:
        super().__init__(daemon=True)
        self.namespace, self.endpoint, self.uid = namespace, endpoint, uid
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            items = get_json("userinvitations", "-n", self.namespace)["items"]
            for item in items:
                state = ready(item)
                if not state.startswith("True/"):
                    self.problems.append(f'{item["metadata"]["name"]}: Ready {state}')
            endpoint = kubectl("get", "clusterinvitationendpoint", self.endpoint, "-o", "json",
                               check=False)
            if endpoint.returncode != 0:
                self.problems.append(f"endpoint missing: {endpoint.stderr.strip()}")
            elif json.loads(endpoint.stdout)["metadata"]["uid"] != self.uid:
                self.problems.append("endpoint recreated (another uid)")
            self.reads += 1
            time.sleep(0.1)


def adopt_existing_crds(release: str, namespace: str) -> None:
    """CRDs installed before (by the Rust suite, or an earlier release) become this release's,
    the way Helm documents adopting existing objects."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        name = path.stem  # every CRD the chart ships, e.g. userinvitations.invite.operators.dev
        if kubectl("get", "crd", name, check=False).returncode != 0:
            continue
        kubectl("label", "crd", name, "--overwrite", "app.kubernetes.io/managed-by=Helm")
        kubectl("annotate", "crd", name, "--overwrite",
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={namespace}")


def test_helm_upgrades_keep_every_invitation_ready(namespace: str) -> None:
    operator_release, endpoint_release = "invite-operator", "invite-endpoint"
    endpoint = f"{namespace}-default"
    port = free_port()
    mock = subprocess.Popen(
        [str(BINARY), "mock-api", "--listen", f"127.0.0.1:{port}", "--token", TOKEN],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    operator = None
    config = helm_config(namespace)
    try:
        adopt_existing_crds(operator_release, namespace)
        operator_values: dict[str, Any] = {"watchNamespaces": [namespace], "logLevel": "info"}
        config.install(str(CHARTS / "invite-operator"), operator_release, operator_values)
        apply([{"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "invite-api-token", "namespace": namespace},
                "stringData": {"token": TOKEN}}])
        endpoint_values: dict[str, Any] = {
            "name": endpoint, "api": "UserInvite", "url": f"http://127.0.0.1:{port}",
            "keep": False,
        }
        config.install(str(CHARTS / "invite-operator-endpoint"), endpoint_release, endpoint_values)

        operator = subprocess.Popen(
            [str(BINARY), "run", "--kubeconfig", str(KUBECONFIG), "--namespace", namespace,
             "--watch-namespaces", namespace, "--metrics-addr", f"127.0.0.1:{free_port()}",
             "--resync-interval", "2s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        names = [f"team-{i}" for i in range(3)]
        apply([{"apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"endpointRef": {"kind": "ClusterInvitationEndpoint", "name": endpoint},
                         "users": [{"emailAddress": f"{name}@example.com"}]}}
               for name in names])
        kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s",
                *[f"userinvitation/{n}" for n in names])
        uid = get_json("clusterinvitationendpoint", endpoint)["metadata"]["uid"]

        watcher = Watcher(namespace, endpoint, uid)
        watcher.start()
        try:
            for round_ in (1, 2):
                operator_values["logLevel"] = "debug" if round_ == 1 else "info"
                config.upgrade(str(CHARTS / "invite-operator"), operator_release, operator_values)
                endpoint_values["labels"] = {"upgrade-round": str(round_)}
                config.upgrade(str(CHARTS / "invite-operator-endpoint"), endpoint_release,
                               endpoint_values)
                # The upgrade reached the cluster: the endpoint carries the new label.
                wait_until(
                    f"round {round_} on the endpoint",
                    lambda: get_json("clusterinvitationendpoint", endpoint)["metadata"]
                    .get("labels", {}).get("upgrade-round") == str(round_),
                )
            # Past a resync of every resource after the upgrades.
            time.sleep(4)
        finally:
            watcher.stop.set()
            watcher.join()
        assert watcher.reads >= 10, f"only {watcher.reads} reads"
        assert watcher.problems == [], watcher.problems[:20]
        history = [r["revision"] for r in config.history(endpoint_release)]
        assert len(history) == 3, f"endpoint release history: {history}"
        # The endpoint is a release resource, tracked like any other.
        annotations = get_json("clusterinvitationendpoint", endpoint)["metadata"]["annotations"]
        assert annotations.get("meta.helm.sh/release-name") == endpoint_release, annotations
        events = get_json("events", "-n", namespace)["items"]
        bad = [e["reason"] for e in events
               if e.get("reason") in ("EndpointNotFound", "EndpointChanged")]
        assert bad == [], bad
        kubectl("delete", "-n", namespace, "userinvitations", "--all", "--timeout=60s")
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        mock.terminate()
        mock.wait(timeout=30)
        for release in (endpoint_release, operator_release):
            try:
                config.uninstall(release)
            except Exception as error:  # noqa: BLE001 - cleanup goes on; the test already failed
                print(f"uninstall {release}: {error}")
        kubectl("delete", "clusterinvitationendpoint", endpoint, "--ignore-not-found")
        config.close()


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_applied_examples_show_no_diff(namespace: str) -> None:
    """`kubectl diff` after `kubectl apply` of each example finds nothing: what is stored is
    what the manifest says, so a GitOps tool's client-side diff stays clean."""
    documents: list[dict[str, Any]] = []
    import yaml

    for path in EXAMPLES:
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    # The namespaces the examples use but do not define, created first where missing, and
    # those they define, all removed after.
    defined = {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"}
    used = {d["metadata"]["namespace"] for d in documents if d["metadata"].get("namespace")}
    missing = [ns for ns in sorted(used | defined)
               if kubectl("get", "namespace", ns, check=False).returncode != 0]
    created = [ns for ns in missing if ns not in defined]
    apply([{"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {SUITE_LABEL: "true"}}} for ns in created])
    try:
        for path in EXAMPLES:
            kubectl("apply", "-f", str(path))
        for path in EXAMPLES:
            diff = kubectl("diff", "-f", str(path), check=False)
            assert diff.returncode == 0, f"{path.name} differs after apply:\n{diff.stdout}{diff.stderr}"
        # The check is real: a manifest that leaves out what is stored shows a difference.
        changed = kubectl("diff", "-f", "-", check=False,
                          stdin=(REPO / "examples" / "userinvite.yaml").read_text()
                          .replace("carol@example.com", "dave@example.com"))
        assert changed.returncode == 1, changed.stdout + changed.stderr
    finally:
        for path in reversed(EXAMPLES):
            kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=false", check=False)
        for ns in missing:
            kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
