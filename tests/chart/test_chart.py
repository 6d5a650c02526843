"""Offline tests of the Helm charts in deploy/charts/: invite-operator and invite-operator-endpoint.

Renders and lints the charts with Helm's own Go code through the PyPI package helm-python-sdk
(it bundles Helm as a shared library: no helm binary, no cluster, no network), then checks the
rendered manifests: RBAC equals files/rbac-rules.yaml split as documented and has no wildcard,
the Lease is only reachable through a Role in the release namespace, every container is
hardened, the probes hit /healthz and /readyz on the metrics port, the CRDs are the generated
crds/ plus the keep annotations (Helm and Argo CD), no chart renders a hook (the default
ClusterInvitationEndpoint is a normal resource of its own release, deny by default), and each
values.schema.json rejects bad values.

Run:  python3 -m pip install -r tests/chart/requirements.txt && python3 -m pytest -q tests/chart
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "charts" / "invite-operator"
ENDPOINT_CHART = REPO / "deploy" / "charts" / "invite-operator-endpoint"
GENERATED_CRDS = REPO / "crds"
CHART_CRDS = CHART / "crd-files"
RULES_FILE = CHART / "files" / "rbac-rules.yaml"
AGGREGATE_RULES_FILE = CHART / "files" / "aggregate-rules.yaml"
# The status-writer policy rendered for the real-API-server test (tests/e2e/rbac.rs reads it and
# puts in its own names); test_the_rendered_status_writer_policy_fixture_is_current keeps it
# current (UPDATE_RENDERED=1 rewrites it).
POLICY_FIXTURE = REPO / "tests" / "chart" / "rendered" / "status-writer-policy.yaml"

# What a cluster serving ValidatingAdmissionPolicy reports (Helm's .Capabilities.APIVersions
# from discovery; offline, Helm's defaults have neither).
VAP_V1 = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
VAP_V1BETA1 = "admissionregistration.k8s.io/v1beta1/ValidatingAdmissionPolicy"

RELEASE = "invite-operator"
NAMESPACE = "invite-operator"
FULLNAME = "invite-operator"  # release name contains the chart name

# What crds.keep adds to every CRD: Helm's uninstall keeps them, Argo CD neither prunes them nor
# deletes them with the Application (it renders with `helm template` and ignores Helm's policy).
KEEP = {
    "helm.sh/resource-policy": "keep",
    "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
}

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
    # Values files of earlier versions, with the removed defaultEndpoint turned off, still install.
    "old-values-default-endpoint-off": {
        "defaultEndpoint": {"enabled": False, "asHook": True, "url": "https://example.wavefront.com"}
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


def load_chart(path: Path = CHART) -> helm.Chart:
    return helm.Chart.load(str(path))


def render_raw(
    values: dict[str, Any] | None = None,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
    release: str = RELEASE,
    api_versions: list[str] | None = None,
    kube_version: str | None = None,
) -> dict[str, str]:
    """Render offline; `api_versions` and `kube_version` stand for the cluster's discovery (what
    `helm template --api-versions --kube-version` pass)."""
    with load_chart(chart) as c:
        if api_versions is None and kube_version is None:
            return c.render(values or {}, name=release, namespace=namespace, is_install=True)
        # Chart.render (helm-python-sdk 0.2.2, pinned) does not expose these options of the
        # native render call it wraps.
        from helm_python import _native

        opts: dict[str, Any] = {"name": release, "namespace": namespace, "is_install": True}
        if api_versions is not None:
            opts["api_versions"] = api_versions
        if kube_version is not None:
            opts["kube_version"] = kube_version
        return json.loads(_native.call_string("helm_render", c._raw(), json.dumps(values or {}), json.dumps(opts)))


def render(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Render (the arguments of `render_raw`) and parse every manifest (NOTES.txt excluded),
    each tagged with its template."""
    docs: list[dict[str, Any]] = []
    rendered = render_raw(*args, **kwargs)
    for template, text in sorted(rendered.items()):
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


