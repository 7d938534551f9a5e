"""The prediction tables: their schemas, where they live, and the slice-replacing writes that audit them.

`predictions/churn_scores` (partitioned by score_date) and `predictions/forecasts` (partitioned by
generated_date) live beside the tenant's other tables (pooled per region, or under a dedicated tenant's
root). Re-scoring a date replaces exactly that (tenant, date) slice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from shironzi.audit.log import record_table_write
from shironzi.lake import delete, overwrite, table_exists, table_version
from shironzi.lake.groups import LakeGroup
from shironzi.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

CHURN_SCORES_TABLE = "churn_scores"
FORECASTS_TABLE = "forecasts"


def churn_scores_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("tenant_id", pa.string()), ("customer_id", pa.string()), ("score_date", pa.date32()),
        ("churn_probability", pa.float64()), ("risk_band", pa.string()), ("top_reasons", pa.string()),
        ("model_name", pa.string()), ("model_version", pa.string()),
        ("feature_timestamp", pa.timestamp("us", tz="UTC")), ("scored_at", pa.timestamp("us", tz="UTC")),
    ])


def forecasts_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("tenant_id", pa.string()), ("kpi", pa.string()), ("forecast_date", pa.date32()), ("horizon_day", pa.int32()),
        ("yhat", pa.float64()), ("yhat_lower", pa.float64()), ("yhat_upper", pa.float64()),
        ("model_name", pa.string()), ("model_version", pa.string()), ("generated_date", pa.date32()),
        ("generated_at", pa.timestamp("us", tz="UTC")),
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
        group: LakeGroup,
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


def predictions_uri(group: LakeGroup, table: str, settings: Settings) -> str:
    return group.uri(settings, layer="predictions", table=table)


def replace_slice(uri: str, rows: pa.Table, *, partition: str, day: date, tenant_ids: Sequence[str],
                  settings: Settings) -> int | None:
    """Replace the (tenant_ids, day) slice of a predictions table with `rows`; returns the new version."""
    opts = settings.storage_options or None
    predicate = [(partition, "=", day), ("tenant_id", "in", list(tenant_ids))]
    if rows.num_rows:
        return overwrite(uri, rows, partition_by=partition, predicate=predicate, storage_options=opts).version
    if table_exists(uri, storage_options=opts):
        delete(uri, predicate, storage_options=opts)
        return table_version(uri, storage_options=opts)
    return None
