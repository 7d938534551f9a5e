"""The usage table, `_platform/usage`: one row per tenant and UTC day, written by `collect_usage` (the
`shironzi usage collect` command and the nightly `lake_maintenance` DAG).

Columns (the schema other components read; keep it flat): `tenant_id`, `day`, then the metrics:

- `events_landed`: bronze rows ingested that day (`ingested_at`), after dedup: what the tenant landed;
- `bytes_<layer>` for bronze, silver, gold, features, predictions and `bytes_total`: the bytes the tenant
  stored at collection time, from the Delta logs' add actions. A dedicated table's bytes are its tenant's.
  In a pooled table a file whose statistics hold one tenant (files are clustered by `tenant_id`) is that
  tenant's; the bytes of mixed files are apportioned by the tenant's rows in them (largest remainder, so the
  tenants' bytes add up to the table's exactly);
- `api_requests` and `api_<group>` per route group (`api_requests.ROUTE_GROUPS`);
- `compute_seconds` and `compute_seconds_<group>` (`stage_log.COMPUTE_GROUPS`): the seconds of the day's
  recorded stages; a stage run for one tenant (a dedicated dbt build) is that tenant's, the others are
  apportioned by the tenants' shares of the bronze rows;
- `collected_at`.

Everything is computed for all tenants at once: one add-action read per table, one `tenant_id` column read per
pooled table with mixed files, one date-pruned read per bronze table; never a query per tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shironzi.audit import record_table_write
from shironzi.errors import InvalidInputError
from shironzi.lake.delta import add_actions, overwrite, read_polars, table_exists, table_version
from shironzi.lake.discovery import discover_tables
from shironzi.lake.groups import region_groups
from shironzi.lake.paths import platform_uri
from shironzi.metering.api_requests import ROUTE_GROUPS, read_api_requests
from shironzi.metering.stage_log import COMPUTE_GROUPS, flush_stage_runs, stage_runs_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry

if TYPE_CHECKING:
    import polars as pl

ACTOR = "metering:usage"
METERED_LAYERS: tuple[str, ...] = ("bronze", "silver", "gold", "features", "predictions")
USAGE_COLUMNS: tuple[str, ...] = (
    "tenant_id", "day", "events_landed", *(f"bytes_{layer}" for layer in METERED_LAYERS), "bytes_total",
    "api_requests", *(f"api_{group}" for group in ROUTE_GROUPS),
    "compute_seconds", *(f"compute_seconds_{group}" for group in COMPUTE_GROUPS), "collected_at",
)
MAX_RANGE_DAYS = 366


def usage_uri(settings: Settings | None = None) -> str:
    return platform_uri((settings or get_settings()).resolved_lake_uri, "usage")


def check_range(start: date, end: date) -> None:
    if not isinstance(start, date) or not isinstance(end, date):
        raise InvalidInputError("from and to must be dates (YYYY-MM-DD)")
    if end < start:
        raise InvalidInputError(f"the end {end} is before the start {start}")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInputError(f"a usage range spans at most {MAX_RANGE_DAYS} days")


# --------------------------------------------------------------------------------------------- storage


def apportion(total: int, weights: pl.Series) -> pl.Series:
    """Split the integer `total` in proportion to `weights`; the parts add up to `total` exactly."""
    import polars as pl

    weight_sum = int(weights.sum() or 0)
    if total == 0 or weight_sum == 0:
        return pl.Series([0] * len(weights), dtype=pl.Int64)
    exact = weights.cast(pl.Float64) * (total / weight_sum)
    floor = exact.floor().cast(pl.Int64)
    left = total - int(floor.sum())
    order = (exact - floor).arg_sort(descending=True)
    bonus = pl.Series([0] * len(weights), dtype=pl.Int64).scatter(order[:left], 1)
    return floor + bonus


def table_bytes_by_tenant(uri: str, *, tenant_id: str | None, settings: Settings) -> pl.DataFrame:
    """One table's bytes and rows per tenant (tenant_id, bytes, rows), from its add actions; see the module
    docstring for how a pooled table's mixed files are apportioned."""
    import polars as pl


    opts = settings.storage_options or None
    files = pl.from_arrow(add_actions(uri, storage_options=opts))
    assert isinstance(files, pl.DataFrame)
    empty = pl.DataFrame(schema={"tenant_id": pl.String, "bytes": pl.Int64, "rows": pl.Int64})
    if files.is_empty():
        return empty
    if tenant_id is not None:
        return pl.DataFrame({"tenant_id": [tenant_id], "bytes": [int(files["size_bytes"].sum())],
                             "rows": [int(files["num_records"].sum())]})
    if "min.tenant_id" in files.columns and "max.tenant_id" in files.columns:
        single = files.filter(pl.col("min.tenant_id") == pl.col("max.tenant_id"))
        mixed = files.filter(~(pl.col("min.tenant_id") == pl.col("max.tenant_id")).fill_null(False))
    else:
        single, mixed = files.clear(), files
    exact = (single.group_by(pl.col("min.tenant_id").alias("tenant_id"))
             .agg(pl.col("size_bytes").sum().cast(pl.Int64).alias("bytes"),
                  pl.col("num_records").sum().cast(pl.Int64).alias("rows")))
    if mixed.is_empty():
        return exact
    # rows of each tenant in the mixed files = its rows in the table - its rows in its own files
    counts = read_polars(uri, columns=["tenant_id"], storage_options=opts).group_by("tenant_id").len("all_rows")
    in_mixed = (counts.join(exact.select("tenant_id", "rows"), on="tenant_id", how="left")
                .with_columns((pl.col("all_rows") - pl.col("rows").fill_null(0)).alias("mixed_rows"))
                .filter(pl.col("mixed_rows") > 0).sort("tenant_id"))
    shared = in_mixed.select(
        "tenant_id",
        apportion(int(mixed["size_bytes"].sum()), in_mixed["mixed_rows"]).alias("bytes"),
        pl.col("mixed_rows").cast(pl.Int64).alias("rows"))
    return (pl.concat([exact, shared]).group_by("tenant_id")
            .agg(pl.col("bytes").sum(), pl.col("rows").sum()))


