"""MLflow plumbing: the tracking/registry URI, experiments, aliases, version look-ups and the version listing.

Registered models `shironzi-churn` and `shironzi-trend` carry the aliases `champion` and `challenger`; a churn
tenant with a dedicated model also has `champion_<tenant_id>` (absent: the tenant is served by `champion`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from models.common import CHAMPION, CHURN_MODEL, MODEL_NAMES, TREND_MODEL
from shironzi.errors import InvalidInputError, ModelNotFoundError, ServiceUnavailableError
from shironzi.mlflow_client import mlflow_client
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

TENANT_CHAMPION_PREFIX = "champion_"
TENANT_CHALLENGER_PREFIX = "challenger_"
SERVER_PROBE_TIMEOUT_SECONDS = 5.0
SERVER_PROBE_VALID_SECONDS = 60.0  # a server that answered is not asked again within this time
_answered: dict[str, float] = {}  # tracking server URL -> monotonic time it last answered


def tracking_uri(settings: Settings | None = None) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded SQLite database under SHIRONZI_HOME/mlflow."""
    settings = settings or get_settings()
    return settings.resolved_mlflow_tracking_uri


def _embedded(settings: Settings) -> bool:
    return settings.mlflow_tracking_uri is None


def artifact_root(settings: Settings) -> str | None:
    """Where new experiments put artifacts: local under home for the embedded default, else the server's."""
    if not _embedded(settings):
        return None
    return (settings.home / "mlflow" / "artifacts").resolve().as_uri()


def configure_mlflow(settings: Settings | None = None) -> MlflowClient:
    """Point mlflow at our tracking/registry URI (creating the embedded directory) and return a client.

    A Spark session whose server has gone is dropped first: MLflow asks the active Spark session for its
    registry URI at every client and run, and against a dead server each ask is ten minutes of retries."""
    settings = settings or get_settings()
    uri = tracking_uri(settings)
    if _embedded(settings):
        (settings.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    else:
        check_tracking_server(uri)
    client = mlflow_client(uri)  # prepares MLflow first: its quiet defaults, no Spark session of a gone server
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client


def check_tracking_server(uri: str) -> None:
    """An http(s) tracking server must accept a connection within seconds: else one ServiceUnavailableError
    (instead of mlflow's minutes of retries ending in a traceback). Databases and local stores are not probed."""
    if not uri.startswith(("http://", "https://")):
        return
    now = time.monotonic()
    if now - _answered.get(uri, float("-inf")) < SERVER_PROBE_VALID_SECONDS:
        return
    import httpx

    parts = urlsplit(uri)
    shown = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")  # no credentials
    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=SERVER_PROBE_TIMEOUT_SECONDS)
    except (httpx.ReadTimeout, httpx.RemoteProtocolError):
        return  # it accepted the connection: up, only busy (a large artifact upload); mlflow's retries apply
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(
            f"the MLflow tracking server at {shown} is unreachable ({type(exc).__name__}): start it, or point "
            "MLFLOW_TRACKING_URI at a running one", service="mlflow"
        ) from exc
    _answered[uri] = time.monotonic()


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """The experiment id of `name`, created with the embedded artifact root when missing."""
    settings = settings or get_settings()
    client = configure_mlflow(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_root(settings)))


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise InvalidInputError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return name


def never_used(settings: Settings) -> bool:
    """The embedded registry database does not exist yet (so nothing is registered; skip creating it)."""
    return _embedded(settings) and not (settings.home / "mlflow" / "mlflow.db").exists()


def aliases(name: str, *, settings: Settings | None = None) -> dict[str, str]:
    """alias -> version of a registered model (empty when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    check_model_name(name)
    if never_used(settings):
        return {}
    client = configure_mlflow(settings)
    try:
        model = client.get_registered_model(check_model_name(name))
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in sorted(model.aliases.items())}


def tenant_champion_alias(tenant_id: str) -> str:
    return f"{TENANT_CHAMPION_PREFIX}{tenant_id}"


def tenant_challenger_alias(tenant_id: str) -> str:
    return f"{TENANT_CHALLENGER_PREFIX}{tenant_id}"


def champion_aliases(found: Mapping[str, str]) -> dict[str, str]:
    """The aliases that decide serving: `champion` and every `champion_<tenant>`."""
    return {a: v for a, v in found.items() if a == CHAMPION or a.startswith(TENANT_CHAMPION_PREFIX)}


def model_version_dir(name: str, version: str, *, settings: Settings | None = None) -> Path:
    """A local directory holding the registered model files of `version` (downloaded when remote)."""
    import mlflow

    configure_mlflow(settings)
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    except MlflowException as exc:
        raise ModelNotFoundError(f"model {name} version {version} is not in the registry: {exc}") from exc


def run_artifact(run_id: str, path: str, *, settings: Settings | None = None) -> Path:
    """A local copy of one run artifact."""
    client = configure_mlflow(settings)
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path))
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(f"run {run_id} has no artifact {path!r}: {exc}") from exc


def version_run_id(name: str, version: str, *, settings: Settings | None = None) -> str:
    client = configure_mlflow(settings)
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ModelNotFoundError(f"model {name} has no version {version}") from exc
    if not found.run_id:
        raise ModelNotFoundError(f"model {name} version {version} has no training run")
    return str(found.run_id)


def version_run_parent(client: MlflowClient, name: str, version: str) -> str | None:
    """The global training run a dedicated tenant model was trained with (its `parent_run_id` tag)."""
    found = client.get_model_version(name, str(version))
    return found.tags.get("parent_run_id")


def list_models(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered Shironzi model version with its aliases, run and key metrics (newest first)."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    if never_used(settings):
        return []
    client = configure_mlflow(settings)
    out: list[dict[str, Any]] = []
    for name in (CHURN_MODEL, TREND_MODEL):
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            continue
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        for found in client.search_model_versions(f"name = '{name}'"):
            metrics: dict[str, float] = {}
            if found.run_id:
                try:
                    metrics = dict(client.get_run(found.run_id).data.metrics)
                except MlflowException:
                    metrics = {}
            out.append({
                "name": name, "version": str(found.version), "aliases": sorted(by_version.get(str(found.version), [])),
                "run_id": found.run_id, "scope": found.tags.get("scope", "global"),
                "tenant_id": found.tags.get("tenant_id"), "created": found.creation_timestamp,
                "metrics": {k: metrics[k] for k in ("auc", "calibration_error", "smape", "baseline_smape",
                                                    "interval_coverage") if k in metrics},
            })
    return sorted(out, key=lambda r: (r["name"], -int(r["version"])))
