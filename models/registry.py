"""The MLflow registry side: tracking URI, experiments, aliases, promotion gates and rollback.

Registered models `shironzi-churn` and `shironzi-trend` carry the aliases `champion` and `challenger`; a churn
tenant with a dedicated model also has `champion_<tenant_id>` (absent: the tenant is served by `champion`).
Every champion move is recorded in the registered model's `champion_history` tag (so `rollback` restores
the previous champion aliases) and as a durable audit event.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.common import CHALLENGER, CHAMPION, CHURN_MODEL, MODEL_NAMES, TREND_MODEL
from shironzi.errors import InvalidInputError, InvalidStateError, ModelNotFoundError
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_TAG = "champion_history"
HISTORY_KEEP = 20
TENANT_CHAMPION_PREFIX = "champion_"
TENANT_CHALLENGER_PREFIX = "challenger_"
AUDIT_ACTOR = "models"


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
    """Point mlflow at our tracking/registry URI (creating the embedded directory) and return a client."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGED_MODEL_WARNINGS", "false")
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = settings or get_settings()
    uri = tracking_uri(settings)
    if _embedded(settings):
        (settings.home / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """The experiment id of `name`, created with the embedded artifact root when missing."""
    settings = settings or get_settings()
    client = configure_mlflow(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_root(settings)))


def _check_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise InvalidInputError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return name


def _never_used(settings: Settings) -> bool:
    """The embedded registry database does not exist yet (so nothing is registered; skip creating it)."""
    return _embedded(settings) and not (settings.home / "mlflow" / "mlflow.db").exists()


def aliases(name: str, *, settings: Settings | None = None) -> dict[str, str]:
    """alias -> version of a registered model (empty when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    _check_name(name)
    if _never_used(settings):
        return {}
    client = configure_mlflow(settings)
    try:
        model = client.get_registered_model(_check_name(name))
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


# -- promotion ------------------------------------------------------------------------------------------
@dataclass
class PromotionDecision:
    """The outcome of a promotion gate (or a rollback)."""

    name: str
    promoted: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    tenant_aliases: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "promoted": self.promoted, "reason": self.reason,
            "champion_version": self.champion_version, "challenger_version": self.challenger_version,
            "champion_metrics": self.champion_metrics, "challenger_metrics": self.challenger_metrics,
            "tenant_aliases": self.tenant_aliases,
        }


@dataclass(frozen=True)
class HoldoutScores:
    """A model's figures on one holdout: the primary metric and the same metric per tenant-size bucket."""

    primary: float
    buckets: dict[str, float]
    higher_is_better: bool
    metric: str


def _evaluate(name: str, version: str, holdout_run_id: str, settings: Settings) -> HoldoutScores:
    if name == CHURN_MODEL:
        from models.churn.train import evaluate_version_on_holdout
    else:
        from models.trend.train import evaluate_version_on_holdout  # type: ignore[assignment]
    return evaluate_version_on_holdout(version, holdout_run_id, settings=settings)


def _history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    model = client.get_registered_model(name)
    raw = model.tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def _set_champion_aliases(client: MlflowClient, name: str, wanted: Mapping[str, str | None]) -> None:
    for alias, version in wanted.items():
        if version is None:
            with contextlib.suppress(Exception):  # already absent
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, str(version))


def _audit(action: str, name: str, details: Mapping[str, Any]) -> None:
    from shironzi.audit.log import audit_admin_action
    from shironzi.tenancy import TenantContext

    ctx = TenantContext.admin(actor=AUDIT_ACTOR, purpose=f"model registry: {action}")
    audit_admin_action(ctx, action, tenant_id=None, resource=f"model:{name}", details=dict(details))


def _record_move(client: MlflowClient, name: str, before: Mapping[str, str]) -> None:
    history = _history(client, name)
    history.append(dict(before))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_KEEP:]))


def _gate(challenger: HoldoutScores, champion: HoldoutScores, margin: float, tolerance: float) -> tuple[bool, str]:
    sign = 1.0 if challenger.higher_is_better else -1.0
    gain = sign * (challenger.primary - champion.primary)
    if not math.isfinite(challenger.primary):
        return False, f"challenger has no {challenger.metric} on the holdout"
    if gain < margin:
        return False, (f"challenger {challenger.metric} {challenger.primary:.4f} does not beat champion "
                       f"{champion.primary:.4f} by the margin {margin:g}")
    for bucket, value in sorted(champion.buckets.items()):
        mine = challenger.buckets.get(bucket)
        if mine is None or not math.isfinite(mine):
            continue
        if sign * (mine - value) < -tolerance:
            return False, (f"challenger regresses on the {bucket} tenant bucket: {challenger.metric} {mine:.4f} "
                           f"vs champion {value:.4f} (tolerance {tolerance:g})")
    return True, (f"challenger {challenger.metric} {challenger.primary:.4f} beats champion {champion.primary:.4f} "
                  f"by {gain:.4f} with no bucket regression")