def storage_by_tenant(settings: Settings, inputs: list[tuple[str, int]]) -> pl.DataFrame:
    """Bytes and rows per tenant and metered layer over every table of the lake (tenant_id, layer, bytes, rows)."""
    import polars as pl


    parts = []
    opts = settings.storage_options or None
    for table in discover_tables(settings.resolved_lake_uri, include_platform=False):
        if table.layer not in METERED_LAYERS:
            continue
        inputs.append((table.uri, table_version(table.uri, storage_options=opts)))
        part = table_bytes_by_tenant(table.uri, tenant_id=table.tenant_id, settings=settings)
        parts.append(part.with_columns(pl.lit(table.layer).alias("layer")))
    if not parts:
        return pl.DataFrame(schema={"tenant_id": pl.String, "bytes": pl.Int64, "rows": pl.Int64,
                                    "layer": pl.String})
    return pl.concat(parts).group_by("tenant_id", "layer").agg(pl.col("bytes").sum(), pl.col("rows").sum())


# ------------------------------------------------------------------------------------------ the inputs


def events_landed(day: date, settings: Settings, inputs: list[tuple[str, int]]) -> pl.DataFrame:
    """Bronze rows ingested on `day` per tenant (tenant_id, events_landed): one read per bronze table."""
    import polars as pl


    opts = settings.storage_options or None
    since = datetime(day.year, day.month, day.day, tzinfo=UTC)
    regions = sorted({info.region for info in get_registry(settings).tenant_directory(fresh=True).values()})
    parts = []
    for region in regions:
        for group in region_groups(region, settings):
            uri = group.uri(settings, layer="bronze", table="events")
            if not table_exists(uri, storage_options=opts):
                continue
            inputs.append((uri, table_version(uri, storage_options=opts)))
            parts.append(read_polars(uri, columns=["tenant_id"], storage_options=opts,
                                     filters=[("ingested_at", ">=", since),
                                              ("ingested_at", "<", since + timedelta(days=1))]))
    if not parts:
        return pl.DataFrame(schema={"tenant_id": pl.String, "events_landed": pl.Int64})
    return pl.concat(parts).group_by("tenant_id").len("events_landed").cast({"events_landed": pl.Int64})


