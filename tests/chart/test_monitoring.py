"""The chart's monitoring: the PrometheusRule (prometheusRule.enabled) checked by promtool (Debian's
`prometheus` package ships it) with `promtool check rules` and the unit tests in
prometheus/rules-test.yaml (`promtool test rules`), and the Grafana dashboard ConfigMap
(grafanaDashboard.enabled).

That every metric the rules and the dashboard name is one the operator exports is checked by
tests/e2e/telemetry.rs (it reads the same files).

Run:  apt-get install prometheus && python3 -m pytest -q tests/chart
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_chart import CHART, FULLNAME, NAMESPACE, of_kind, one, render

PROMTOOL = shutil.which("promtool")
RULES_TEST = Path(__file__).resolve().parent / "prometheus" / "rules-test.yaml"
DASHBOARD = CHART / "dashboards" / "invite-operator.json"
JOB = f"{FULLNAME}-metrics"

ALERTS = {
    "InviteOperatorDown",
    "InviteOperatorNoLeader",
    "InviteOperatorReconcileErrors",
    "InviteOperatorApiErrors",
    "InviteOperatorApiUnauthorized",
    "InviteOperatorInvitationsStuckInInviting",
    "InviteOperatorEndpointNotReady",
}


def rule_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    docs = render({"prometheusRule": {"enabled": True}, **(values or {})})
    return one(docs, "PrometheusRule")["spec"]["groups"]


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_no_prometheus_rule_or_dashboard_by_default() -> None:
    docs = render()
    assert of_kind(docs, "PrometheusRule") == []
    assert [d for d in of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {})] == []


def test_the_rules_select_the_job_the_service_monitor_gives_the_metrics() -> None:
    docs = render({"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    monitor = one(docs, "ServiceMonitor")
    # The Prometheus Operator names the job after the Service the ServiceMonitor selects (no
    # jobLabel), and keeps the metrics' own namespace and endpoint labels with honorLabels.
    assert "jobLabel" not in monitor["spec"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert service["metadata"]["name"] == JOB
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == NAMESPACE
    found = alerts(rule["spec"]["groups"])
    assert set(found) == ALERTS
    for name, alert in found.items():
        assert f'job="{JOB}"' in alert["expr"], name
        assert "__JOB__" not in json.dumps(alert), name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name


def test_alert_labels_are_added_and_an_alerts_own_labels_win() -> None:
    groups = rule_groups({"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                                             "alertLabels": {"team": "platform", "severity": "page"}}})
    for name, alert in alerts(groups).items():
        assert alert["labels"]["team"] == "platform", name
        assert alert["labels"]["severity"] != "page", name
    rule = one(render({"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_promtool_checks_the_rules_and_runs_their_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / "rules-test.yaml")
    check = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout, check.stdout
    test = promtool("test", "rules", "rules-test.yaml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr
    # Every alert has a unit test that expects it to fire.
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    assert fired == ALERTS


def test_the_unit_tests_fail_against_a_rule_with_the_wrong_job(tmp_path: Path) -> None:
    """The unit tests would catch the job="invite-operator" mistake (a job no target has)."""
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace(f'job="{JOB}"', 'job="invite-operator"')
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / "rules-test.yaml")
    test = promtool("test", "rules", "rules-test.yaml", cwd=tmp_path)
    assert test.returncode != 0, test.stdout


def test_the_dashboard_ships_as_a_configmap_for_the_grafana_sidecar() -> None:
    docs = render({"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Operators"}}})
    cm = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    assert json.loads(cm["data"]["invite-operator.json"]) == json.loads(DASHBOARD.read_text())
    other = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    assert one(other, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == "monitoring"


def test_the_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "invite-operator"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "namespace"} <= variables
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