def assert_lints_clean(chart: Path, values: dict[str, Any]) -> None:
    """`helm lint --strict` of `chart` with `values` finds no error and no warning."""
    report = helm.lint(str(chart), values, strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def assert_schema_accepts(chart_path: Path, value_sets: dict[str, dict[str, Any]]) -> None:
    """`chart_path` has a values.schema.json, and it accepts no values and each value set."""
    with load_chart(chart_path) as chart:
        assert chart.schema is not None, "values.schema.json missing"
        chart.validate_schema({})
        for values in value_sets.values():
            chart.validate_schema(values)


def assert_schema_rejects(chart_path: Path, values: dict[str, Any], release: str) -> None:
    """The values schema of `chart_path` rejects `values`, and so does rendering with them."""
    with load_chart(chart_path) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
        # install/template validate against the schema too
        with pytest.raises(helm.HelmError):
            chart.render(values, name=release, namespace=NAMESPACE)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_has_no_warning_or_error(name: str) -> None:
    assert_lints_clean(CHART, VALUE_SETS[name])


def test_values_yaml_passes_the_schema() -> None:
    assert_schema_accepts(CHART, VALUE_SETS)


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
        {"unknownTopLevelKey": True},
        {"crds": {"install": "yes"}},
        {"defaultEndpoint": "on"},
        {"allowInsecureHttp": "yes"},
        {"namespacedEndpoints": "false"},
        {"namespacedEndpointHosts": "a.example.com"},
        {"namespacedEndpointHosts": ["a.example.com,b.example.com"]},
        {"namespacedEndpointHosts": ["https://a.example.com"]},
        {"controller": {"secretCacheTtl": "soon"}},
        {"controller": {"maxClockSkew": 15}},
    ],
)
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    assert_schema_rejects(CHART, bad, RELEASE)


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
    assert len(expected) == 4  # three for people, and the operator's intent journal
    for name, crd in expected.items():
        assert rendered[name] == crd, f"rendered CRD {name} differs from crds/"
        annotations = rendered[name]["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") is keep


def test_kept_crds_carry_the_helm_and_argocd_keep_annotations() -> None:
    for values in ({}, {"crds": {"install": True, "keep": True}}):
        crds = of_kind(render(values), "CustomResourceDefinition")
        assert len(crds) == 4
        for crd in crds:
            annotations = crd["metadata"]["annotations"]
            assert annotations["helm.sh/resource-policy"] == "keep", crd["metadata"]["name"]
            assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false,Delete=false"
    for crd in of_kind(render({"crds": {"install": True, "keep": False}}), "CustomResourceDefinition"):
        annotations = crd["metadata"].get("annotations") or {}
        assert "helm.sh/resource-policy" not in annotations
        assert "argocd.argoproj.io/sync-options" not in annotations


def test_crds_install_false_renders_no_crd() -> None:
    assert of_kind(render({"crds": {"install": False, "keep": True}}), "CustomResourceDefinition") == []


def test_chart_has_no_helm_crds_directory() -> None:
    # Helm installs crds/ once and never upgrades it: the chart must not use it.
    assert not (CHART / "crds").exists()


# --------------------------------------------------------------------------------------------
# RBAC


def rbac_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


AGGREGATE_LABEL = "rbac.authorization.k8s.io/aggregate-to-"


def is_aggregated(obj: dict[str, Any]) -> bool:
    return any(label.startswith(AGGREGATE_LABEL) for label in obj["metadata"].get("labels") or {})