def read_stage_runs(day: date, settings: Settings) -> pl.DataFrame:
    """The day's recorded stage runs (stage, compute_group, tenant_id, seconds)."""
    import polars as pl


    uri = stage_runs_uri(settings)
    opts = settings.storage_options or None
    if not table_exists(uri, storage_options=opts):
        return pl.DataFrame(schema={"compute_group": pl.String, "tenant_id": pl.String, "seconds": pl.Float64})
    return read_polars(uri, columns=["compute_group", "tenant_id", "seconds"], storage_options=opts,
                       filters=[("day", "=", day)])


def compute_by_tenant(runs: pl.DataFrame, bronze_rows: pl.DataFrame) -> pl.DataFrame:
    """Seconds per tenant and compute group: a tenant's own stage runs, plus the shared runs apportioned by
    its share of `bronze_rows` (tenant_id, rows)."""
    import polars as pl

    own = (runs.filter(pl.col("tenant_id").is_not_null())
           .group_by("tenant_id", "compute_group").agg(pl.col("seconds").sum()))
    shared_seconds = runs.filter(pl.col("tenant_id").is_null()).group_by("compute_group").agg(pl.col("seconds").sum())
    total_rows = int(bronze_rows["rows"].sum() or 0) if bronze_rows.height else 0
    if total_rows and shared_seconds.height:
        shared = (bronze_rows.select("tenant_id", (pl.col("rows") / total_rows).alias("share"))
                  .join(shared_seconds, how="cross")
                  .select("tenant_id", "compute_group", (pl.col("seconds") * pl.col("share")).alias("seconds")))
        own = pl.concat([own, shared])
    return own.group_by("tenant_id", "compute_group").agg(pl.col("seconds").sum())


# ------------------------------------------------------------------------------------------- the table


