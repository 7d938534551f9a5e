"""Per-tenant daily data monitors: `_platform/monitoring/tenant_daily`, one row per tenant and event day.

Each row holds what the anomaly detector (`monitoring.detector`) and the tenant's Data health page need:
volume (total and by event type), distinct customers, freshness (the newest event at or before the end of the
day and the hours since it), the share of quarantined records, late arrivals (rows ingested that day for an
event day more than a day old: a backfill), schema drift (properties new or vanished against the trailing
window, per event type) and the null rates of the optional key fields.

Everything is computed across all tenants at once (polars + DuckDB group-bys over one frame per lake group,
no per-tenant Python loop) and written as one scoped overwrite of the date range through the kernel's lake API.

    build_tenant_daily(start=date(2026, 11, 1), end=date(2026, 11, 30))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from shironzi.errors import InvalidInputError
from shironzi.lake import platform_uri
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import polars as pl

ACTOR = "monitoring:tenant_daily"
LOOKBACK_DAYS = 28  # the trailing window of schema drift, and how far back freshness and backfills are seen
LATE_AFTER_DAYS = 1  # a row ingested more than this many days after its event day is a late arrival
COMMON_PROPERTY_SHARE = 0.5  # a property "vanishes" only if it was on at least this share of its event type
NULLABLE_KEY_FIELDS = ("amount", "currency")
EVENT_COLUMNS = ("tenant_id", "customer_id", "event_type", "event_time", "event_date", "ingested_at", "amount",
                 "currency", "properties")


def tenant_daily_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return platform_uri(settings.resolved_lake_uri, "monitoring", "tenant_daily")


def check_range(start: date, end: date) -> None:
    if not isinstance(start, date) or not isinstance(end, date):
        raise InvalidInputError("start and end must be dates")
    if end < start:
        raise InvalidInputError(f"the end {end} is before the start {start}")


def _day_grid(tenants: pl.Series, start: date, end: date) -> pl.DataFrame:
    import polars as pl

    days = pl.date_range(start, end, "1d", eager=True).alias("event_date")
    return pl.DataFrame(tenants.unique().sort().alias("tenant_id")).join(pl.DataFrame(days), how="cross")


def _freshness(events: pl.DataFrame, tenants: pl.Series, start: date, end: date, now: datetime) -> pl.DataFrame:
    """The newest event at or before the end of each day (carried over silent days) and the hours since it."""
    import polars as pl

    first = min(start, events["event_date"].min() or start) if events.height else start
    newest = events.group_by("tenant_id", "event_date").agg(pl.col("event_time").max().alias("last_event_time"))
    grid = _day_grid(tenants, first, end).join(newest, on=["tenant_id", "event_date"], how="left")
    day_end = (pl.col("event_date").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1))
    capped = pl.min_horizontal(day_end, pl.lit(now).cast(pl.Datetime("us", "UTC")))
    return (
        grid.sort("tenant_id", "event_date")
        .with_columns(pl.col("last_event_time").forward_fill().over("tenant_id"))
        .with_columns(((capped - pl.col("last_event_time")).dt.total_seconds() / 3600.0).clip(0.0)
                      .alias("hours_since_last_event"))
        .filter(pl.col("event_date") >= start)
    )


_SCHEMA_SQL = """
WITH keys AS (
    SELECT tenant_id, event_date, event_type, event_type || '.' || key AS property, count(*) AS n
    FROM (SELECT tenant_id, event_date, event_type, unnest(json_keys(properties)) AS key FROM events
          WHERE properties IS NOT NULL AND json_valid(properties) AND json_type(properties) = 'OBJECT')
    GROUP BY ALL
),
types AS (SELECT tenant_id, event_date, event_type, count(*) AS n FROM events GROUP BY ALL),
days AS (SELECT * FROM grid),
trail_keys AS (
    SELECT d.tenant_id, d.event_date, k.event_type, k.property, sum(k.n) AS n
    FROM days d JOIN keys k ON k.tenant_id = d.tenant_id
      AND k.event_date BETWEEN d.event_date - INTERVAL (lookback) DAY AND d.event_date - INTERVAL 1 DAY
    GROUP BY ALL
),
trail_types AS (
    SELECT d.tenant_id, d.event_date, t.event_type, sum(t.n) AS n
    FROM days d JOIN types t ON t.tenant_id = d.tenant_id
      AND t.event_date BETWEEN d.event_date - INTERVAL (lookback) DAY AND d.event_date - INTERVAL 1 DAY
    GROUP BY ALL
),
new_props AS (  -- on today's events of a known event type, never on that type in the trailing window
    SELECT k.tenant_id, k.event_date, k.property
    FROM keys k
    JOIN trail_types tt USING (tenant_id, event_date, event_type)
    ANTI JOIN trail_keys tk USING (tenant_id, event_date, event_type, property)
    WHERE k.event_date BETWEEN (SELECT min(event_date) FROM grid) AND (SELECT max(event_date) FROM grid)
),
vanished_props AS (  -- common on that type in the trailing window, absent from today's events of that type
    SELECT tk.tenant_id, tk.event_date, tk.property
    FROM trail_keys tk
    JOIN trail_types tt USING (tenant_id, event_date, event_type)
    JOIN types t USING (tenant_id, event_date, event_type)
    ANTI JOIN keys k USING (tenant_id, event_date, event_type, property)
    WHERE tk.n >= common * tt.n
)
SELECT tenant_id, event_date, 'new' AS change, list(property ORDER BY property) AS properties
FROM new_props GROUP BY ALL
UNION ALL
SELECT tenant_id, event_date, 'vanished' AS change, list(property ORDER BY property) AS properties
FROM vanished_props GROUP BY ALL
"""


def _schema_drift(events: pl.DataFrame, grid: pl.DataFrame) -> pl.DataFrame:
    """Per tenant-day: the properties new or vanished against the trailing window (`event_type.key` names)."""
    import duckdb
    import polars as pl

    sql = (_SCHEMA_SQL.replace("(lookback)", str(LOOKBACK_DAYS))
           .replace("common *", f"{COMMON_PROPERTY_SHARE} *"))
    con = duckdb.connect()
    try:
        con.register("events", events.select("tenant_id", "event_date", "event_type", "properties").to_arrow())
        con.register("grid", grid.select("tenant_id", "event_date").to_arrow())
        found = pl.from_arrow(con.sql(sql).arrow())
    finally:
        con.close()
    assert isinstance(found, pl.DataFrame)
    wide = {"new": "new_properties", "vanished": "vanished_properties"}
    out = grid.select("tenant_id", "event_date")
    for change, column in wide.items():
        part = found.filter(pl.col("change") == change).select(
            "tenant_id", "event_date", pl.col("properties").cast(pl.List(pl.String)).alias(column))
        out = out.join(part, on=["tenant_id", "event_date"], how="left")
    return out.with_columns(pl.col(c).fill_null(pl.lit([], dtype=pl.List(pl.String))) for c in wide.values())


def compute_tenant_daily(
    events: pl.DataFrame,
    quarantine: pl.DataFrame,
    *,
    start: date,
    end: date,
    now: datetime | None = None,
) -> pl.DataFrame:
    """The tenant_daily rows of [start, end] from bronze `events` (event days from `start - LOOKBACK_DAYS` on,
    so that the trailing window, freshness and backfills are seen) and `quarantine` rows (tenant_id, event_date).

    The tenants are those with an event in the frame: a silent day is a row with `events = 0`.
    """
    import polars as pl

    check_range(start, end)
    now = now or datetime.now(UTC)
    events = events.select(EVENT_COLUMNS)
    tenants = events.get_column("tenant_id")
    grid = _day_grid(tenants, start, end)
    in_range = events.filter(pl.col("event_date").is_between(start, end))
    per_type = (in_range.group_by("tenant_id", "event_date", "event_type").len()  # a JSON object, built in polars
                .sort("event_type")
                .group_by("tenant_id", "event_date", maintain_order=True)
                .agg(pl.format('"{}":{}', pl.col("event_type").str.replace_all(r'["\\]', ""), pl.col("len"))
                     .str.join(",").alias("events_by_type"))
                .with_columns(pl.concat_str(pl.lit("{"), pl.col("events_by_type"), pl.lit("}"))
                              .alias("events_by_type")))
    volume = in_range.group_by("tenant_id", "event_date").agg(
        pl.len().alias("events"),
        pl.col("customer_id").n_unique().alias("distinct_customers"),
        *(pl.col(f).is_null().mean().alias(f"{f}_null_rate") for f in NULLABLE_KEY_FIELDS),
    )
    late = (events.with_columns(pl.col("ingested_at").dt.date().alias("ingest_date"))
            .filter(pl.col("event_date") < pl.col("ingest_date") - pl.duration(days=LATE_AFTER_DAYS))
            .group_by("tenant_id", pl.col("ingest_date").alias("event_date")).len("late_events"))
    quarantined = (quarantine.filter(pl.col("tenant_id").is_not_null())
                   .group_by("tenant_id", "event_date").len("quarantined"))
    fresh = _freshness(events, tenants, start, end, now)
    keys = ["tenant_id", "event_date"]
    frame = (
        grid.join(volume, on=keys, how="left")
        .join(per_type, on=keys, how="left")
        .join(late, on=keys, how="left")
        .join(quarantined, on=keys, how="left")
        .join(fresh, on=keys, how="left")
        .join(_schema_drift(events, grid), on=keys, how="left")
        .with_columns(pl.col("events", "distinct_customers", "late_events", "quarantined").fill_null(0)
                      .cast(pl.Int64))
    )
    return frame.with_columns(
        pl.col("events_by_type").fill_null("{}"),
        (pl.col("quarantined") / (pl.col("events") + pl.col("quarantined"))).fill_nan(0.0).fill_null(0.0)
        .alias("quarantined_share"),
        (pl.col("new_properties").list.len() + pl.col("vanished_properties").list.len()).cast(pl.Int64)
        .alias("schema_changes"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("computed_at"),
    ).select(TENANT_DAILY_COLUMNS).sort(keys)


TENANT_DAILY_COLUMNS = (
    "tenant_id", "event_date", "events", "events_by_type", "distinct_customers", "last_event_time",
    "hours_since_last_event", "quarantined", "quarantined_share", "late_events", "new_properties",
    "vanished_properties", "schema_changes", "amount_null_rate", "currency_null_rate", "computed_at",
)


@dataclass
class TenantDailyResult:
    """What one build wrote: rows, tenants, the table version and the lake tables it read."""

    start: date
    end: date
    rows: int = 0
    tenants: int = 0
    version: int | None = None
    inputs: list[tuple[str, int]] = field(default_factory=list)


def _lake_uris(settings: Settings) -> tuple[list[str], list[str]]:
    """Every bronze events table (pooled per region, and each dedicated tenant's) and every quarantine table."""
    from shironzi.lake import table_uri
    from shironzi.lake.groups import region_groups
    from shironzi.tenancy import get_registry

    regions = sorted({info.region for info in get_registry(settings).tenant_directory(fresh=True).values()})
    lake = settings.resolved_lake_uri
    bronze = [g.table_uri(lake, layer="bronze", table="events") for r in regions for g in region_groups(r, settings)]
    quarantine = [table_uri(lake, layer="quarantine", table="events", region=r) for r in regions]
    return bronze, quarantine


def _read(uris: Sequence[str], columns: Sequence[str], since: date, until: date, settings: Settings,
          inputs: list[tuple[str, int]]) -> pl.DataFrame:
    """One date-pruned read per table (a lake group, never a tenant), concatenated."""
    import polars as pl

    from shironzi.lake import read_polars, table_exists, table_version

    opts = settings.storage_options or None
    parts = []
    for uri in uris:
        if not table_exists(uri, storage_options=opts):
            continue
        inputs.append((uri, table_version(uri, storage_options=opts)))
        parts.append(read_polars(uri, columns=list(columns), storage_options=opts,
                                 filters=[("event_date", ">=", since), ("event_date", "<=", until)]))
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


def build_tenant_daily(
    *, start: date, end: date, settings: Settings | None = None, now: datetime | None = None
) -> TenantDailyResult:
    """Compute tenant_daily for [start, end] from every bronze and quarantine table and replace that date range
    of `_platform/monitoring/tenant_daily` in one commit (re-running a range replaces it: idempotent)."""
    import polars as pl

    from shironzi.audit import record_table_write
    from shironzi.lake import overwrite
    from shironzi.observability import stage

    settings = settings or get_settings()
    check_range(start, end)
    result = TenantDailyResult(start=start, end=end)
    with stage("monitoring:tenant_daily", start=str(start), end=str(end)) as summary:
        since = start - timedelta(days=LOOKBACK_DAYS)
        bronze, quarantine_uris = _lake_uris(settings)
        events = _read(bronze, EVENT_COLUMNS, since, end, settings, result.inputs)
        quarantine = _read(quarantine_uris, ("tenant_id", "event_date"), start, end, settings, result.inputs)
        if events.is_empty():
            summary.extra["tenants"] = 0
            return result
        if quarantine.is_empty():
            quarantine = pl.DataFrame(schema={"tenant_id": pl.String, "event_date": pl.Date})
        frame = compute_tenant_daily(events, quarantine, start=start, end=end, now=now)
        uri = tenant_daily_uri(settings)
        commit = overwrite(uri, frame.to_arrow(), partition_by="event_date",
                           predicate=[("event_date", ">=", start), ("event_date", "<=", end)],
                           storage_options=settings.storage_options or None)
        record_table_write(ACTOR, uri, commit.version, frame.height, inputs=result.inputs,
                           operation="tenant_daily")
        result.rows, result.version = frame.height, commit.version
        result.tenants = frame.get_column("tenant_id").n_unique()
        summary.rows = result.rows
        summary.extra.update(tenants=result.tenants, version=commit.version)
    return result