def operator_rbac_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own Roles and ClusterRoles (bound to its ServiceAccount): not the
    ClusterRoles aggregated into view/edit/admin for app teams."""
    return [d for d in rbac_objects(docs) if not is_aggregated(d)]


def assert_rule_lists(rules: dict[str, list[dict[str, Any]]], wildcards: bool = True) -> None:
    """Each section of a rules file is a non-empty list of rules, each with non-empty lists of
    apiGroups, resources and verbs (none of them "*" unless `wildcards`)."""
    for section, items in rules.items():
        assert items, section
        for rule in items:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, (section, rule)
            for key in ("apiGroups", "resources", "verbs"):
                assert isinstance(rule[key], list) and rule[key], (section, rule)
                assert wildcards or all("*" not in item for item in rule[key]), (section, rule)


def test_rbac_rules_file_shape() -> None:
    rules = rules_file()
    assert set(rules) == {"namespaced", "cluster", "leaderElection", "journal", "endpointSecrets"}
    assert_rule_lists(rules)
    resources = {s: {r for rule in items for r in rule["resources"]} for s, items in rules.items()}
    cluster_scoped = {"clusterinvitationendpoints", "clusterinvitationendpoints/status", "namespaces"}
    assert resources["cluster"] == cluster_scoped
    assert not resources["namespaced"] & cluster_scoped
    assert resources["leaderElection"] == {"leases"}
    assert all("leases" not in resources[s] for s in ("namespaced", "cluster", "endpointSecrets"))
    assert resources["endpointSecrets"] == {"secrets"}
    assert resources["journal"] == {"inviteintents"}
    assert all("inviteintents" not in resources[s] for s in ("namespaced", "cluster", "leaderElection", "endpointSecrets"))
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


def test_the_journal_only_in_a_role_in_the_release_namespace(rendered) -> None:
    name, values, docs = rendered
    holders = [
        o for o in rbac_objects(docs) if any("inviteintents" in r.get("resources", []) for r in o.get("rules") or [])
    ]
    if not values.get("rbac", {}).get("create", True):
        assert holders == [], name
        return
    assert len(holders) == 1, name
    role = holders[0]
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["metadata"]["name"] == f"{FULLNAME}-journal"
    assert normalize_rules(role["rules"]) == normalize_rules(rules_file()["journal"])
    # App teams (view, edit, admin) get nothing of the journal.
    for obj in rbac_objects(docs):
        if is_aggregated(obj):
            assert all("inviteintents" not in r.get("resources", []) for r in obj.get("rules") or []), name


def test_bindings_bind_the_service_account_to_rendered_roles(rendered) -> None:
    name, _values, docs = rendered
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert sa["automountServiceAccountToken"] is True
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in operator_rbac_objects(docs)}
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
    assert len([c for c in of_kind(docs, "ClusterRole") if not is_aggregated(c)]) == 2
    assert len(of_kind(docs, "ClusterRoleBinding")) == 2
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["name"] for r in roles) == [f"{FULLNAME}-journal", f"{FULLNAME}-leader-election"]
    env = env_of(controller_container(docs))
    assert env["WATCH_NAMESPACES"] == ""


def test_rbac_watch_namespaces_uses_one_role_per_namespace() -> None:
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    rules = rules_file()
    cluster_roles = [c for c in of_kind(docs, "ClusterRole") if not is_aggregated(c)]
    assert [c["metadata"]["name"] for c in cluster_roles] == [f"{FULLNAME}-cluster"]
    assert normalize_rules(cluster_roles[0]["rules"]) == normalize_rules(rules["cluster"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(docs, "Role")}
    assert set(roles) == {
        ("team-a", FULLNAME),
        ("team-b", FULLNAME),
        (NAMESPACE, f"{FULLNAME}-endpoint-secrets"),
        (NAMESPACE, f"{FULLNAME}-leader-election"),
        (NAMESPACE, f"{FULLNAME}-journal"),
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
        (NAMESPACE, f"{FULLNAME}-journal"),
    }


def test_rbac_create_false_renders_no_rbac() -> None:
    docs = render({"rbac": {"create": False}})
    assert [d for d in docs if "rbac.authorization.k8s.io" in d["apiVersion"]] == []


# --------------------------------------------------------------------------------------------
# RBAC for app teams: ClusterRoles aggregated into the built-in view, edit and admin

APP_TEAM_RESOURCES = {"userinvitations", "invitationendpoints"}
READ = {"get", "list", "watch"}
WRITE = {"create", "update", "patch", "delete", "deletecollection"}


def aggregate_rules() -> dict[str, list[dict[str, Any]]]:
    return yaml.safe_load(AGGREGATE_RULES_FILE.read_text())


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def aggregated_roles(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The aggregated ClusterRoles by the built-in role they add to (view, edit, admin)."""
    out = {}
    for role in of_kind(docs, "ClusterRole"):
        targets = [l.removeprefix(AGGREGATE_LABEL) for l in role["metadata"].get("labels") or {} if l.startswith(AGGREGATE_LABEL)]
        if targets:
            assert len(targets) == 1, role["metadata"]
            assert role["metadata"]["labels"][AGGREGATE_LABEL + targets[0]] == "true"
            assert targets[0] not in out
            out[targets[0]] = role
    return out


def test_aggregate_rules_file_shape() -> None:
    rules = aggregate_rules()
    assert set(rules) == {"view", "edit", "admin"}
    assert_rule_lists(rules, wildcards=False)


def test_view_reads_edit_and_admin_also_write_userinvitations_and_invitationendpoints() -> None:
    rules = aggregate_rules()
    group = "invite.operators.dev"
    assert grants(rules["view"]) == {(group, r, v) for r in APP_TEAM_RESOURCES for v in READ}
    assert grants(rules["edit"]) == {(group, r, v) for r in APP_TEAM_RESOURCES for v in READ | WRITE}
    # admin = edit: nothing more, nothing dangerous.
    assert grants(rules["admin"]) == grants(rules["edit"])


