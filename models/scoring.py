"""Batch scoring: churn scores and trend forecasts into the `predictions` layer.

    score_churn(score_date=date(2026, 11, 1))     # tenants with churn_prediction on
    write_forecasts()                             # tenants with trend_forecast on

`predictions/churn_scores` (partitioned by score_date) and `predictions/forecasts` (partitioned by
generated_date) live beside the tenant's other tables (pooled per region, or under a dedicated tenant's
root). Re-scoring a date replaces exactly that (tenant, date) slice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from shironzi.errors import InvalidInputError
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import pyarrow as pa

CHURN_SCORES_TABLE = "churn_scores"
FORECASTS_TABLE = "forecasts"
ACTOR = "models:score"


def churn_scores_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("tenant_id", pa.string()), ("customer_id", pa.string()), ("score_date", pa.date32()),
        ("churn_probability", pa.float64()), ("risk_band", pa.string()), ("top_reasons", pa.string()),
        ("model_name", pa.string()), ("model_version", pa.string()),
        ("feature_timestamp", pa.timestamp("us", tz="UTC")), ("scored_at", pa.timestamp("us", tz="UTC")),
    ])


@dataclass
class ScoreResult:
    """What a scoring run wrote: rows, the tenants scored, and each predictions table's new version."""

    rows: int = 0
    tenants: list[str] = field(default_factory=list)
    skipped_tenants: list[str] = field(default_factory=list)
    table_versions: dict[str, int] = field(default_factory=dict)
    score_date: date | None = None

    @property
    def table_version(self) -> int | None:
        """The version of the (single) predictions table written, or the newest when several were."""
        return max(self.table_versions.values()) if self.table_versions else None

    def write(
        self,
        group: Any,
        table: str,
        rows: pa.Table,
        *,
        partition: str,
        day: date,
        settings: Settings,
        actor: str,
        operation: str,
        inputs: Sequence[tuple[str, int]],
        models: Iterable[tuple[str, str | int]],
    ) -> None:
        """Replace the group's slice of predictions `table` for `day` with `rows` and audit the write with the
        feature/gold inputs and the model versions that produced it."""
        from shironzi.audit.log import record_table_write

        uri = predictions_uri(group, table, settings)
        version = replace_slice(uri, rows, partition=partition, day=day, tenant_ids=group.tenant_ids,
                                settings=settings)
        if version is not None:
            self.table_versions[uri] = version
            record_table_write(actor, uri, version, rows.num_rows, operation=operation, inputs=inputs,
                               models=models)
        self.rows += rows.num_rows

    def summarise(self, summary: Any) -> None:
        """Rows and table versions onto a stage's summary line."""
        summary.rows = self.rows
        summary.table_version = {u.rsplit("/lake/", 1)[-1]: v for u, v in self.table_versions.items()} or None


def eligible_tenants(module: str = "churn_prediction", *, settings: Settings | None = None) -> list[str]:
    """Active tenants with `module` on: the only ones scored or forecast."""
    from shironzi.tenancy import get_registry

    return sorted(get_registry(settings).tenants_with_module(module))


def _chosen(module: str, tenant_ids: Sequence[str] | None, settings: Settings) -> tuple[list[str], list[str]]:
    if isinstance(tenant_ids, str):
        raise InvalidInputError("tenant_ids must be a list of tenant ids, not one string")
    allowed = eligible_tenants(module, settings=settings)
    if tenant_ids is None:
        return allowed, []
    wanted = sorted(set(tenant_ids))
    return [t for t in wanted if t in allowed], [t for t in wanted if t not in allowed]


def predictions_uri(group: Any, table: str, settings: Settings) -> str:
    from shironzi.lake import table_uri

    return table_uri(settings.resolved_lake_uri, layer="predictions", table=table, region=group.region,
                     placement=group.placement, tenant_id=group.tenant_id)


