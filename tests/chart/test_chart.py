"""Offline tests of the Helm chart in deploy/charts/invite-operator.

Renders and lints the chart with Helm's own Go code through the PyPI package helm-python-sdk
(it bundles Helm as a shared library: no helm binary, no cluster, no network), then checks the
rendered manifests: RBAC equals files/rbac-rules.yaml split as documented and has no wildcard,
the Lease is only reachable through a Role in the release namespace, every container is
hardened, the probes hit /healthz and /readyz on the metrics port, the CRDs are the generated
crds/ plus the keep annotation, and values.schema.json rejects bad values.

Run:  python3 -m pip install -r tests/chart/requirements.txt && python3 -m pytest -q tests/chart
"""

from __future__ import annotations

import copy
import filecmp
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "charts" / "invite-operator"
GENERATED_CRDS = REPO / "crds"
CHART_CRDS = CHART / "crd-files"
RULES_FILE = CHART / "files" / "rbac-rules.yaml"

RELEASE = "invite-operator"
NAMESPACE = "invite-operator"
FULLNAME = "invite-operator"  # release name contains the chart name

KEEP = {"helm.sh/resource-policy": "keep"}

# The value sets every general check runs against.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "watch-namespaces-incl-release": {
        "watchNamespaces": ["team-a", NAMESPACE],
        "rbac": {"create": True, "endpointSecretNamespaces": ["secrets-ns"]},
    },
    "optional-all-on": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
            "apiServer": {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}], "ports": [6443]},
            "inviteApis": {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [443, 8443]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.7/32"}}], "ports": [{"port": 3128}]}],
        },
    },
    "default-endpoint": {
        "defaultEndpoint": {
            "enabled": True,
            "api": "UserInvite",
            "url": "https://example.wavefront.com",
            "secretRef": {"name": "invite-api-token", "namespace": "", "key": "token"},
            "namespaceSelector": {"matchLabels": {"invitations": "enabled"}},
            "allowed": {"groups": ["dashboard_management", "alerts_management"]},
            "requestsPerSecond": 5,
            "timeoutSeconds": 30,
            "maxUsersPerInvitation": 100,
        }
    },
    "crds-off": {"crds": {"install": False, "keep": True}},
    "cluster-endpoint-selector": {"clusterEndpointSelector": "invite.operators.dev/operator=blue"},
    "endpoint-selectors": {
        "clusterEndpointSelector": "invite.operators.dev/operator=blue",
        "namespacedEndpointSelector": "invite.operators.dev/operator in (blue),tier!=test",
    },
    "single-replica-no-leader-election": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "tenancy-policy": {
        "allowInsecureHttp": True,
        "namespacedEndpoints": False,
        "namespacedEndpointHosts": ["*.wavefront.com", "console.cloud.vmware.com"],
        "controller": {"secretCacheTtl": "30s", "maxClockSkew": "20s"},
    },
    "custom-port-and-env": {
        "metrics": {"port": 9102},
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "logFormat": "text",
        "logLevel": "debug",
    },
}


# --------------------------------------------------------------------------------------------
# helpers


def load_chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_raw(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    with load_chart() as chart:
        return chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)