def test_app_team_roles_are_aggregated_into_view_edit_and_admin_by_default() -> None:
    with load_chart() as chart:
        rbac = chart.values["rbac"]
    assert (rbac["aggregateToView"], rbac["aggregateToEdit"], rbac["aggregateToAdmin"]) == (True, True, True)
    docs = render({})
    roles = aggregated_roles(docs)
    assert set(roles) == {"view", "edit", "admin"}
    rules = aggregate_rules()
    for role, obj in roles.items():
        assert obj["metadata"]["name"] == f"{FULLNAME}-{role}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert "aggregationRule" not in obj
        assert normalize_rules(obj["rules"]) == normalize_rules(rules[role])
    # Nobody is bound to them: they reach people through view, edit and admin only.
    names = {o["metadata"]["name"] for o in roles.values()}
    bound = {b["roleRef"]["name"] for b in docs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert not names & bound


def test_no_app_team_role_grants_status_cluster_endpoints_or_secrets(rendered) -> None:
    name, _values, docs = rendered
    roles = aggregated_roles(docs)
    for role in [*roles.values(), *({"metadata": {"name": k}, "rules": v} for k, v in aggregate_rules().items())]:
        for rule in role["rules"]:
            label = (name, role["metadata"]["name"], rule)
            assert rule["apiGroups"] == ["invite.operators.dev"], label
            assert set(rule["resources"]) <= APP_TEAM_RESOURCES, label  # no subresource, no status
            assert not [r for r in rule["resources"] if "/" in r], label
            assert "clusterinvitationendpoints" not in rule["resources"], label
            assert "secrets" not in rule["resources"], label
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, label


@pytest.mark.parametrize("role", ["view", "edit", "admin"])
def test_each_aggregated_role_can_be_turned_off(role: str) -> None:
    key = f"aggregateTo{role.capitalize()}"
    roles = aggregated_roles(render({"rbac": {"create": True, key: False}}))
    assert set(roles) == {"view", "edit", "admin"} - {role}
    off = {"create": True, "aggregateToView": False, "aggregateToEdit": False, "aggregateToAdmin": False}
    assert aggregated_roles(render({"rbac": off})) == {}
    assert aggregated_roles(render({"rbac": {"create": False}})) == {}


# --------------------------------------------------------------------------------------------
# statusWriterPolicy: only the operator's ServiceAccount writes userinvitations/status

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
ON = {"statusWriterPolicy": {"enabled": True}}
# What tests/chart/rendered/status-writer-policy.yaml is rendered from: placeholders that
# tests/e2e/rbac.rs replaces with the test's names.
FIXTURE_VALUES = {
    "statusWriterPolicy": {"enabled": True, "extraUsers": ["break-glass-user"], "extraGroups": ["break-glass-group"]},
    "watchNamespaces": ["watched-namespace"],
}
FIXTURE_RELEASE, FIXTURE_NAMESPACE = "release", "release-namespace"


def policy_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in POLICY_KINDS]


def test_the_status_writer_policy_is_off_by_default() -> None:
    with load_chart() as chart:
        assert chart.values["statusWriterPolicy"] == {"enabled": False, "extraUsers": [], "extraGroups": []}
    for api_versions in (None, [VAP_V1], [VAP_V1BETA1]):
        assert policy_docs(render({}, api_versions=api_versions)) == [], api_versions


