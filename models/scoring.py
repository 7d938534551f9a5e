"""Batch scoring: churn scores and trend forecasts into the `predictions` layer (see `models.predictions`).

    score_churn(score_date=date(2026, 11, 1))     # tenants with churn_prediction on
    write_forecasts()                             # tenants with trend_forecast on
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from feature_store.definitions import FEATURE_TIMESTAMP
from feature_store.offline import feature_table_uris, feature_timestamp_for
from feature_store.registry import get_feature_view, resolve_features
from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
from models.at_risk import at_risk_crossings, at_risk_subscribers, previous_scores
from models.churn.base_features import add_customer_base_features
from models.churn.train import LoadedChurnModel
from models.common import CHAMPION, CHURN_MODEL, as_float_matrix, group_rows, read_feature_inputs
from models.inference import ChurnPredictor, load_churn_predictor, reasons_json
from models.predictions import CHURN_SCORES_TABLE, ScoreResult, churn_scores_schema, predictions_uri
from models.tracking import aliases, configure_mlflow, run_artifact, version_run_id
from models.trend.forecast import write_trend_forecasts
from monitoring.drift import REFERENCE_ARTIFACT, DriftReport, drift_report, write_drift
from shironzi.errors import InvalidInputError, ModelNotFoundError
from shironzi.lake.groups import lake_groups
from shironzi.lake.reads import read_arrow
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry
from shironzi.webhooks.notify import Notification, notify_many

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

ACTOR = "models:score"
RETRAIN_TAG = "retrain_requested"  # on a registered version: its drift flag (JSON: score_date, features)


def eligible_tenants(module: str = "churn_prediction", *, settings: Settings | None = None,
                     among: Sequence[str] | None = None) -> list[str]:
    """Active tenants with `module` on (only those of `among` when given, read by key): the only ones scored or
    forecast."""
    return sorted(get_registry(settings).tenants_with_module(module, among=among))


def scoring_sizes(tenant_ids: Sequence[str], score_date: date, *, settings: Settings) -> dict[str, int]:
    """Per tenant, its customer_activity snapshots in the TTL window of `score_date`: an upper bound of the
    customers `score_churn` scores for it (one read of one column per lake group, whatever the tenant count)."""
    view = get_feature_view("customer_activity")
    until = feature_timestamp_for(score_date)
    window = [(FEATURE_TIMESTAMP, ">=", until - view.ttl), (FEATURE_TIMESTAMP, "<=", until)]
    sizes = dict.fromkeys(tenant_ids, 0)
    for uri in feature_table_uris(view, tenant_ids, settings):
        counts = read_arrow(uri, columns=["tenant_id"], filters=window,
                            storage_options=settings.storage_options or None) \
            .group_by("tenant_id").aggregate([("tenant_id", "count")])
        for tenant_id, count in zip(counts.column("tenant_id").to_pylist(),
                                    counts.column("tenant_id_count").to_pylist(), strict=True):
            if tenant_id in sizes:
                sizes[tenant_id] += count
    return sizes


def scoring_chunks(tenant_ids: Sequence[str], score_date: date, *, max_rows: int, max_tenants: int,
                   settings: Settings) -> list[list[str]]:
    """`tenant_ids` (in id order) packed into chunks of at most `max_rows` rows to score and `max_tenants` tenants:
    a job's chunk count follows its data, not its tenant count (every chunk has a fixed cost: the champions'
    check, a read of each feature table and a commit). A tenant larger than `max_rows` is a chunk of its own."""
    if max_rows < 1 or max_tenants < 1:
        raise InvalidInputError("max_rows and max_tenants must be >= 1")
    sizes = scoring_sizes(tenant_ids, score_date, settings=settings)
    chunks: list[list[str]] = []
    rows = 0
    for tenant_id in sorted(tenant_ids):
        size = sizes[tenant_id]
        if not chunks or len(chunks[-1]) >= max_tenants or (rows + size > max_rows and chunks[-1]):
            chunks.append([])
            rows = 0
        chunks[-1].append(tenant_id)
        rows += size
    return chunks


def _chosen(module: str, tenant_ids: Sequence[str] | None, settings: Settings) -> tuple[list[str], list[str]]:
    if isinstance(tenant_ids, str):
        raise InvalidInputError("tenant_ids must be a list of tenant ids, not one string")
    if tenant_ids is None:
        return eligible_tenants(module, settings=settings), []
    wanted = sorted(set(tenant_ids))
    allowed = set(eligible_tenants(module, settings=settings, among=wanted))
    return [t for t in wanted if t in allowed], [t for t in wanted if t not in allowed]


def _latest_customer_snapshots(activity: pa.Table, score_date: date) -> pa.Table:
    """Per (tenant, customer): the newest customer_activity snapshot at or before score_date, within its TTL."""
    import duckdb

    view = get_feature_view("customer_activity")
    until = feature_timestamp_for(score_date)
    since = until - view.ttl
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("rows", activity.select(["tenant_id", "customer_id", FEATURE_TIMESTAMP]))
        relation = con.sql(
            f"SELECT tenant_id, customer_id, {FEATURE_TIMESTAMP} FROM rows "
            f"WHERE {FEATURE_TIMESTAMP} <= TIMESTAMPTZ '{until.isoformat()}' "
            f"AND {FEATURE_TIMESTAMP} >= TIMESTAMPTZ '{since.isoformat()}' "
            f"QUALIFY row_number() OVER (PARTITION BY tenant_id, customer_id ORDER BY {FEATURE_TIMESTAMP} DESC) = 1 "
            "ORDER BY tenant_id, customer_id")
        return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    finally:
        con.close()


_PREDICTORS: dict[tuple[str, str], ChurnPredictor] = {}  # (model registry, tenant registry) -> loaded champions
_PREDICTORS_LOCK = threading.Lock()


def _scoring_predictor(settings: Settings) -> ChurnPredictor:
    """The churn champions for batch scoring, loaded once per process and model registry, re-read only when the
    champion aliases or the release routing moved: a job's chunks (every mapped task of a process) parse every tenant's
    bands and customer-base fits once, not once per chunk."""
    key = (settings.resolved_mlflow_tracking_uri, settings.resolved_database_url)
    with _PREDICTORS_LOCK:
        cached = _PREDICTORS.get(key)
        if cached is None:
            if len(_PREDICTORS) >= 4:  # a few registries per process at most (tests switch homes)
                _PREDICTORS.pop(next(iter(_PREDICTORS)))
            cached = _PREDICTORS[key] = load_churn_predictor(settings=settings)
            return cached
    cached.refresh_if_changed()
    return cached


def score_churn(
    *,
    settings: Settings | None = None,
    score_date: date | None = None,
    tenant_ids: Sequence[str] | None = None,
    progress: Any = None,
) -> ScoreResult:
    """Score every customer (with a fresh feature snapshot) of the tenants with churn_prediction on.

    `tenant_ids` narrows the run; tenants without the module are skipped even when named.
    """
    import numpy as np
    import pyarrow as pa


    settings = settings or get_settings()
    score_date = score_date or datetime.now(UTC).date()
    if not isinstance(score_date, date):
        raise InvalidInputError(f"score_date must be a date, got {score_date!r}")
    tenants, skipped = _chosen("churn_prediction", tenant_ids, settings)
    result = ScoreResult(skipped_tenants=skipped, score_date=score_date)
    with stage("models:score_churn", score_date=str(score_date)) as summary:
        if not tenants:
            summary.extra["tenants"] = 0
            return result
        predictor = _scoring_predictor(settings)
        listening = at_risk_subscribers(tenants, settings)  # {} when no tenant subscribes: no extra I/O
        crossings: list[Notification] = []
        scored_at = datetime.now(UTC)
        schema = churn_scores_schema()
        drift_rows: list[np.ndarray] = []
        drift_scores: list[np.ndarray] = []
        drift_features: list[str] = []
        for group in lake_groups(tenants, settings):
            if progress:
                progress(f"{group.region}/{group.placement}: {len(group.tenant_ids)} tenants")
            # Pinned reads: the same feature-table versions feed the spine and the join, and the write records them.
            views = [*resolve_features(predictor.feature_names), "customer_activity"]
            feature_tables, inputs = read_feature_inputs(views, group.tenant_ids, settings=settings,
                                                         allow_missing=True, groups=[group])
            spine = _latest_customer_snapshots(feature_tables["customer_activity"], score_date)
            used: set[tuple[str, str]] = set()
            parts: list[pa.Table] = []
            if spine.num_rows:
                entities = pa.table({"tenant_id": spine.column("tenant_id"), "customer_id": spine.column("customer_id"),
                                     ENTITY_TIMESTAMP: spine.column("feature_timestamp"),
                                     "feature_timestamp": spine.column("feature_timestamp")})
                features = get_training_set(entities, predictor.feature_names, settings=settings,
                                            feature_tables=feature_tables)
                # the customer-base model, fitted per tenant on the customer base as of the score date
                base = predictor.model_for(group.tenant_ids[0]).customer_base
                features, _ = add_customer_base_features(features, date_column="feature_timestamp",
                                                         horizons=base.horizons if base else None)
                by_tenant = group_rows(features.column("tenant_id").to_pylist())
                by_model: dict[str, tuple[LoadedChurnModel, list[int]]] = {}  # one XGBoost call per model
                for tenant_id in group.tenant_ids:
                    if (index := by_tenant.get(tenant_id)) is not None:
                        model = predictor.model_for(tenant_id)
                        by_model.setdefault(model.version, (model, []))[1].extend(index)
                for model, index in by_model.values():
                    rows = features.take(pa.array(index))
                    owners = rows.column("tenant_id").to_pylist()
                    matrix = as_float_matrix(rows, model.feature_names)
                    predictions = predictor.predict_rows(model, owners, matrix)
                    if model.version == predictor.version:  # drift is measured for the global champion's rows
                        drift_rows.append(matrix)
                        drift_features = model.feature_names
                        drift_scores.append(np.asarray([p.probability for p in predictions], dtype=np.float64))
                    used.add((CHURN_MODEL, model.version))
                    parts.append(pa.table({
                        "tenant_id": rows.column("tenant_id"), "customer_id": rows.column("customer_id"),
                        "score_date": pa.array([score_date] * rows.num_rows, pa.date32()),
                        "churn_probability": pa.array([p.probability for p in predictions], pa.float64()),
                        "risk_band": pa.array([p.risk_band for p in predictions], pa.string()),
                        "top_reasons": pa.array([reasons_json(p.reasons) for p in predictions], pa.string()),
                        "model_name": pa.array([p.model_name for p in predictions], pa.string()),
                        "model_version": pa.array([p.model_version for p in predictions], pa.string()),
                        "feature_timestamp": rows.column("feature_timestamp").cast(schema.field("feature_timestamp")
                                                                                   .type),
                        "scored_at": pa.array([scored_at] * rows.num_rows, schema.field("scored_at").type),
                    }, schema=schema))
            table = pa.concat_tables(parts) if parts else schema.empty_table()
            if group_listening := {t: v for t, v in listening.items() if t in group.tenant_ids}:
                before = previous_scores(predictions_uri(group, CHURN_SCORES_TABLE, settings), list(group_listening),
                                         score_date, settings)
                crossings += at_risk_crossings(table, before, group_listening, score_date)
            result.write(group, CHURN_SCORES_TABLE, table, partition="score_date", day=score_date, settings=settings,
                         actor=ACTOR, operation="score_churn", inputs=inputs, models=used)
            result.tenants += sorted(set(table.column("tenant_id").to_pylist()))
        result.summarise(summary)
        if crossings:
            notify_many(crossings, settings=settings)
        summary.extra.update(tenants=len(result.tenants), skipped_tenants=len(skipped), model_version=predictor.version,
                             at_risk_notifications=len(crossings))
        if drift_rows:
            report = record_drift(np.concatenate(drift_rows), drift_features, np.concatenate(drift_scores),
                                  model_version=predictor.version, score_date=score_date, settings=settings)
            if report is not None:
                summary.extra.update(score_psi=round(report.score_psi, 4), retrain=report.retrain)
    return result


def record_drift(
    matrix: np.ndarray, feature_names: Sequence[str], scores: np.ndarray, *, model_version: str, score_date: date,
    settings: Settings,
) -> DriftReport | None:
    """PSI of a scoring run against the churn champion's training distribution: logged to the champion's MLflow
    run and to `_platform/monitoring/drift`; PSI > 0.2 on a top-10 feature tags the champion version
    `retrain_requested` (read by `retrain_requested`). None when the version stored no training distribution
    (trained before drift monitoring)."""
    import time

    from mlflow.entities import Metric

    run_id = version_run_id(CHURN_MODEL, model_version, settings=settings)
    try:
        reference = json.loads(run_artifact(run_id, REFERENCE_ARTIFACT, settings=settings).read_text())
    except ModelNotFoundError:
        logging.getLogger(__name__).info("%s version %s stored no training distribution: no drift figures",
                                         CHURN_MODEL, model_version)
        return None
    report = drift_report(reference, matrix, feature_names, scores)
    client = configure_mlflow(settings)
    now = int(time.time() * 1000)
    step = int(score_date.strftime("%Y%m%d"))
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in report.metrics().items()])
    if report.retrain:
        client.set_model_version_tag(CHURN_MODEL, model_version, RETRAIN_TAG,
                                     json.dumps({"score_date": str(score_date), "features": report.flagged}))
    write_drift(report, model_name=CHURN_MODEL, model_version=model_version, run_id=run_id, score_date=score_date,
                settings=settings)
    return report


def retrain_requested(name: str = CHURN_MODEL, *, settings: Settings | None = None) -> dict[str, Any] | None:
    """The drift flag on `name`'s champion version ({score_date, features}), or None when it is not flagged.
    A newly promoted champion starts unflagged."""
    settings = settings or get_settings()
    version = aliases(name, settings=settings).get(CHAMPION)
    if version is None:
        return None
    tags = configure_mlflow(settings).get_model_version(name, version).tags
    return {**json.loads(tags[RETRAIN_TAG]), "version": version} if RETRAIN_TAG in tags else None


def write_forecasts(
    *,
    settings: Settings | None = None,
    tenant_ids: Sequence[str] | None = None,
    generated_date: date | None = None,
) -> ScoreResult:
    """28-day forecasts of each trend_forecast tenant's KPIs with the trend champion into predictions/forecasts."""
    settings = settings or get_settings()
    tenants, skipped = _chosen("trend_forecast", tenant_ids, settings)
    result = write_trend_forecasts(tenants, settings=settings, generated_date=generated_date)
    result.skipped_tenants = skipped
    return result

