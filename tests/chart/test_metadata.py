"""The invite-operator chart's metadata for Artifact Hub (annotations, icon, home, sources,
maintainers), checked against what they describe: the CRDs in crds/, the image the chart
renders, the license in Cargo.toml, the examples in examples/; the image reference
(image.registry, image.digest) and the root `enabled` value for umbrella charts.

Run:  python3 -m pytest -q tests/chart
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from test_chart import (
    CHART,
    GENERATED_CRDS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    controller_container,
    load_chart,
    render,
    render_raw,
)

REPO = CHART.parents[2]
EXAMPLES = REPO / "examples"


def metadata() -> dict[str, Any]:
    with load_chart() as chart:
        return chart.metadata


def annotation(key: str) -> Any:
    return yaml.safe_load(metadata()["annotations"][f"artifacthub.io/{key}"])


def generated_crds() -> dict[str, dict[str, Any]]:
    crds = [yaml.safe_load(p.read_text()) for p in sorted(GENERATED_CRDS.glob("*.yaml"))]
    return {c["spec"]["names"]["kind"]: c for c in crds}


def example_documents() -> list[dict[str, Any]]:
    return [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


# The operator's own bookkeeping (the intent journal): nobody creates one, so Artifact Hub
# neither lists nor exemplifies it.
INTERNAL_KINDS = {"InviteIntent"}


def test_artifacthub_crds_are_the_generated_crds() -> None:
    crds = generated_crds()
    listed = annotation("crds")
    assert INTERNAL_KINDS <= set(crds)
    assert {c["kind"] for c in listed} == set(crds) - INTERNAL_KINDS
    for entry in listed:
        crd = crds[entry["kind"]]
        assert entry["name"] == crd["metadata"]["name"]
        assert entry["version"] in [v["name"] for v in crd["spec"]["versions"] if v["served"]]
        assert entry["displayName"] and entry["description"], entry


def test_artifacthub_crd_examples_are_the_repository_examples_and_valid() -> None:
    examples = annotation("crdsExamples")
    crds = generated_crds()
    assert sorted(e["kind"] for e in examples) == sorted(set(crds) - INTERNAL_KINDS)
    documents = example_documents()
    for example in examples:
        # Stored exactly as in examples/ (no drift between what Artifact Hub shows and the repo).
        assert example in documents, example["metadata"]
        crd = crds[example["kind"]]
        version = example["apiVersion"].split("/")[1]
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        jsonschema.validate(example["spec"], schema["properties"]["spec"])


def test_artifacthub_image_is_the_image_the_chart_renders() -> None:
    images = annotation("images")
    assert len(images) == 1
    container = controller_container(render())
    assert images[0]["image"] == container["image"]
    assert images[0]["image"].endswith(":" + metadata()["appVersion"])


def test_artifacthub_license_operator_and_prerelease() -> None:
    meta = metadata()["annotations"]
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    assert meta["artifacthub.io/license"] == cargo["package"]["license"]
    assert meta["artifacthub.io/operator"] == "true"
    # A prerelease while the API is an alpha or beta (or the version is 0.x).
    alpha = any(re.search(r"v\d+(alpha|beta)\d+", e["version"]) for e in annotation("crds"))
    zero = metadata()["version"].startswith("0.")
    assert meta["artifacthub.io/prerelease"] == ("true" if alpha or zero else "false")


def test_home_sources_icon_and_maintainers() -> None:
    meta = metadata()
    assert meta["home"].startswith("https://")
    assert meta["home"] in meta["sources"]
    assert meta["maintainers"] and all(m["name"] for m in meta["maintainers"])
    # The icon is the chart's own icon.svg, served from the repository.
    assert (CHART / "icon.svg").is_file()
    assert meta["icon"].startswith(meta["home"]) and meta["icon"].endswith("/deploy/charts/invite-operator/icon.svg")
    assert "<svg" in (CHART / "icon.svg").read_text()


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "invite-operator:0.1.0"),
        ({"tag": "0.2.0"}, "invite-operator:0.2.0"),
        ({"registry": "ghcr.io", "repository": "acme/invite-operator"}, "ghcr.io/acme/invite-operator:0.1.0"),
        ({"registry": "registry.example.com:5000/mirror/"}, "registry.example.com:5000/mirror/invite-operator:0.1.0"),
        ({"digest": DIGEST, "tag": "0.2.0"}, f"invite-operator@{DIGEST}"),
        ({"registry": "ghcr.io", "digest": DIGEST}, f"ghcr.io/invite-operator@{DIGEST}"),
    ],
)
def test_image_reference_from_registry_repository_tag_and_digest(image: dict[str, Any], expected: str) -> None:
    values = {"image": {"repository": "invite-operator", "pullPolicy": "IfNotPresent", **image}}
    assert controller_container(render(values))["image"] == expected


@pytest.mark.parametrize(
    "image",
    [{"digest": "ab" * 32}, {"digest": "sha256:short"}, {"registry": "https://ghcr.io"}],
)
def test_schema_refuses_a_malformed_digest_or_registry(image: dict[str, Any]) -> None:
    with load_chart() as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"image": {"repository": "invite-operator", "pullPolicy": "IfNotPresent", **image}})


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_enabled_false_renders_nothing(name: str) -> None:
    values = {**VALUE_SETS[name], "enabled": False,
              "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    assert render(values) == []
    notes = next((t for n, t in render_raw(values).items() if n.endswith("NOTES.txt")), "")
    assert "disabled" in notes


def test_enabled_is_on_by_default() -> None:
    with load_chart() as chart:
        assert chart.values["enabled"] is True
    assert render()