def promote_if_better(name: str, *, margin: float | None = None, settings: Settings | None = None) -> PromotionDecision:
    """Move `champion` to the `challenger` version when it beats the champion on the challenger's holdout by
    `margin` (default: settings.model_promotion_margin) and regresses on no tenant-size bucket. The churn
    model's dedicated tenant challengers follow the global decision. Audited either way."""
    from shironzi.observability import stage

    settings = settings or get_settings()
    margin = settings.model_promotion_margin if margin is None else float(margin)
    if margin < 0:
        raise InvalidInputError("margin must be >= 0")
    client = configure_mlflow(settings)
    with stage("models:promote", model=_check_name(name)) as summary:
        found = aliases(name, settings=settings)
        challenger = found.get(CHALLENGER)
        champion = found.get(CHAMPION)
        if challenger is None:
            raise InvalidStateError(f"{name} has no challenger to promote: train one first (shironzi models train)")
        decision = PromotionDecision(name, False, "", champion, challenger)
        holdout_run = version_run_id(name, challenger, settings=settings)
        mine = _evaluate(name, challenger, holdout_run, settings)
        decision.challenger_metrics = {mine.metric: mine.primary, **{f"{mine.metric}_bucket_{b}": v
                                                                     for b, v in mine.buckets.items()}}
        if champion == challenger:
            decision.reason = f"version {challenger} is already the champion"
        elif champion is None:
            decision.promoted, decision.reason = True, "no champion yet: the challenger becomes champion"
        else:
            theirs = _evaluate(name, champion, holdout_run, settings)
            decision.champion_metrics = {theirs.metric: theirs.primary, **{f"{theirs.metric}_bucket_{b}": v
                                                                           for b, v in theirs.buckets.items()}}
            decision.promoted, decision.reason = _gate(mine, theirs, margin, settings.model_bucket_tolerance)
        if decision.promoted:
            wanted: dict[str, str | None] = {CHAMPION: challenger}
            # Dedicated tenant models trained with this challenger replace the tenants' previous ones;
            # tenants without one fall back to the global champion.
            for alias in champion_aliases(found):
                if alias != CHAMPION:
                    wanted[alias] = None
            for alias, version in found.items():
                if alias.startswith(TENANT_CHALLENGER_PREFIX):
                    tenant_id = alias[len(TENANT_CHALLENGER_PREFIX):]
                    if version_run_parent(client, name, version) == holdout_run:
                        wanted[tenant_champion_alias(tenant_id)] = version
            _record_move(client, name, champion_aliases(found))
            _set_champion_aliases(client, name, wanted)
            decision.champion_version = challenger
            decision.tenant_aliases = {a: v for a, v in wanted.items() if a != CHAMPION}
        _audit("model_promotion" if decision.promoted else "model_promotion_refused", name, {
            **decision.as_dict(), "previous_champion": champion, "margin": margin,
        })
        summary.extra.update(promoted=decision.promoted, champion=decision.champion_version, challenger=challenger)
    return decision


def version_run_parent(client: MlflowClient, name: str, version: str) -> str | None:
    """The global training run a dedicated tenant model was trained with (its `parent_run_id` tag)."""
    found = client.get_model_version(name, str(version))
    return found.tags.get("parent_run_id")


def rollback(name: str, *, settings: Settings | None = None) -> PromotionDecision:
    """Restore the champion aliases as they were before the last promotion (audited)."""
    from shironzi.observability import stage

    settings = settings or get_settings()
    with stage("models:rollback", model=_check_name(name)) as summary:
        found = aliases(name, settings=settings)
        client = configure_mlflow(settings) if found else None
        if not found or client is None:
            raise ModelNotFoundError(f"{name} is not registered yet: nothing to roll back")
        history = _history(client, name)
        if not history or CHAMPION not in history[-1]:
            raise InvalidStateError(f"{name} has no previous champion to roll back to")
        previous = history.pop()
        current = champion_aliases(found)
        wanted: dict[str, str | None] = {alias: None for alias in current}
        wanted.update(previous)
        _set_champion_aliases(client, name, wanted)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        decision = PromotionDecision(
            name, True, f"champion rolled back from version {current.get(CHAMPION)} to {previous[CHAMPION]}",
            previous[CHAMPION], current.get(CHAMPION),
            tenant_aliases={a: v for a, v in wanted.items() if a != CHAMPION},
        )
        _audit("model_rollback", name, {**decision.as_dict(), "restored": previous, "replaced": current})
        summary.extra.update(champion=previous[CHAMPION], replaced=current.get(CHAMPION))
    return decision


def list_models(*, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered Shironzi model version with its aliases, run and key metrics (newest first)."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    if _never_used(settings):
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