@pytest.mark.parametrize(
    ("api_versions", "expected"),
    [
        ([VAP_V1], "admissionregistration.k8s.io/v1"),
        ([VAP_V1BETA1], "admissionregistration.k8s.io/v1beta1"),
        ([VAP_V1BETA1, VAP_V1], "admissionregistration.k8s.io/v1"),
    ],
)
def test_the_status_writer_policy_lets_only_the_chart_service_account_write_the_status(
    api_versions: list[str], expected: str
) -> None:
    docs = render(ON, api_versions=api_versions)
    policy = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["__template__"].endswith("templates/status-writer-policy.yaml")
    assert policy["apiVersion"] == binding["apiVersion"] == expected
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    operator = f"system:serviceaccount:{NAMESPACE}:{sa}"
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == f"{FULLNAME}-status-writer"
    assert "namespace" not in policy["metadata"] and "namespace" not in binding["metadata"]
    assert policy["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    # Status writes (PUT or any PATCH of /status) reach admission as UPDATE of the subresource.
    assert spec["matchConstraints"] == {
        "resourceRules": [
            {
                "apiGroups": ["invite.operators.dev"],
                "apiVersions": ["*"],
                "operations": ["UPDATE"],
                "resources": ["userinvitations/status"],
            }
        ]
    }
    [validation] = spec["validations"]
    assert validation["expression"] == f'request.userInfo.username in ["{operator}"]'
    assert validation["reason"] == "Forbidden"
    assert operator in validation["message"]
    # Deny, in every namespace (watchNamespaces is empty).
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_the_status_writer_policy_names_the_service_account_the_chart_runs_as() -> None:
    docs = render({**ON, "serviceAccount": {"create": True, "name": "inviter"}}, namespace="ops", api_versions=[VAP_V1])
    expression = one(docs, "ValidatingAdmissionPolicy")["spec"]["validations"][0]["expression"]
    assert expression == 'request.userInfo.username in ["system:serviceaccount:ops:inviter"]'
    docs = render({**ON, "serviceAccount": {"create": False, "name": "existing"}}, api_versions=[VAP_V1])
    expression = one(docs, "ValidatingAdmissionPolicy")["spec"]["validations"][0]["expression"]
    assert expression == f'request.userInfo.username in ["system:serviceaccount:{NAMESPACE}:existing"]'


def test_the_status_writer_policy_admits_break_glass_users_and_groups() -> None:
    values = {"statusWriterPolicy": {"enabled": True, "extraUsers": ["alice@example.com"], "extraGroups": ["oncall", "sre"]}}
    expression = one(render(values, api_versions=[VAP_V1]), "ValidatingAdmissionPolicy")["spec"]["validations"][0][
        "expression"
    ]
    assert expression == (
        f'request.userInfo.username in ["system:serviceaccount:{NAMESPACE}:{FULLNAME}","alice@example.com"]'
        ' || (has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in ["oncall","sre"]))'
    )
    # A quote in a name stays inside its CEL string literal.
    values = {"statusWriterPolicy": {"enabled": True, "extraUsers": ['a"] || true || ["']}}
    expression = one(render(values, api_versions=[VAP_V1]), "ValidatingAdmissionPolicy")["spec"]["validations"][0][
        "expression"
    ]
    assert expression.endswith(r'"a\"] || true || [\""]')


def test_the_status_writer_policy_covers_the_watched_namespaces_only_when_set() -> None:
    docs = render({**ON, "watchNamespaces": ["team-a", "team-b"]}, api_versions=[VAP_V1])
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]
        }
    }
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_the_status_writer_policy_fails_clearly_on_a_cluster_without_validating_admission_policy() -> None:
    for api_versions in ([], ["admissionregistration.k8s.io/v1alpha1/ValidatingAdmissionPolicy"]):
        with pytest.raises(helm.HelmRenderError) as err:
            render_raw(ON, api_versions=api_versions, kube_version="v1.28.7")
        message = str(err.value)
        assert "statusWriterPolicy.enabled needs ValidatingAdmissionPolicy" in message
        assert "v1.28.7" in message
        assert "--feature-gates=ValidatingAdmissionPolicy=true" in message
        assert "--api-versions" in message
    # Off, the same cluster installs the chart.
    render_raw({}, api_versions=[], kube_version="v1.28.7")