def compute_usage(
    *,
    tenants: list[str],
    day: date,
    landed: pl.DataFrame,
    storage: pl.DataFrame,
    api: pl.DataFrame,
    compute: pl.DataFrame,
    now: datetime | None = None,
) -> pl.DataFrame:
    """The usage rows of `day`: one per tenant (a tenant with nothing that day gets a row of zeros)."""
    import polars as pl

    frame = pl.DataFrame({"tenant_id": sorted(set(tenants))}, schema={"tenant_id": pl.String})
    frame = frame.with_columns(pl.lit(day).alias("day"))

    def wide(part: pl.DataFrame, on: str, value: str, names: tuple[str, ...], prefix: str) -> pl.DataFrame:
        out = frame.select("tenant_id")
        for name in names:
            column = (part.filter(pl.col(on) == name).group_by("tenant_id")
                      .agg(pl.col(value).sum().alias(f"{prefix}{name}")))
            out = out.join(column, on="tenant_id", how="left")
        return out

    frame = (frame.join(landed, on="tenant_id", how="left")
             .join(wide(storage, "layer", "bytes", METERED_LAYERS, "bytes_"), on="tenant_id", how="left")
             .join(wide(api, "route_group", "requests", ROUTE_GROUPS, "api_"), on="tenant_id", how="left")
             .join(wide(compute, "compute_group", "seconds", COMPUTE_GROUPS, "compute_seconds_"), on="tenant_id",
                   how="left"))
    ints = ["events_landed", *(f"bytes_{la}" for la in METERED_LAYERS), *(f"api_{g}" for g in ROUTE_GROUPS)]
    floats = [f"compute_seconds_{g}" for g in COMPUTE_GROUPS]
    frame = frame.with_columns(pl.col(ints).fill_null(0).cast(pl.Int64), pl.col(floats).fill_null(0.0)
                               .cast(pl.Float64))
    return frame.with_columns(
        pl.sum_horizontal(f"bytes_{la}" for la in METERED_LAYERS).cast(pl.Int64).alias("bytes_total"),
        pl.sum_horizontal(f"api_{g}" for g in ROUTE_GROUPS).cast(pl.Int64).alias("api_requests"),
        pl.sum_horizontal(floats).alias("compute_seconds"),
        pl.lit(now or datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("collected_at"),
    ).select(USAGE_COLUMNS)


@dataclass
class UsageResult:
    """What one collection wrote: the day, rows (tenants), the table version and the tables it read."""

    day: date
    rows: int = 0
    version: int | None = None
    inputs: list[tuple[str, int]] = field(default_factory=list)


def collect_usage(*, day: date, settings: Settings | None = None, now: datetime | None = None) -> UsageResult:
    """Meter `day` for every tenant and replace that day of `_platform/usage` in one commit (idempotent)."""
    import polars as pl


    settings = settings or get_settings()
    if not isinstance(day, date):
        raise InvalidInputError("the day must be a date (YYYY-MM-DD)")
    result = UsageResult(day=day)
    with stage("usage:collect", day=str(day)) as summary:
        flush_stage_runs(settings)
        tenants = list(get_registry(settings).tenant_directory(fresh=True))
        storage = storage_by_tenant(settings, result.inputs)
        bronze_rows = storage.filter(pl.col("layer") == "bronze").select("tenant_id", "rows")
        frame = compute_usage(
            tenants=tenants, day=day, landed=events_landed(day, settings, result.inputs), storage=storage,
            api=read_api_requests(day, settings), compute=compute_by_tenant(read_stage_runs(day, settings),
                                                                            bronze_rows), now=now)
        uri = usage_uri(settings)
        commit = overwrite(uri, frame.to_arrow(), partition_by="day", predicate=[("day", "=", day)],
                           storage_options=settings.storage_options or None)
        record_table_write(ACTOR, uri, commit.version, frame.height, inputs=result.inputs, operation="usage_collect")
        result.rows, result.version = frame.height, commit.version
        summary.rows = frame.height
        summary.table_version = commit.version
    return result


def read_usage(
    *, start: date, end: date, tenant_id: str | None = None, settings: Settings | None = None
) -> pl.DataFrame:
    """The usage rows of [start, end], of one tenant or all (partition-pruned by day; empty before the first
    collection)."""
    import polars as pl


    settings = settings or get_settings()
    check_range(start, end)
    uri = usage_uri(settings)
    opts = settings.storage_options or None
    if not table_exists(uri, storage_options=opts):
        return pl.DataFrame(schema=usage_schema())
    filters: list[Any] = [("day", ">=", start), ("day", "<=", end)]
    return read_polars(uri, storage_options=opts, filters=filters, tenant_id=tenant_id).select(USAGE_COLUMNS) \
        .sort("day", "tenant_id")


def usage_schema() -> dict[str, Any]:
    import polars as pl

    types: dict[str, Any] = {"tenant_id": pl.String, "day": pl.Date, "collected_at": pl.Datetime("us", "UTC")}
    return {c: types.get(c, pl.Float64 if c.startswith("compute_seconds") else pl.Int64) for c in USAGE_COLUMNS}


def ensure_usage_table(settings: Settings | None = None) -> str:
    """Create `_platform/usage` empty (with its schema) when no day was metered yet: dbt reads it as a source."""
    import polars as pl

    settings = settings or get_settings()
    uri = usage_uri(settings)
    opts = settings.storage_options or None
    if not table_exists(uri, storage_options=opts):
        try:
            overwrite(uri, pl.DataFrame(schema=usage_schema()).to_arrow(), partition_by="day", storage_options=opts)
        except Exception:
            if not table_exists(uri, storage_options=opts):  # another process creating it at once is fine
                raise
    return uri