def render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Render and parse every manifest (NOTES.txt excluded), each tagged with its template."""
    docs: list[dict[str, Any]] = []
    for template, text in sorted(render_raw(values, namespace).items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{template}: not an object: {doc!r}"
            assert doc.get("apiVersion") and doc.get("kind"), f"{template}: no apiVersion/kind"
            doc["__template__"] = template
            docs.append(doc)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def rules_file() -> dict[str, list[dict[str, Any]]]:
    return yaml.safe_load(RULES_FILE.read_text())


def normalize_rules(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Rules as comparable data: order of rules and of list entries does not matter."""
    out = []
    for rule in rules or []:
        out.append({k: sorted(v) if isinstance(v, list) else v for k, v in sorted(rule.items())})
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True))


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            specs.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            specs.append((d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            specs.append((d["metadata"]["name"], d["spec"]))
    return specs


def controller_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["controller"]
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    env = {}
    for e in container.get("env", []):
        assert e["name"] not in env, f"duplicate env {e['name']}"
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


def read_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = VALUE_SETS[request.param]
    return request.param, values, render(values)


# --------------------------------------------------------------------------------------------
# lint and schema


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_has_no_warning_or_error(name: str) -> None:
    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_values_yaml_passes_the_schema() -> None:
    with load_chart() as chart:
        assert chart.schema is not None, "values.schema.json missing"
        chart.validate_schema({})
        for values in VALUE_SETS.values():
            chart.validate_schema(values)


@pytest.mark.parametrize(
    "bad",
    [
        {"logFormat": "xml"},
        {"replicaCount": "two"},
        {"image": {"pullPolicy": "Sometimes"}},
        {"watchNamespaces": "team-a"},
        {"watchNamespaces": ["Team_A"]},
        {"clusterEndpointSelector": ["a=b"]},
        {"namespacedEndpointSelector": ["a=b"]},
        {"namespacedEndpointSelector": "x" * 1025},
        {"leaderElection": {"leaseDuration": "fifteen"}},
        {"controller": {"concurrency": 0}},
        {"controller": {"batchWindow": "1h"}},
        {"controller": {"batchMaxUsers": 0}},
        {"metrics": {"port": 70000}},
        {"defaultEndpoint": {"api": "Email"}},
        {"defaultEndpoint": {"requestsPerSecond": 0}},
        {"unknownTopLevelKey": True},
        {"crds": {"install": "yes"}},
        {"allowInsecureHttp": "yes"},
        {"namespacedEndpoints": "false"},
        {"namespacedEndpointHosts": "a.example.com"},
        {"namespacedEndpointHosts": ["a.example.com,b.example.com"]},
        {"namespacedEndpointHosts": ["https://a.example.com"]},
        {"controller": {"secretCacheTtl": "soon"}},
        {"controller": {"maxClockSkew": 15}},
        {"defaultEndpoint": {"timeoutSeconds": 121}},
        {"defaultEndpoint": {"allowed": {"adoptExistingUsers": "yes"}}},
        {"defaultEndpoint": {"allowed": {"customGroupsIds": "admins"}}},
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    with load_chart() as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)
        # install/template validate against the schema too
        with pytest.raises(helm.HelmError):
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_schema_rejects_xml_log_format_with_a_clear_message() -> None:
    with load_chart() as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema({"logFormat": "xml"})
    assert "logFormat" in str(err.value)


def test_chart_metadata() -> None:
    with load_chart() as chart:
        meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "invite-operator"
    assert meta["appVersion"] == "0.1.0"


def test_chart_kube_version_floor_is_the_oldest_tested_version() -> None:
    # The e2e suite runs against kube-apiserver 1.28.7 (tests/e2e-realkube.sh, CI); the chart
    # must not refuse what is tested, nor claim what is not.
    with load_chart() as chart:
        meta = chart.metadata
    assert meta["kubeVersion"] == ">=1.28.0-0"


# --------------------------------------------------------------------------------------------
# CRDs: one source of truth


def test_chart_crd_files_are_byte_identical_copies_of_generated_crds() -> None:
    generated = sorted(p.name for p in GENERATED_CRDS.glob("*.yaml"))
    copies = sorted(p.name for p in CHART_CRDS.glob("*.yaml"))
    assert generated, "crds/ is empty"
    assert copies == generated, (
        "deploy/charts/invite-operator/crd-files/ must hold exactly the files of crds/; "
        "regenerate with `invite-operator crd --output-dir`"
    )
    stale = [n for n in generated if not filecmp.cmp(GENERATED_CRDS / n, CHART_CRDS / n, shallow=False)]
    assert stale == [], f"crd-files/ copies differ from crds/: {stale}"


def expected_crds(keep: bool) -> dict[str, dict[str, Any]]:
    expected = {}
    for path in sorted(GENERATED_CRDS.glob("*.yaml")):
        for crd in read_yaml_docs(path):
            crd = copy.deepcopy(crd)
            if keep:
                crd["metadata"].setdefault("annotations", {}).update(KEEP)
            expected[crd["metadata"]["name"]] = crd
    return expected


@pytest.mark.parametrize("keep", [True, False])
def test_rendered_crds_equal_generated_plus_keep_annotation(keep: bool) -> None:
    docs = render({"crds": {"install": True, "keep": keep}})
    rendered = {d["metadata"]["name"]: d for d in of_kind(docs, "CustomResourceDefinition")}
    for d in rendered.values():
        assert d.pop("__template__").endswith("templates/crds.yaml")
    expected = expected_crds(keep)
    assert sorted(rendered) == sorted(expected)
    assert len(expected) == 3
    for name, crd in expected.items():
        assert rendered[name] == crd, f"rendered CRD {name} differs from crds/"
        annotations = rendered[name]["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") is keep


def test_crds_install_false_renders_no_crd() -> None:
    assert of_kind(render({"crds": {"install": False, "keep": True}}), "CustomResourceDefinition") == []


def test_chart_has_no_helm_crds_directory() -> None:
    # Helm installs crds/ once and never upgrades it: the chart must not use it.
    assert not (CHART / "crds").exists()


# --------------------------------------------------------------------------------------------
# RBAC


def rbac_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


def test_rbac_rules_file_shape() -> None:
    rules = rules_file()
    assert set(rules) == {"namespaced", "cluster", "leaderElection", "endpointSecrets"}
    for section, items in rules.items():
        assert items, section
        for rule in items:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, (section, rule)
            for key in ("apiGroups", "resources", "verbs"):
                assert isinstance(rule[key], list) and rule[key], (section, rule)
    resources = {s: {r for rule in items for r in rule["resources"]} for s, items in rules.items()}
    cluster_scoped = {"clusterinvitationendpoints", "clusterinvitationendpoints/status", "namespaces"}
    assert resources["cluster"] == cluster_scoped
    assert not resources["namespaced"] & cluster_scoped
    assert resources["leaderElection"] == {"leases"}
    assert all("leases" not in resources[s] for s in ("namespaced", "cluster", "endpointSecrets"))
    assert resources["endpointSecrets"] == {"secrets"}
    # Secrets are read by name only: never written, never listed or watched (a list returns
    # every token in the namespace, or the cluster).
    for section in ("namespaced", "endpointSecrets"):
        for rule in rules[section]:
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) == {"get"}


def test_rbac_has_no_wildcard(rendered) -> None:
    name, _values, docs = rendered
    for obj in rbac_objects(docs):
        assert "aggregationRule" not in obj
        for rule in obj.get("rules") or []:
            assert "nonResourceURLs" not in rule, (name, obj["metadata"]["name"], rule)
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                for item in rule.get(key, []):
                    assert "*" not in item, (name, obj["metadata"]["name"], rule)
    for obj in rules_file().values():
        for rule in obj:
            for key, items in rule.items():
                assert all("*" not in item for item in items), rule


def test_leases_only_in_a_role_in_the_release_namespace(rendered) -> None:
    name, values, docs = rendered
    lease_holders = [
        o for o in rbac_objects(docs) if any("leases" in r.get("resources", []) for r in o.get("rules") or [])
    ]
    if values.get("leaderElection", {}).get("enabled", True):
        assert len(lease_holders) == 1, name
        role = lease_holders[0]
        assert role["kind"] == "Role"
        assert role["metadata"]["namespace"] == NAMESPACE
        assert normalize_rules(role["rules"]) == normalize_rules(rules_file()["leaderElection"])
    else:
        assert lease_holders == [], name


def test_bindings_bind_the_service_account_to_rendered_roles(rendered) -> None:
    name, _values, docs = rendered
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert sa["automountServiceAccountToken"] is True
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rbac_objects(docs)}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == len(roles), name
    for b in bindings:
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ns, ref["name"]) in roles, (name, b["metadata"]["name"])
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_all_namespaces_uses_cluster_roles() -> None:
    docs = render({})
    rules = rules_file()
    cluster = one(docs, "ClusterRole", f"{FULLNAME}-cluster")
    namespaced = one(docs, "ClusterRole", f"{FULLNAME}-namespaced")
    assert normalize_rules(cluster["rules"]) == normalize_rules(rules["cluster"])
    assert normalize_rules(namespaced["rules"]) == normalize_rules(rules["namespaced"])
    assert len(of_kind(docs, "ClusterRole")) == 2
    assert len(of_kind(docs, "ClusterRoleBinding")) == 2
    roles = of_kind(docs, "Role")
    assert [r["metadata"]["name"] for r in roles] == [f"{FULLNAME}-leader-election"]
    env = env_of(controller_container(docs))
    assert env["WATCH_NAMESPACES"] == ""


