"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 interpreter (Argo CD
runs gopher-lua, a Lua 5.1) on the statuses the controller writes.

The fixtures in tests/health/fixtures/ are statuses written by the controller in an e2e run of
every state (tests/e2e/health.rs writes and checks them); the stale-generation cases are those
fixtures with metadata.generation moved past what the status describes, as after an edit the
operator has not seen yet.

Run:  apt-get install lua5.1 && python3 -m pip install -r tests/chart/requirements.txt &&
      python3 -m pytest -q tests/health
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "argocd" / "health.lua"
ARGOCD_CM = REPO / "deploy" / "argocd" / "argocd-cm.yaml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LUA = shutil.which("lua5.1") or shutil.which("lua5.1.exe")

# What Argo CD must show for each state the controller writes.
EXPECTED = {
    "userinvitation-all-invited": "Healthy",
    "userinvitation-inviting": "Progressing",
    "userinvitation-pending": "Progressing",
    "userinvitation-endpoint-not-found": "Progressing",
    "userinvitation-waiting-for-secret": "Progressing",
    "userinvitation-partially-failed": "Degraded",
    "userinvitation-failed": "Degraded",
    "userinvitation-invalid-spec": "Degraded",
    "userinvitation-endpoint-mismatch": "Degraded",
    "userinvitation-endpoint-not-ready": "Degraded",
    "userinvitation-not-allowed": "Degraded",
    "userinvitation-paused": "Suspended",
    "invitationendpoint-wavefront": "Healthy",
    "invitationendpoint-no-secret": "Progressing",
    "invitationendpoint-unreachable": "Progressing",
    "invitationendpoint-not-labelled": "Degraded",
    "invitationendpoint-plain-http": "Degraded",
    "invitationendpoint-rejected-org": "Degraded",
    "clusterinvitationendpoint-ready": "Healthy",
    "clusterinvitationendpoint-no-secret": "Progressing",
}

KINDS = ["UserInvitation", "InvitationEndpoint", "ClusterInvitationEndpoint"]


def fixtures() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}


def lua_value(value: Any) -> str:
    """`value` as a Lua 5.1 expression, as Argo CD hands JSON to the script (null is nil)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            c if c.isprintable() and c not in '"\\' else f"\\{ord(c):03d}" if ord(c) < 256 else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_value(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_value(k)}] = {lua_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """Runs the health script on `obj` with lua5.1; returns (status, message)."""
    if LUA is None:
        pytest.fail("lua5.1 is not installed (Debian: apt-get install lua5.1)")
    harness = (
        f"obj = {lua_value(obj)}\n"
        f"local check = assert(loadstring({lua_value(script or SCRIPT.read_text())}))\n"
        "local hs = check()\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    run = subprocess.run([LUA, "-"], input=harness, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    status, _, message = run.stdout.partition("\n")
    return status, message


def test_every_fixture_has_an_expected_health_and_every_state_a_fixture() -> None:
    assert sorted(fixtures()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_health_of_each_state_the_controller_writes(name: str) -> None:
    obj = fixtures()[name]
    status, message = health(obj)
    assert status == EXPECTED[name], message
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert message.startswith(ready["reason"]), message
    if status == "Degraded":
        stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
        assert stalled["message"] in message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_status_of_an_older_generation_is_progressing(name: str) -> None:
    obj = copy.deepcopy(fixtures()[name])
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    status, message = health(obj)
    assert status == "Progressing", message
    assert f"generation {obj['metadata']['generation']}" in message


def test_conditions_of_an_older_generation_are_progressing() -> None:
    """A status whose observedGeneration is current but whose conditions are not (a writer that
    moved one and not the others) is not trusted either."""
    obj = copy.deepcopy(fixtures()["userinvitation-failed"])
    obj["metadata"]["generation"] = 2
    obj["status"]["observedGeneration"] = 2
    assert health(obj)[0] == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_a_resource_without_status_is_progressing(kind: str) -> None:
    obj = {"apiVersion": "invite.operators.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "new", "generation": 1}}
    assert health(obj) == ("Progressing", "Waiting for the operator to report a status")


def test_the_argocd_cm_snippet_holds_the_script_for_each_kind() -> None:
    cm = yaml.safe_load(ARGOCD_CM.read_text())
    keys = {f"resource.customizations.health.invite.operators.dev_{kind}" for kind in KINDS}
    assert set(cm["data"]) == keys
    for key in keys:
        assert cm["data"][key] == SCRIPT.read_text(), key
        # What Argo CD runs is the snippet's text: it too gives the expected health.
        assert health(fixtures()["userinvitation-failed"], cm["data"][key])[0] == "Degraded"
