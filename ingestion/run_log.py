"""The ingestion run log: one row per flush with its exact reconciliation (received = landed + quarantined
+ duplicates), under `_platform/ingest/runs`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
import pyarrow as pa

from shironzi.lake.delta import read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:

    pass
SourceKind = Literal["stream", "files", "sql"]
RunStatus = Literal["succeeded", "failed"]

RUN_LOG_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("flush", pa.int64(), nullable=False),
        pa.field("source_kind", pa.string(), nullable=False),
        pa.field("source_name", pa.string(), nullable=False),
        pa.field("worker", pa.string(), nullable=False),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("received", pa.int64(), nullable=False),
        pa.field("landed", pa.int64(), nullable=False),
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("duplicates", pa.int64(), nullable=False),
        pa.field("duplicates_in_batch", pa.int64(), nullable=False),
        pa.field("duplicates_existing", pa.int64(), nullable=False),
        pa.field("recovered", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
        pa.field("table_versions", pa.string(), nullable=False),  # JSON {table uri: version}
        pa.field("positions", pa.string(), nullable=False),  # JSON: offsets per partition, or files
        pa.field("quarantined_by_reason", pa.string(), nullable=False),  # JSON {reason_code: rows}
    ]
)


def run_log_uri(settings: Settings | None = None) -> str:
    """The platform-wide ingestion run log."""
    return platform_uri((settings or get_settings()).resolved_lake_uri, "ingest", "runs")


# ------------------------------------------------------------------------------------ reconciliation


@dataclass
class Reconciliation:
    """Where every received row went. `recovered` rows are part of landed/quarantined: an earlier,
    interrupted attempt committed them and this one found them by their txn."""

    received: int = 0
    landed: int = 0
    quarantined: int = 0
    duplicates_in_batch: int = 0
    duplicates_existing: int = 0
    recovered: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return self.duplicates_in_batch + self.duplicates_existing

    def balanced(self) -> bool:
        """received = landed + quarantined + duplicates, exactly."""
        return self.received == self.landed + self.quarantined + self.duplicates

    def add(self, other: Reconciliation) -> None:
        """Fold another flush into this total."""
        self.received += other.received
        self.landed += other.landed
        self.quarantined += other.quarantined
        self.duplicates_in_batch += other.duplicates_in_batch
        self.duplicates_existing += other.duplicates_existing
        self.recovered += other.recovered
        for code, rows in other.quarantined_by_reason.items():
            self.quarantined_by_reason[code] = self.quarantined_by_reason.get(code, 0) + rows
        self.table_versions.update(other.table_versions)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duplicates": self.duplicates, "balanced": self.balanced()}


def run_log_row(
    *,
    run_id: str,
    flush: int,
    source_kind: SourceKind,
    source_name: str,
    worker: str,
    started_at: datetime,
    counts: Reconciliation,
    status: RunStatus,
    error: str | None = None,
    positions: Mapping[str, Any] | list[Any] | None = None,
) -> pa.Table:
    """One run-log row (a stream flush, or a whole batch run)."""
    row = {
        "run_id": run_id,
        "flush": flush,
        "source_kind": source_kind,
        "source_name": source_name,
        "worker": worker,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "received": counts.received,
        "landed": counts.landed,
        "quarantined": counts.quarantined,
        "duplicates": counts.duplicates,
        "duplicates_in_batch": counts.duplicates_in_batch,
        "duplicates_existing": counts.duplicates_existing,
        "recovered": counts.recovered,
        "status": status,
        "error": error,
        "table_versions": json.dumps(counts.table_versions, sort_keys=True),
        "positions": json.dumps(positions if positions is not None else {}, sort_keys=True, default=str),
        "quarantined_by_reason": json.dumps(counts.quarantined_by_reason, sort_keys=True),
    }
    return pa.Table.from_pylist([row], schema=RUN_LOG_SCHEMA)


def read_run_log(*, run_id: str | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """The run log (optionally one run), oldest first; empty when nothing ran yet."""
    uri = run_log_uri(settings)
    if not table_exists(uri):
        return pl.DataFrame(schema=pl.from_arrow(RUN_LOG_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]
    frame = read_polars(uri, filters=[("run_id", "=", run_id)] if run_id else None)
    return frame.sort("started_at", "flush")


def reconcile_run_log(frame: pl.DataFrame) -> Reconciliation:
    """The total reconciliation of some run-log rows."""
    total = Reconciliation()
    for row in frame.iter_rows(named=True):
        total.add(
            Reconciliation(
                received=row["received"],
                landed=row["landed"],
                quarantined=row["quarantined"],
                duplicates_in_batch=row["duplicates_in_batch"],
                duplicates_existing=row["duplicates_existing"],
                recovered=row["recovered"],
                quarantined_by_reason=json.loads(row["quarantined_by_reason"]),
                table_versions=json.loads(row["table_versions"]),
            )
        )
    return total