def test_the_rendered_status_writer_policy_fixture_is_current() -> None:
    """tests/e2e/rbac.rs installs this rendering on a real API server."""
    docs = render(FIXTURE_VALUES, namespace=FIXTURE_NAMESPACE, release=FIXTURE_RELEASE, api_versions=[VAP_V1])
    rendered = [without_template(d) for d in policy_docs(docs)]
    assert [d["kind"] for d in rendered] == list(POLICY_KINDS)
    text = (
        "# The chart's statusWriterPolicy rendered by tests/chart/test_chart.py with\n"
        f"# {json.dumps(FIXTURE_VALUES)}, release {FIXTURE_RELEASE!r} in namespace\n"
        f"# {FIXTURE_NAMESPACE!r}; tests/e2e/rbac.rs installs it with its own names. Regenerate with\n"
        "# UPDATE_RENDERED=1 python3 -m pytest -q tests/chart\n"
        + yaml.safe_dump_all(rendered, sort_keys=True, width=1000)
    )
    if os.environ.get("UPDATE_RENDERED"):
        POLICY_FIXTURE.parent.mkdir(exist_ok=True)
        POLICY_FIXTURE.write_text(text)
    assert POLICY_FIXTURE.exists() and POLICY_FIXTURE.read_text() == text, (
        f"{POLICY_FIXTURE.relative_to(REPO)} is stale: UPDATE_RENDERED=1 python3 -m pytest -q tests/chart"
    )


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
    assert env["CONCURRENCY"] == "512"
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
    cluster_kinds = {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ClusterInvitationEndpoint",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
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


def test_the_operator_chart_renders_no_hook_and_no_custom_resource(rendered) -> None:
    # Helm cannot create a custom resource in the release that installs its CRD from templates,
    # and a hook is deleted and recreated by every upgrade: the default endpoint is the chart
    # invite-operator-endpoint, a release of its own.
    name, _values, docs = rendered
    for d in docs:
        assert not d["apiVersion"].startswith("invite.operators.dev/"), (name, d["kind"])
        annotations = d["metadata"].get("annotations") or {}
        assert not [a for a in annotations if a.startswith("helm.sh/hook")], (name, d["kind"])
    raw = render_raw(VALUE_SETS[name])
    assert not any("helm.sh/hook" in text for text in raw.values()), name


def test_the_removed_default_endpoint_is_refused_with_a_message() -> None:
    with pytest.raises(helm.HelmRenderError, match="invite-operator-endpoint"):
        render_raw({"defaultEndpoint": {"enabled": True, "url": "https://example.wavefront.com"}})
    with load_chart() as chart:
        assert "defaultEndpoint" not in chart.values


# --------------------------------------------------------------------------------------------
# the default ClusterInvitationEndpoint: chart invite-operator-endpoint, a release of its own

ENDPOINT_RELEASE = "invite-operator-endpoint"
URL = "https://example.wavefront.com"

# Every access-granting field of AllowedGrants (src/api/endpoint.rs), and adoption.
ALL_ALLOWED = {
    "groups": ["dashboard_management"],
    "userGroups": ["*"],
    "roles": ["r1"],
    "organizationRoles": ["org_member", "org_owner"],
    "serviceDefinitionLinks": ["/csp/gateway/slc/api/definitions/paid/x"],
    "serviceRoleNames": ["viewer"],
    "customRoles": ["auditor"],
    "customGroupsIds": ["g-1"],
    "resources": ["/orgs/org-1"],
    "adoptExistingUsers": True,
}

ENDPOINT_VALUE_SETS: dict[str, dict[str, Any]] = {
    "user-invite-defaults": {"url": URL},
    "org-invitation-defaults": {"api": "OrgInvitation", "url": "https://console.example.com", "organizationId": "org-1"},
    "user-invite-full": {
        "name": "wavefront",
        "labels": {"invite.operators.dev/operator": "blue"},
        "api": "UserInvite",
        "url": URL,
        "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "secretRef": {"name": "invite-api-token", "namespace": "", "key": "token"},
        "namespaceSelector": {"matchLabels": {"invitations": "enabled"}},
        "allowed": {"groups": ["dashboard_management", "alerts_management"]},
        "requestsPerSecond": 20,
        "timeoutSeconds": 30,
        "maxUsersPerInvitation": 100,
    },
    "org-invitation-full": {
        "api": "OrgInvitation",
        "url": "https://console.example.com",
        "organizationId": "org-1",
        "tokenUrl": "https://auth.example.com",
        "secretRef": {"name": "csp-token", "namespace": "vault-sync", "key": "apiToken"},
        "allowed": ALL_ALLOWED,
        "keep": False,
    },
    "with-secret": {"url": URL, "createSecret": True, "token": "s3cr3t"},
}


def render_endpoint(values: dict[str, Any]) -> list[dict[str, Any]]:
    return render(values, chart=ENDPOINT_CHART, release=ENDPOINT_RELEASE)


def endpoint_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "ClusterInvitationEndpoint")