def test_rbac_watch_namespaces_uses_one_role_per_namespace() -> None:
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    rules = rules_file()
    cluster_roles = of_kind(docs, "ClusterRole")
    assert [c["metadata"]["name"] for c in cluster_roles] == [f"{FULLNAME}-cluster"]
    assert normalize_rules(cluster_roles[0]["rules"]) == normalize_rules(rules["cluster"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(docs, "Role")}
    assert set(roles) == {
        ("team-a", FULLNAME),
        ("team-b", FULLNAME),
        (NAMESPACE, f"{FULLNAME}-endpoint-secrets"),
        (NAMESPACE, f"{FULLNAME}-leader-election"),
    }
    for ns in ("team-a", "team-b"):
        assert normalize_rules(roles[(ns, FULLNAME)]["rules"]) == normalize_rules(rules["namespaced"])
    assert normalize_rules(roles[(NAMESPACE, f"{FULLNAME}-endpoint-secrets")]["rules"]) == normalize_rules(
        rules["endpointSecrets"]
    )
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in of_kind(docs, "RoleBinding")}
    assert bindings == set(roles)
    assert env_of(controller_container(docs))["WATCH_NAMESPACES"] == "team-a,team-b"


def test_rbac_watching_the_release_namespace_needs_no_extra_secret_role() -> None:
    docs = render(VALUE_SETS["watch-namespaces-incl-release"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert roles == {
        ("team-a", FULLNAME),
        (NAMESPACE, FULLNAME),
        ("secrets-ns", f"{FULLNAME}-endpoint-secrets"),
        (NAMESPACE, f"{FULLNAME}-leader-election"),
    }


def test_rbac_create_false_renders_no_rbac() -> None:
    docs = render({"rbac": {"create": False}})
    assert [d for d in docs if "rbac.authorization.k8s.io" in d["apiVersion"]] == []


# --------------------------------------------------------------------------------------------
# Deployment


def test_every_container_is_hardened(rendered) -> None:
    name, _values, docs = rendered
    specs = pod_specs(docs)
    assert specs, name
    for where, spec in specs:
        pod = spec.get("securityContext") or {}
        assert pod.get("runAsNonRoot") is True, (name, where)
        assert pod.get("runAsUser") == 65532 and pod.get("runAsGroup") == 65532, (name, where)
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, (name, where)
        assert spec.get("hostNetwork") in (None, False) and spec.get("hostPID") in (None, False)
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            sc = c.get("securityContext") or {}
            label = (name, where, c["name"])
            assert sc.get("runAsNonRoot") is True, label
            assert sc.get("runAsUser") == 65532 and sc.get("runAsGroup") == 65532, label
            assert sc.get("readOnlyRootFilesystem") is True, label
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert sc.get("privileged") in (None, False), label
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not sc.get("capabilities", {}).get("add"), label
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, label
            assert c.get("resources", {}).get("requests"), label
            assert c.get("resources", {}).get("limits", {}).get("memory"), label


def test_probes_hit_healthz_and_readyz_on_the_metrics_port(rendered) -> None:
    name, values, docs = rendered
    port = values.get("metrics", {}).get("port", 8080)
    c = controller_container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": port}, name
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, (name, probe)
        assert get["port"] in ("metrics", port), (name, probe)
    assert env_of(c)["METRICS_ADDR"] == f"0.0.0.0:{port}"
    service = [s for s in of_kind(docs, "Service")]
    assert len(service) == 1
    assert service[0]["spec"]["ports"][0]["targetPort"] in ("metrics", port)


def test_controller_command_and_environment(rendered) -> None:
    name, values, docs = rendered
    c = controller_container(docs)
    assert c["args"] == ["run"]
    assert "command" not in c  # the image's ENTRYPOINT is /invite-operator
    env = env_of(c)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    le = values.get("leaderElection", {}).get("enabled", True)
    assert env["LEADER_ELECTION"] == ("true" if le else "false")
    assert env["LEASE_NAME"] == "invite-operator"
    assert env["LEASE_DURATION"] == "15s"
    assert env["LOG_FORMAT"] == values.get("logFormat", "json")
    assert env["LOG_LEVEL"] == values.get("logLevel", "info")
    assert env["CLUSTER_ENDPOINT_SELECTOR"] == values.get("clusterEndpointSelector", "")
    assert env["NAMESPACED_ENDPOINT_SELECTOR"] == values.get("namespacedEndpointSelector", "")
    assert env["RESYNC_INTERVAL"] == "10m"
    assert env["CONCURRENCY"] == "128"
    assert env["KUBERNETES_REQUESTS"] == "64"
    assert env["BATCH_WINDOW"] == "200ms"
    assert env["BATCH_MAX_USERS"] == "500"
    controller = values.get("controller", {})
    assert env["SECRET_CACHE_TTL"] == controller.get("secretCacheTtl", "60s")
    assert env["MAX_CLOCK_SKEW"] == controller.get("maxClockSkew", "15s")
    assert env["ALLOW_INSECURE_HTTP"] == ("true" if values.get("allowInsecureHttp", False) else "false")
    assert env["NAMESPACED_ENDPOINTS"] == ("true" if values.get("namespacedEndpoints", True) else "false")
    assert env["NAMESPACED_ENDPOINT_HOSTS"] == ",".join(values.get("namespacedEndpointHosts", []))
    for extra in values.get("extraEnv", []):
        assert env[extra["name"]] == extra["value"]
    for value in env.values():
        assert isinstance(value, (str, dict)), (name, value)  # env values must be strings


def test_endpoint_policy_is_strict_by_default() -> None:
    env = env_of(controller_container(render({})))
    assert env["ALLOW_INSECURE_HTTP"] == "false"
    assert env["NAMESPACED_ENDPOINTS"] == "true"
    assert env["NAMESPACED_ENDPOINT_HOSTS"] == ""
    assert env["SECRET_CACHE_TTL"] == "60s"
    assert env["MAX_CLOCK_SKEW"] == "15s"
    env = env_of(controller_container(render(VALUE_SETS["tenancy-policy"])))
    assert env["ALLOW_INSECURE_HTTP"] == "true"
    assert env["NAMESPACED_ENDPOINTS"] == "false"
    assert env["NAMESPACED_ENDPOINT_HOSTS"] == "*.wavefront.com,console.cloud.vmware.com"
    assert env["SECRET_CACHE_TTL"] == "30s"
    assert env["MAX_CLOCK_SKEW"] == "20s"


def test_deployment_defaults() -> None:
    docs = render({})
    d = one(docs, "Deployment")
    assert d["metadata"]["namespace"] == NAMESPACE
    assert d["spec"]["replicas"] == 2
    spec = d["spec"]["template"]["spec"]
    c = controller_container(docs)
    assert c["image"] == "invite-operator:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert spec["automountServiceAccountToken"] is True
    assert "podAntiAffinity" in spec["affinity"]


def test_scheduling_and_image_values_are_passed_through() -> None:
    docs = render(
        {
            "image": {"repository": "registry.example.com/invite-operator", "tag": "1.2.3", "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
            "replicaCount": 3,
        }
    )
    d = one(docs, "Deployment")
    spec = d["spec"]["template"]["spec"]
    c = controller_container(docs)
    assert d["spec"]["replicas"] == 3
    assert c["image"] == "registry.example.com/invite-operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"]["limits"] == {"memory": "64Mi"}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["affinity"] == {"nodeAffinity": {}}


def test_several_replicas_without_leader_election_are_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="leaderElection"):
        render_raw({"replicaCount": 2, "leaderElection": {"enabled": False}})


def test_namespaced_objects_live_in_the_release_namespace(rendered) -> None:
    name, values, docs = rendered
    allowed = {NAMESPACE, *values.get("watchNamespaces", []), *values.get("rbac", {}).get("endpointSecretNamespaces", [])}
    cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterInvitationEndpoint"}
    for d in docs:
        if d["kind"] in cluster_kinds:
            assert "namespace" not in d["metadata"], (name, d["kind"])
        elif d["kind"] in ("Role", "RoleBinding"):
            assert d["metadata"]["namespace"] in allowed, (name, d["kind"])
        else:
            assert d["metadata"].get("namespace") == NAMESPACE, (name, d["kind"], d["metadata"]["name"])


# --------------------------------------------------------------------------------------------
# optional resources


def test_optional_resources_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render({})}
    assert kinds == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    }


