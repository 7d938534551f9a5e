"""deploy/k8s/ (kustomize) is the production topology on Kubernetes: every manifest is validated offline against
the Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail), the kustomization lists every file,
and each workload gets the settings that docker-compose.yml and the production-topology test agree on."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from tests.deploy._fixtures import COMPOSE, K8S_BASE, PLATFORM_SERVICES, ROLE_SERVICES, UNSAFE_RENAME
from tests.e2e._topology import ROLE_SETTINGS

KUBERNETES_VERSION = "1.33.0"  # schemas kubernetes-validate ships; the oldest Kubernetes the manifests target
SECRET = "shironzi-secrets"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


@functools.cache
def _parsed() -> tuple[tuple[str, dict], ...]:
    return tuple(
        (path.name, doc)
        for path in sorted(K8S_BASE.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def _manifests() -> Iterator[tuple[str, dict]]:
    """Every document of deploy/k8s/base, each a fresh copy."""
    for name, doc in _parsed():
        yield name, copy.deepcopy(doc)


def _kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc["kind"] == kind}


def _workloads() -> dict[str, dict]:
    return {name: doc for kind in WORKLOAD_KINDS for name, doc in _kind(kind).items()}


def _containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def _env_names(container: dict) -> set[str]:
    """The variables a container gets: its own `env` and every key of the ConfigMaps it takes `envFrom`."""
    config_maps = _kind("ConfigMap")
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(config_maps[source["configMapRef"]["name"]]["data"])
    return names


def _secret_keys() -> set[str]:
    text = (K8S_BASE.parent / "secrets.env.example").read_text()
    return {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    documents = list(_manifests())
    assert len(documents) >= 20
    for name, doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")
    # The validator is live: a misspelt field of the API deployment is refused.
    broken = copy.deepcopy(_kind("Deployment")["api"])
    broken["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in K8S_BASE.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "list every manifest of deploy/k8s/base in its kustomization.yaml, once"
    assert len(set(listed)) == len(listed)


def test_kubernetes_runs_the_same_services_as_compose() -> None:
    assert set(_workloads()) == set(_compose()["services"])


def test_every_role_sets_what_the_topology_test_gives_it() -> None:
    workloads = _workloads()
    for role, names in ROLE_SETTINGS.items():
        for name in ROLE_SERVICES[role]:
            missing = names - _env_names(_containers(workloads[name])[0])
            assert not missing, f"{name} ({role}) does not set {sorted(missing)}"


def test_platform_workloads_get_the_shared_settings_of_compose() -> None:
    shared = _compose()["x-shironzi-env"]
    config = _kind("ConfigMap")["shironzi-config"]["data"]
    for key, value in config.items():
        assert shared[key] == value, f"shironzi-config {key}={value!r}, docker-compose.yml {shared[key]!r}"
    workloads = _workloads()
    for name in PLATFORM_SERVICES:
        for container in _containers(workloads[name]):
            missing = set(shared) - _env_names(container)
            assert not missing, f"{name} lacks the shared settings {sorted(missing)}"


def test_secrets_come_from_the_documented_secret_and_no_unsafe_renames() -> None:
    documented = _secret_keys()
    for name, workload in _workloads().items():
        for container in _containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET and ref["key"] in documented, (name, ref)
    for _, doc in _manifests():
        assert doc["kind"] != "Secret", "secrets are created from secrets.env, never committed"
    settings = [
        line for p in K8S_BASE.parent.rglob("*") if p.is_file() for line in p.read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not [line for line in settings if UNSAFE_RENAME in line], "no workload may commit with unsafe renames"
    example = (K8S_BASE.parent / "secrets.env.example").read_text()
    options = json.loads(re.search(r"^SHIRONZI_STORAGE_OPTIONS=(.*)$", example, re.M).group(1))  # type: ignore[union-attr]
    assert options["aws_conditional_put"] == "etag"


def test_services_select_workloads_and_name_their_ports() -> None:
    workloads = _workloads()
    for name, workload in workloads.items():
        if workload["kind"] != "Job":
            assert workload["spec"]["selector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"][
                "labels"
            ].items(), name
    for name, svc in _kind("Service").items():
        selector = svc["spec"]["selector"].items()
        selected = [w for w in workloads.values() if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        ports = {p["name"] for c in _containers(selected[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name} targets the unnamed port {port['targetPort']}"
    services = _kind("Service")
    for value in _kind("ConfigMap")["shironzi-config"]["data"].values():
        parsed = urlparse(value if "://" in value else f"tcp://{value}")
        if parsed.scheme == "s3" or parsed.port is None:
            continue
        assert parsed.hostname in services, f"{value}: no Service {parsed.hostname}"
        assert parsed.port in {p["port"] for p in services[parsed.hostname]["spec"]["ports"]}, value


def test_images_are_pinned() -> None:
    for name, workload in _workloads().items():
        for container in _containers(workload):
            image = container["image"]
            if image == "shironzi":  # the project's image: its tag is set in kustomization.yaml
                continue
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image} to a release"
    images = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())["images"]
    assert [i["name"] for i in images] == ["shironzi"] and images[0]["newTag"]