def without_template(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__template__"}


@pytest.mark.parametrize("name", sorted(ENDPOINT_VALUE_SETS))
def test_endpoint_chart_lint_strict_has_no_warning_or_error(name: str) -> None:
    assert_lints_clean(ENDPOINT_CHART, ENDPOINT_VALUE_SETS[name])


def test_endpoint_chart_metadata_matches_the_operator_chart() -> None:
    with load_chart(ENDPOINT_CHART) as c:
        meta = c.metadata
        assert c.crds == []  # the CRDs come from the invite-operator chart, installed first
    with load_chart(CHART) as c:
        operator = c.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "invite-operator-endpoint"
    assert meta["appVersion"] == operator["appVersion"]
    assert meta["kubeVersion"] == operator["kubeVersion"]


@pytest.mark.parametrize("name", sorted(ENDPOINT_VALUE_SETS))
def test_the_endpoint_is_a_normal_release_resource_never_a_hook(name: str) -> None:
    # A hook (helm.sh/hook, with before-hook-creation) is deleted and recreated by every
    # `helm upgrade` and Argo CD sync: a new uid, which the operator treats as another endpoint.
    raw = render_raw(ENDPOINT_VALUE_SETS[name], chart=ENDPOINT_CHART, release=ENDPOINT_RELEASE)
    assert not any("helm.sh/hook" in text for text in raw.values()), name
    docs = render_endpoint(ENDPOINT_VALUE_SETS[name])
    ciep = endpoint_of(docs)
    assert ciep["apiVersion"] == "invite.operators.dev/v1alpha1"
    assert ciep["__template__"].endswith("templates/clusterinvitationendpoint.yaml")
    for d in docs:
        annotations = d["metadata"].get("annotations") or {}
        assert not [a for a in annotations if a.startswith("helm.sh/hook")], (name, d["kind"], annotations)


@pytest.mark.parametrize("name", sorted(ENDPOINT_VALUE_SETS))
def test_the_endpoint_validates_against_the_crd(name: str) -> None:
    ciep = endpoint_of(render_endpoint(ENDPOINT_VALUE_SETS[name]))
    jsonschema.validate(without_template(ciep), crd_schema("ClusterInvitationEndpoint"))
    assert "namespace" not in ciep["metadata"]


def test_the_endpoint_from_values() -> None:
    docs = render_endpoint(ENDPOINT_VALUE_SETS["user-invite-full"])
    ciep = endpoint_of(docs)
    assert ciep["metadata"]["name"] == "wavefront"
    labels = ciep["metadata"]["labels"]
    assert labels["invite.operators.dev/operator"] == "blue"
    assert labels["app.kubernetes.io/instance"] == ENDPOINT_RELEASE
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert ciep["spec"] == {
        "api": "UserInvite",
        "url": URL,
        "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "credentials": {"secretRef": {"name": "invite-api-token", "namespace": NAMESPACE, "key": "token"}},
        "namespaceSelector": {"matchLabels": {"invitations": "enabled"}},
        "allowed": {"groups": ["dashboard_management", "alerts_management"]},
        "requestsPerSecond": 20,
        "timeoutSeconds": 30,
        "maxUsersPerInvitation": 100,
    }
    # The token Secret is not created by default.
    assert of_kind(docs, "Secret") == []


def test_the_endpoint_labels_add_to_the_common_ones() -> None:
    labels = {"invite.operators.dev/operator": "blue", "app.kubernetes.io/instance": "other"}
    ciep = endpoint_of(render_endpoint({"url": URL, "labels": labels}))
    assert ciep["metadata"]["labels"]["invite.operators.dev/operator"] == "blue"
    assert ciep["metadata"]["labels"]["app.kubernetes.io/instance"] == ENDPOINT_RELEASE


def test_the_org_invitation_endpoint_from_values() -> None:
    ciep = endpoint_of(render_endpoint(ENDPOINT_VALUE_SETS["org-invitation-full"]))
    assert ciep["spec"]["organizationId"] == "org-1"
    assert ciep["spec"]["tokenUrl"] == "https://auth.example.com"
    assert ciep["spec"]["credentials"]["secretRef"] == {"name": "csp-token", "namespace": "vault-sync", "key": "apiToken"}
    for default in ("requestsPerSecond", "timeoutSeconds", "maxUsersPerInvitation"):
        assert default not in ciep["spec"]  # the CRD default applies


def test_the_default_endpoint_denies_every_grant_by_default() -> None:
    # UserInvite: allowed present and empty: no groups, userGroups or roles may be granted.
    ciep = endpoint_of(render_endpoint({"url": URL}))
    assert ciep["spec"]["allowed"] == {}
    # OrgInvitation: only the organization role org_member.
    ciep = endpoint_of(render_endpoint(ENDPOINT_VALUE_SETS["org-invitation-defaults"]))
    assert ciep["spec"]["allowed"] == {"organizationRoles": ["org_member"]}
    # allowed: null (as `--set allowed=null` gives) is the default too.
    for api, extra, expected in (
        ("UserInvite", {}, {}),
        ("OrgInvitation", {"organizationId": "org-1"}, {"organizationRoles": ["org_member"]}),
    ):
        ciep = endpoint_of(render_endpoint({"api": api, "url": URL, "allowed": None, **extra}))
        assert ciep["spec"]["allowed"] == expected, api
    with load_chart(ENDPOINT_CHART) as c:
        assert c.values.get("allowed") is None


@pytest.mark.parametrize("api", ["UserInvite", "OrgInvitation"])
def test_a_given_allowed_is_rendered_as_given(api: str) -> None:
    base = {"api": api, "url": URL, "organizationId": "org-1"}
    for allowed in (ALL_ALLOWED, {"groups": ["*"]}, {"organizationRoles": ["org_member"], "adoptExistingUsers": True}, {}):
        ciep = endpoint_of(render_endpoint({**base, "allowed": allowed}))
        assert ciep["spec"]["allowed"] == allowed, (api, allowed)
        jsonschema.validate(without_template(ciep), crd_schema("ClusterInvitationEndpoint"))


def test_the_endpoint_is_kept_on_uninstall_unless_told_otherwise() -> None:
    ciep = endpoint_of(render_endpoint({"url": URL}))
    assert ciep["metadata"]["annotations"] == KEEP
    ciep = endpoint_of(render_endpoint({"url": URL, "keep": False}))
    assert "annotations" not in ciep["metadata"]


def test_the_endpoint_requires_url_and_org_id() -> None:
    with pytest.raises(helm.HelmRenderError, match="url"):
        render_raw({}, chart=ENDPOINT_CHART, release=ENDPOINT_RELEASE)
    with pytest.raises(helm.HelmRenderError, match="organizationId"):
        render_raw({"api": "OrgInvitation", "url": URL}, chart=ENDPOINT_CHART, release=ENDPOINT_RELEASE)


def test_the_token_secret_only_when_opted_in() -> None:
    assert of_kind(render_endpoint({"url": URL, "token": "ignored-unless-opted-in"}), "Secret") == []
    docs = render_endpoint(ENDPOINT_VALUE_SETS["with-secret"])
    secret = one(docs, "Secret", "invite-api-token")
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["data"] == {"token": "czNjcjN0"}
    with pytest.raises(helm.HelmRenderError, match="token"):
        render_raw({"url": URL, "createSecret": True}, chart=ENDPOINT_CHART, release=ENDPOINT_RELEASE)


def test_values_never_ship_a_token() -> None:
    with load_chart(ENDPOINT_CHART) as c:
        values = c.values
    assert values["createSecret"] is False
    assert values["token"] == ""


def test_endpoint_values_yaml_passes_the_schema() -> None:
    assert_schema_accepts(ENDPOINT_CHART, ENDPOINT_VALUE_SETS)


@pytest.mark.parametrize(
    "bad",
    [
        {"api": "Email"},
        {"url": "ftp://example.com"},
        {"requestsPerSecond": 0},
        {"timeoutSeconds": 121},
        {"maxUsersPerInvitation": 1001},
        {"allowed": {"adoptExistingUsers": "yes"}},
        {"allowed": {"customGroupsIds": "admins"}},
        {"allowed": {"groups": [""]}},
        {"allowed": {"unknownField": ["x"]}},
        {"allowed": ["groups"]},
        {"name": "Not_A_Name"},
        {"labels": {"a": 1}},
        {"keep": "yes"},
        {"enabled": True},
        {"asHook": True},
        {"secretRef": {"name": "", "key": "token"}},
    ],
)
def test_endpoint_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    assert_schema_rejects(ENDPOINT_CHART, {"url": URL, **bad}, ENDPOINT_RELEASE)


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


@pytest.mark.parametrize("chart", [CHART, ENDPOINT_CHART], ids=lambda p: p.name)
def test_chart_readme_lists_every_value(chart: Path) -> None:
    readme = (chart / "README.md").read_text()
    with load_chart(chart) as c:
        keys = flatten(c.values)
    assert keys
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert missing == [], f"{chart.name}/README.md does not document: {missing}"