def replace_slice(uri: str, rows: pa.Table, *, partition: str, day: date, tenant_ids: Sequence[str],
                  settings: Settings) -> int | None:
    """Replace the (tenant_ids, day) slice of a predictions table with `rows`; returns the new version."""
    from shironzi.lake import delete, overwrite, table_exists, table_version

    opts = settings.storage_options or None
    predicate = [(partition, "=", day), ("tenant_id", "in", list(tenant_ids))]
    if rows.num_rows:
        return overwrite(uri, rows, partition_by=partition, predicate=predicate, storage_options=opts).version
    if table_exists(uri, storage_options=opts):
        delete(uri, predicate, storage_options=opts)
        return table_version(uri, storage_options=opts)
    return None


def _latest_customer_snapshots(activity: pa.Table, score_date: date) -> pa.Table:
    """Per (tenant, customer): the newest customer_activity snapshot at or before score_date, within its TTL."""
    import duckdb

    from feature_store.definitions import FEATURE_TIMESTAMP
    from feature_store.offline import feature_timestamp_for
    from feature_store.registry import get_feature_view

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

    from feature_store.offline import lake_groups
    from feature_store.registry import resolve_features
    from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
    from models.common import as_float_matrix, read_feature_inputs
    from models.inference import load_churn_predictor, reasons_json
    from shironzi.observability import stage

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
        predictor = load_churn_predictor(settings=settings)
        scored_at = datetime.now(UTC)
        schema = churn_scores_schema()
        for group in lake_groups(tenants, settings):
            if progress:
                progress(f"{group.region}/{group.placement}: {len(group.tenant_ids)} tenants")
            # Pinned reads: the same feature-table versions feed the spine and the join, and the write records them.
            views = [*resolve_features(predictor.feature_names), "customer_activity"]
            feature_tables, inputs = read_feature_inputs(views, group.tenant_ids, settings=settings,
                                                         allow_missing=True)
            spine = _latest_customer_snapshots(feature_tables["customer_activity"], score_date)
            used: set[tuple[str, str]] = set()
            parts: list[pa.Table] = []
            if spine.num_rows:
                entities = pa.table({"tenant_id": spine.column("tenant_id"), "customer_id": spine.column("customer_id"),
                                     ENTITY_TIMESTAMP: spine.column("feature_timestamp"),
                                     "feature_timestamp": spine.column("feature_timestamp")})
                features = get_training_set(entities, predictor.feature_names, settings=settings,
                                            feature_tables=feature_tables)
                tenant_column = np.asarray(features.column("tenant_id").to_pylist())
                for tenant_id in group.tenant_ids:
                    index = np.flatnonzero(tenant_column == tenant_id)
                    if index.size == 0:
                        continue
                    rows = features.take(pa.array(index))
                    model = predictor.model_for(tenant_id)
                    predictions = predictor.predict_matrix(tenant_id, as_float_matrix(rows, model.feature_names))
                    used.update((p.model_name, p.model_version) for p in predictions)
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
            result.write(group, CHURN_SCORES_TABLE, table, partition="score_date", day=score_date, settings=settings,
                         actor=ACTOR, operation="score_churn", inputs=inputs, models=used)
            result.tenants += sorted(set(table.column("tenant_id").to_pylist()))
        result.summarise(summary)
        summary.extra.update(tenants=len(result.tenants), skipped_tenants=len(skipped), model_version=predictor.version)
    return result


def write_forecasts(
    *,
    settings: Settings | None = None,
    tenant_ids: Sequence[str] | None = None,
    generated_date: date | None = None,
) -> ScoreResult:
    """28-day forecasts of each trend_forecast tenant's KPIs with the trend champion into predictions/forecasts."""
    from models.trend.forecast import write_trend_forecasts

    settings = settings or get_settings()
    tenants, skipped = _chosen("trend_forecast", tenant_ids, settings)
    result = write_trend_forecasts(tenants, settings=settings, generated_date=generated_date)
    result.skipped_tenants = skipped
    return result

