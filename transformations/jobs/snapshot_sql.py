"""A generic Spark job: register bronze events and snapshot dates as temp views, run a chain of SQL base
views, and append each output query to its Delta table.

The feature store supplies the SQL (its definitions); this module owns only the Spark mechanics, so it
imports nothing above the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

from shironzi.errors import InvalidInputError, TransformationError
from shironzi.lake.leases import table_lease

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession


IN_LIST_TENANTS = 500  # more tenants than this are selected by a semi join, not an IN list (`load_events`)


@dataclass(frozen=True)
class SqlOutput:
    """One query of the job and the Delta table its rows are appended to."""

    name: str
    sql: str
    target_uri: str
    columns: tuple[str, ...]
    """The exact columns the query must return (checked before anything is written)."""


@dataclass(frozen=True)
class OutputResult:
    name: str
    target_uri: str
    rows: int
    version: int | None


def spark_path(uri: str) -> str:
    from transformations.spark import spark_path as _path

    return _path(uri)


def load_events(
    spark: SparkSession,
    bronze_uris: Sequence[str],
    *,
    tenant_ids: Sequence[str],
    until: date | None = None,
) -> DataFrame:
    """The union of bronze event tables, limited to `tenant_ids` (and event_date <= `until`).

    Up to IN_LIST_TENANTS tenants are an `IN` list (its literals prune files by their statistics); more are a
    semi join with a table of the ids: the engine re-evaluates a long literal list for every row it scans (100,000
    tenants' ids took 133 s against 0.4 s for the join on the same 1M events)."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    if not bronze_uris:
        raise InvalidInputError("no bronze table to read")
    if not tenant_ids:
        raise InvalidInputError("no tenant to read events for")
    wanted = sorted(set(tenant_ids))
    chosen = (spark.createDataFrame(pa.table({"tenant_id": pa.array(wanted, pa.string())}))
              if len(wanted) > IN_LIST_TENANTS else None)
    frame: DataFrame | None = None
    for uri in bronze_uris:
        part = spark.read.format("delta").load(spark_path(uri))
        part = (part.where(F.col("tenant_id").isin(wanted)) if chosen is None
                else part.join(chosen, "tenant_id", "left_semi"))
        if until is not None:
            part = part.where(F.col("event_date") <= F.lit(until))
        part = part.select("tenant_id", "customer_id", "event_id", "event_type", "event_time", "event_date", "amount")
        frame = part if frame is None else frame.unionByName(part)
    assert frame is not None
    return frame


def tenant_event_bounds(
    spark: SparkSession, bronze_uris: Sequence[str], *, tenant_ids: Sequence[str]
) -> dict[str, tuple[date, date]]:
    """tenant_id -> (first, last) event_date in bronze, for the tenants that have events."""
    from pyspark.sql import functions as F

    events = load_events(spark, bronze_uris, tenant_ids=tenant_ids)
    rows = (events.groupBy("tenant_id")
            .agg(F.min("event_date").alias("first"), F.max("event_date").alias("last"))
            .toArrow())
    return {t: (f, last) for t, f, last in zip(rows.column("tenant_id").to_pylist(),
                                               rows.column("first").to_pylist(),
                                               rows.column("last").to_pylist(), strict=True)}


def _rows_written(target_uri: str, before: int | None) -> tuple[int, int | None]:
    """Rows appended since version `before`, from the Delta log (Spark's writer returns nothing)."""
    from shironzi.lake import history, table_exists

    if not table_exists(target_uri):
        return 0, None
    rows = 0
    entries = history(target_uri)
    for entry in entries:
        if before is not None and entry["version"] <= before:
            break
        metrics = entry.get("operationMetrics") or {}
        rows += int(metrics.get("numOutputRows", 0) or 0)
    return rows, int(entries[0]["version"])


def run_snapshot_sql(
    spark: SparkSession,
    *,
    bronze_uris: Sequence[str],
    tenant_ids: Sequence[str],
    snapshots: pa.Table,
    base_views: Sequence[tuple[str, str]],
    outputs: Sequence[SqlOutput],
    mode: Literal["append", "overwrite"] = "append",
) -> list[OutputResult]:
    """Register `events` and `snapshots`, then the base views in order, then write every output to Delta.

    `snapshots` holds (tenant_id, snapshot_date, feature_timestamp); events are read up to its last date.
    Each output is checked against its declared columns before it is written, so a bad definition
    writes nothing.
    """
    from shironzi.lake import table_exists, table_version

    if snapshots.num_rows == 0:
        return [OutputResult(o.name, o.target_uri, 0, None) for o in outputs]
    import pyarrow.compute as pc

    until = pc.max(snapshots.column("snapshot_date")).as_py()
    load_events(spark, bronze_uris, tenant_ids=tenant_ids, until=until).createOrReplaceTempView("events")
    spark.createDataFrame(snapshots).createOrReplaceTempView("snapshots")
    try:
        for name, sql in base_views:
            spark.sql(sql).createOrReplaceTempView(name)
        queries = [(output, spark.sql(output.sql)) for output in outputs]
        returned = [(output, frame, tuple(frame.columns)) for output, frame in queries]
    except Exception as exc:  # Spark Connect analysis errors have no common base worth importing
        raise TransformationError(f"Spark SQL failed to analyse: {exc}") from exc
    for output, _, columns in returned:
        if columns != output.columns:
            raise TransformationError(
                f"{output.name}: the query returns {list(columns)}, expected {list(output.columns)}",
                output=output.name,
            )
    results: list[OutputResult] = []
    for output, frame in queries:
        before = table_version(output.target_uri) if table_exists(output.target_uri) else None
        try:
            with table_lease(output.target_uri):  # an erasure's vacuum waits for this commit (shironzi.lake.leases)
                frame.write.format("delta").mode(mode).save(spark_path(output.target_uri))
        except Exception as exc:
            raise TransformationError(f"{output.name}: Spark write to {output.target_uri} failed: {exc}",
                                      output=output.name) from exc
        rows, version = _rows_written(output.target_uri, before)
        results.append(OutputResult(output.name, output.target_uri, rows, version))
    return results
