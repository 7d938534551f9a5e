"""Champion model replication: the peer region's MLflow holds the same champions, so it can serve them.

`replicate_champions` copies, from one MLflow tracking/registry URI to a peer's, every model version that a
serving alias points at (`champion` and the per-tenant `champion_<tenant_id>`): the version's artifacts (the
whole model directory, re-logged under a run of the peer's `shironzi-dr-replicas` experiment), the registered
model and version with their descriptions and tags, and the aliases. It is idempotent: a copied version carries
the tag `shironzi.replica_of` = `<name>/<version>`, so a second run copies no artifact twice and only moves
aliases that moved at the source. Other versions (challengers, archived ones) are not copied.

The kernel does not import `models/`, so the alias names are restated here (`models.common.CHAMPION`,
`models.tracking.TENANT_CHAMPION_PREFIX`); mlflow is imported on use only.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shironzi.errors import InvalidInputError, ServiceUnavailableError
from shironzi.mlflow_client import mlflow_client
from shironzi.observability import stage

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
TENANT_CHAMPION_PREFIX = "champion_"
REPLICA_TAG = "shironzi.replica_of"
REPLICA_EXPERIMENT = "shironzi-dr-replicas"


@dataclass(frozen=True)
class ReplicatedAlias:
    model: str
    alias: str
    source_version: str
    peer_version: str
    copied: bool  # False: the version was already on the peer


@dataclass
class ReplicationReport:
    source: str
    peer: str
    models: list[ReplicatedAlias] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def versions_copied(self) -> int:
        return len({(m.model, m.source_version) for m in self.models if m.copied})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "versions_copied": self.versions_copied}


def is_serving_alias(alias: str) -> bool:
    return alias == CHAMPION or alias.startswith(TENANT_CHAMPION_PREFIX)


def _client(uri: str) -> MlflowClient:
    if not uri or not isinstance(uri, str):
        raise InvalidInputError("an MLflow tracking URI is required")
    return mlflow_client(uri)


def _peer_artifact_location(peer_uri: str) -> str | None:
    """Artifacts of an embedded (SQLite) peer go beside its database; a server keeps its own store."""
    if peer_uri.startswith("sqlite:///"):
        return (Path(peer_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def _replica_experiment(peer: MlflowClient, peer_uri: str) -> str:
    found = peer.get_experiment_by_name(REPLICA_EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    return str(peer.create_experiment(REPLICA_EXPERIMENT, artifact_location=_peer_artifact_location(peer_uri)))


def _ensure_registered_model(source: MlflowClient, peer: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    model = source.get_registered_model(name)
    try:
        peer.get_registered_model(name)
    except MlflowException:
        peer.create_registered_model(name, tags=model.tags or None, description=model.description)
        return
    for key, value in (model.tags or {}).items():
        peer.set_registered_model_tag(name, key, value)


def _peer_versions(peer: MlflowClient, name: str) -> dict[str, str]:
    """source version -> peer version, from the replica tags already on the peer."""
    found = {}
    for version in peer.search_model_versions(f"name='{name}'"):
        origin = (version.tags or {}).get(REPLICA_TAG, "")
        if origin.startswith(f"{name}/"):
            found[origin.split("/", 1)[1]] = str(version.version)
    return found


def _copy_version(source: MlflowClient, source_uri: str, peer: MlflowClient, experiment_id: str,
                  name: str, version: str) -> str:
    """Copy one model version's artifacts and metadata to the peer; returns the peer's version number."""
    from mlflow.artifacts import download_artifacts

    original = source.get_model_version(name, version)
    location = source.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="shironzi-model-") as scratch:
        local = download_artifacts(artifact_uri=location, dst_path=scratch, tracking_uri=source_uri)
        run = peer.create_run(experiment_id, run_name=f"{name}-v{version}",
                              tags={REPLICA_TAG: f"{name}/{version}", "shironzi.source_run": original.run_id or ""})
        peer.log_artifacts(run.info.run_id, local, artifact_path="model")
        peer.set_terminated(run.info.run_id)
    tags = {**(original.tags or {}), REPLICA_TAG: f"{name}/{version}"}
    created = peer.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                        tags=tags, description=original.description)
    _wait_ready(peer, name, str(created.version))
    return str(created.version)


def _wait_ready(peer: MlflowClient, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while peer.get_model_version(name, version).status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"peer model {name} v{version} did not become ready within {timeout}s")
        time.sleep(0.1)


def replicate_champions(source_uri: str, peer_uri: str, *, models: list[str] | None = None) -> ReplicationReport:
    """Copy every serving-alias model version (and the aliases) from `source_uri` to `peer_uri`, idempotently."""
    if source_uri == peer_uri:
        raise InvalidInputError("the peer MLflow URI is the source itself")
    report = ReplicationReport(source=source_uri, peer=peer_uri)
    started = time.monotonic()
    with stage("dr.replicate_models", peer=peer_uri) as summary:
        source, peer = _client(source_uri), _client(peer_uri)
        experiment_id: str | None = None
        for registered in source.search_registered_models():
            if models is not None and registered.name not in models:
                continue
            serving = {a: str(v) for a, v in (registered.aliases or {}).items() if is_serving_alias(a)}
            if not serving:
                continue
            name = registered.name
            _ensure_registered_model(source, peer, name)
            copies = _peer_versions(peer, name)
            for alias, version in sorted(serving.items()):
                copied = version not in copies
                if copied:
                    experiment_id = experiment_id or _replica_experiment(peer, peer_uri)
                    copies[version] = _copy_version(source, source_uri, peer, experiment_id, name, version)
                peer.set_registered_model_alias(name, alias, copies[version])
                report.models.append(ReplicatedAlias(name, alias, version, copies[version], copied))
            stale = [a for a in (peer.get_registered_model(name).aliases or {}) if is_serving_alias(a)
                     and a not in serving]
            for alias in stale:  # a champion alias dropped at the source stops serving at the peer too
                peer.delete_registered_model_alias(name, alias)
        report.seconds = time.monotonic() - started
        summary.rows = report.versions_copied
        summary.extra.update(aliases=len(report.models))
    return report