def test_service_monitor_pdb_and_network_policy() -> None:
    values = VALUE_SETS["optional-all-on"]
    docs = render(values)
    service = one(docs, "Service")
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"

    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()

    np = one(docs, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(np["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    ingress = np["spec"]["ingress"]
    assert len(ingress) == 1
    assert ingress[0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress[0]["from"] == values["networkPolicy"]["metrics"]["from"]
    egress = np["spec"]["egress"]
    by_ports = {tuple(sorted(p["port"] for p in rule["ports"])): rule for rule in egress}
    assert by_ports[(53, 53)]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert by_ports[(6443,)]["to"] == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]
    assert by_ports[(443, 8443)]["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert by_ports[(3128,)]["to"] == [{"ipBlock": {"cidr": "198.51.100.7/32"}}]
    assert len(egress) == 4


def test_network_policy_default_egress_is_limited_to_ports() -> None:
    np = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    ports = sorted(p["port"] for rule in np["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 443, 6443]
    assert all(rule.get("ports") for rule in np["spec"]["egress"])  # no allow-all rule


def test_pdb_max_unavailable_wins() -> None:
    pdb = one(render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def openapi_to_jsonschema(schema: Any) -> Any:
    """Turn a CRD's OpenAPI v3 schema into JSON Schema (draft 7) closely enough to validate."""
    if isinstance(schema, list):
        return [openapi_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: openapi_to_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("format", None)
    if "properties" in out and isinstance(out["properties"], dict):
        out["properties"] = {k: openapi_to_jsonschema(v) for k, v in schema["properties"].items()}
    return out


def crd_schema(kind: str) -> dict[str, Any]:
    for path in GENERATED_CRDS.glob("*.yaml"):
        for crd in read_yaml_docs(path):
            if crd["spec"]["names"]["kind"] == kind:
                return openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD for {kind}")


def test_default_cluster_invitation_endpoint_from_values() -> None:
    docs = render(VALUE_SETS["default-endpoint"])
    ciep = one(docs, "ClusterInvitationEndpoint", "default")
    assert ciep["apiVersion"] == "invite.operators.dev/v1alpha1"
    # A hook, so it is created after the CRDs of the same release exist.
    assert "post-install" in ciep["metadata"]["annotations"]["helm.sh/hook"]
    spec = ciep["spec"]
    assert spec == {
        "api": "UserInvite",
        "url": "https://example.wavefront.com",
        "credentials": {"secretRef": {"name": "invite-api-token", "namespace": NAMESPACE, "key": "token"}},
        "namespaceSelector": {"matchLabels": {"invitations": "enabled"}},
        "allowed": {"groups": ["dashboard_management", "alerts_management"]},
        "requestsPerSecond": 5,
        "timeoutSeconds": 30,
        "maxUsersPerInvitation": 100,
    }
    obj = {k: v for k, v in ciep.items() if k != "__template__"}
    jsonschema.validate(obj, crd_schema("ClusterInvitationEndpoint"))
    # The token Secret is not created by default.
    assert of_kind(docs, "Secret") == []


def test_default_org_invitation_endpoint_validates_against_the_crd() -> None:
    docs = render(
        {
            "defaultEndpoint": {
                "enabled": True,
                "asHook": False,
                "api": "OrgInvitation",
                "url": "https://console.example.com",
                "organizationId": "org-1",
                "tokenUrl": "https://auth.example.com",
                "secretRef": {"name": "csp-token", "namespace": "vault-sync", "key": "apiToken"},
                "allowed": {"organizationRoles": ["org_member"]},
            }
        }
    )
    ciep = one(docs, "ClusterInvitationEndpoint")
    assert "annotations" not in ciep["metadata"]
    assert ciep["spec"]["organizationId"] == "org-1"
    assert ciep["spec"]["credentials"]["secretRef"] == {"name": "csp-token", "namespace": "vault-sync", "key": "apiToken"}
    assert "requestsPerSecond" not in ciep["spec"]  # the CRD default applies
    jsonschema.validate({k: v for k, v in ciep.items() if k != "__template__"}, crd_schema("ClusterInvitationEndpoint"))


def test_default_endpoint_allowed_covers_every_grant_and_adoption() -> None:
    allowed = {
        "groups": ["dashboard_management"],
        "userGroups": ["*"],
        "roles": ["r1"],
        "organizationRoles": ["org_member"],
        "serviceDefinitionLinks": ["/csp/gateway/slc/api/definitions/paid/x"],
        "serviceRoleNames": ["viewer"],
        "customRoles": ["auditor"],
        "customGroupsIds": ["g-1"],
        "resources": ["/orgs/org-1"],
        "adoptExistingUsers": True,
    }
    docs = render(
        {"defaultEndpoint": {"enabled": True, "url": "https://example.wavefront.com", "allowed": allowed}}
    )
    ciep = one(docs, "ClusterInvitationEndpoint")
    assert ciep["spec"]["allowed"] == allowed
    jsonschema.validate({k: v for k, v in ciep.items() if k != "__template__"}, crd_schema("ClusterInvitationEndpoint"))
    # Empty: not rendered, so the endpoint is unrestricted (an empty `allowed` would deny every grant).
    docs = render({"defaultEndpoint": {"enabled": True, "url": "https://example.wavefront.com"}})
    assert "allowed" not in one(docs, "ClusterInvitationEndpoint")["spec"]


def test_default_endpoint_requires_url_and_org_id() -> None:
    with pytest.raises(helm.HelmRenderError, match="url"):
        render_raw({"defaultEndpoint": {"enabled": True}})
    with pytest.raises(helm.HelmRenderError, match="organizationId"):
        render_raw({"defaultEndpoint": {"enabled": True, "api": "OrgInvitation", "url": "https://x.example.com"}})


def test_token_secret_only_when_opted_in() -> None:
    base = {"enabled": True, "url": "https://example.wavefront.com"}
    assert of_kind(render({"defaultEndpoint": {**base, "token": "ignored-unless-opted-in"}}), "Secret") == []
    docs = render({"defaultEndpoint": {**base, "createSecret": True, "token": "s3cr3t"}})
    secret = one(docs, "Secret", "invite-api-token")
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["data"] == {"token": "czNjcjN0"}
    with pytest.raises(helm.HelmRenderError, match="token"):
        render_raw({"defaultEndpoint": {**base, "createSecret": True}})


def test_values_never_ship_a_token() -> None:
    with load_chart() as chart:
        values = chart.values
    assert values["defaultEndpoint"]["createSecret"] is False
    assert values["defaultEndpoint"]["token"] == ""
    assert values["defaultEndpoint"]["enabled"] is False


# --------------------------------------------------------------------------------------------
# chart README documents every value


def flatten(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in {"podSecurityContext", "securityContext", "resources"}:
            keys.extend(flatten(v, path + "."))
        else:
            keys.append(path)
    return keys


def test_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    with load_chart() as chart:
        keys = flatten(chart.values)
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert missing == [], f"chart README.md does not document: {missing}"
