"""The per-tenant anomaly detector over `tenant_daily`: a robust seasonal baseline learned per tenant.

For each tenant and day, in log space (y = log1p(events)):

* **weekday seasonality**: the baseline is the median of the same weekday over the previous `weeks` weeks;
* **trend**: each of those past values is moved along the tenant's recent slope (the change of its 7-day
  rolling median over four weeks), so a growing tenant is not "spiking" every week;
* **score**: the residual divided by a robust spread: the median absolute residual of the tenant's previous
  28 days (x 1.4826, a MAD), floored by the Poisson noise of the expected count, so a quiet tenant's natural
  noise is not an anomaly and one past incident does not widen the band (medians ignore it).

Kinds: `silent` (no events where several were expected), `volume_spike`, `volume_drop` (|score| over the
threshold and a material ratio), `schema_change` (a property vanished or renamed: the onset day only),
`late_backfill` (late-arriving rows far above the tenant's usual stragglers).

Everything is one polars lazy query over the tenants x days frame: window expressions `.over("tenant_id")`,
no Python loop over tenants, so 100,000 tenants cost one frame's worth of columnar work.

    anomalies = detect(daily)                # tenant_id, event_date, kind, score, expected, observed
    build_anomalies(start=..., end=...)      # tenant_daily -> _platform/monitoring/anomalies
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from shironzi.errors import InvalidInputError
from shironzi.lake import platform_uri
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import polars as pl

ACTOR = "monitoring:detector"
KINDS: tuple[str, ...] = ("silent", "volume_spike", "volume_drop", "schema_change", "late_backfill")
REQUIRED_COLUMNS = ("tenant_id", "event_date", "events", "late_events", "new_properties", "vanished_properties")
ANOMALY_COLUMNS = ("tenant_id", "event_date", "kind", "score", "expected", "observed")
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's knobs (the defaults are what benchmarks/anomaly_detection.py measures)."""

    weeks: int = 6  # same-weekday history of the seasonal baseline
    spread_days: int = 28  # trailing residuals the MAD is taken over
    threshold: float = 4.5  # |score| that makes a volume anomaly (chosen on seed 1; the benchmark reports seed 0)
    spike_ratio: float = 2.0  # and the observed/expected ratio it must also pass
    drop_ratio: float = 0.75
    drop_run_days: int = 3  # the longest run of low days whose joint score counts
    run_day_threshold: float = 2.0  # each day of such a run must score at least this low
    silent_expected: float = 5.0  # a silent day is flagged when at least this many events were expected
    backfill_min_rows: int = 10
    backfill_share: float = 0.05  # late rows must also be this share of a usual day
    min_history_days: int = 49  # the seasonal baseline needs its `weeks` of same-weekday history first

    def __post_init__(self) -> None:
        if self.weeks < 2 or self.spread_days < 7 or self.threshold <= 0:
            raise InvalidInputError("weeks must be >= 2, spread_days >= 7 and threshold > 0")


def anomalies_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return platform_uri(settings.resolved_lake_uri, "monitoring", "anomalies")


def _complete_grid(daily: pl.LazyFrame) -> pl.LazyFrame:
    """Every tenant on every day of the frame's range (a missing tenant-day is a day with no events), so that
    `shift(7)` within a tenant is exactly one week."""
    import polars as pl

    bounds = daily.select(pl.col("event_date").min().alias("lo"), pl.col("event_date").max().alias("hi"))
    days = bounds.select(pl.date_ranges("lo", "hi").alias("event_date")).explode("event_date")
    grid = daily.select("tenant_id").unique().join(days, how="cross")
    return grid.join(daily, on=["tenant_id", "event_date"], how="left").with_columns(
        pl.col("events", "late_events").fill_null(0),
        pl.col("new_properties", "vanished_properties").fill_null(pl.lit([], dtype=pl.List(pl.String))),
    )


def detect_lazy(daily: pl.LazyFrame, config: DetectorConfig | None = None) -> pl.LazyFrame:
    """The anomaly query over a complete tenant_daily-shaped grid (every tenant on every day of the range, as
    `_complete_grid` makes it): one lazy plan for all tenants."""
    import polars as pl

    config = config or DetectorConfig()
    # The grid is complete, so a window over the whole sorted column is a window within each tenant once the
    # rows whose window would reach into the neighbouring tenant are masked by their position (`_age`, `_left`):
    # plain column passes, no group-by per window. Same-weekday history: the rows sorted by weekday.
    age, left = pl.col("_age"), pl.col("_left")

    def lag(expr: pl.Expr, k: int) -> pl.Expr:
        return pl.when(age >= k).then(expr.shift(k))

    def trailing_median(expr: pl.Expr, window: int, position: pl.Expr = age) -> pl.Expr:  # the days before this
        return pl.when(position >= window).then(expr.shift(1).rolling_median(window_size=window))

    y = pl.col("_y")
    days = pl.col("event_date").n_unique()
    centred = pl.when((age >= 3) & (left >= 3)).then(y.rolling_mean(window_size=7, center=True))
    # weekday shape: the median, over the previous `weeks` same weekdays, of the value minus its centred week mean
    season = trailing_median(pl.col("_dev"), config.weeks, position=age // 7)
    # level: the median of the last 7 de-seasonalised days; trend: its change over two weeks, carried forward
    slope = ((pl.col("_level") - lag(pl.col("_level"), 14)) / 14.0).clip(-0.05, 0.05)
    ratio = (pl.col("events") + 1.0) / (pl.col("expected") + 1.0)
    ready = age >= config.min_history_days
    # A drop may last days: a day is in a drop when it, or a run of up to `drop_run_days` low days holding it,
    # is jointly significant (the summed scores / sqrt(run)): a halved small tenant is seen over 2-3 days.
    low = (pl.col("events") > 0) & (ratio <= config.drop_ratio) & (pl.col("_score") <= -config.run_day_threshold)
    low_score = pl.when(low).then(-pl.col("_score"))
    run_scores = []
    for run in range(1, config.drop_run_days + 1):
        ending_here = sum((lag(low_score, k) for k in range(run)), pl.lit(0.0)) / (run ** 0.5)
        for ahead in range(run):  # the runs that hold this day end `ahead` days later
            run_scores.append(pl.when(left >= ahead).then(ending_here.shift(-ahead)))
    drop_score = pl.max_horizontal(run_scores).fill_null(0.0)
    vanished, new = pl.col("vanished_properties").list.len(), pl.col("new_properties").list.len()
    late_ratio = pl.col("late_events") / (pl.col("_late_usual") + 1.0)
    # kind -> (condition, score, expected, observed)
    rules = {
        "silent": ((pl.col("events") == 0) & (pl.col("expected") >= config.silent_expected),
                   pl.col("expected"), pl.col("expected"), pl.col("events")),
        "volume_spike": ((pl.col("_score") >= config.threshold) & (ratio >= config.spike_ratio),
                         pl.col("_score"), pl.col("expected"), pl.col("events")),
        "volume_drop": (pl.col("_drop_score") >= config.threshold, pl.col("_drop_score"), pl.col("expected"),
                        pl.col("events")),
        "schema_change": ((vanished > 0) & (lag(vanished, 1).fill_null(0) == 0),
                          vanished + new, pl.lit(0.0), vanished + new),
        "late_backfill": ((pl.col("late_events") >= config.backfill_min_rows)
                          & (pl.col("late_events") >= config.backfill_share * pl.col("expected"))
                          & (late_ratio >= 5.0), late_ratio, pl.col("_late_usual"), pl.col("late_events")),
    }
    scored = (
        daily.with_columns(pl.col("events").cast(pl.Float64).log1p().alias("_y"),
                           pl.col("event_date").dt.weekday().alias("_weekday"))
        .sort("tenant_id", "event_date")
        .with_columns((pl.int_range(pl.len()) % days).alias("_age"))
        .with_columns((days - 1 - age).alias("_left"))
        .with_columns((y - centred).alias("_dev"))
        .sort("tenant_id", "_weekday", "event_date")
        .with_columns(season.fill_null(0.0).alias("_season"))
        .sort("tenant_id", "event_date")
        .with_columns(trailing_median(y - pl.col("_season"), 7).alias("_level"))
        .with_columns((pl.col("_level") + slope.fill_null(0.0) * 4.0 + pl.col("_season")).alias("_base"))
        .with_columns((y - pl.col("_base")).alias("_resid"),
                      (pl.col("_base").exp() - 1.0).clip(0.0).alias("expected"))
        .with_columns(
            (trailing_median(pl.col("_resid").abs(), config.spread_days) * MAD_TO_SIGMA).alias("_mad"),
            # the sd of log1p(Poisson(l)) is about sqrt(l)/(l+1): a quiet tenant's noise is wide in log space
            (pl.col("expected").sqrt() / (pl.col("expected") + 1.0)).alias("_poisson"),
            trailing_median(pl.col("late_events").cast(pl.Float64), config.spread_days).fill_null(0.0)
            .alias("_late_usual"),
        )
        .with_columns((pl.col("_resid") / pl.max_horizontal(pl.col("_mad").fill_null(0.0), pl.col("_poisson"),
                                                            pl.lit(0.05))).alias("_score"))
        .with_columns(drop_score.alias("_drop_score"))
        .with_columns(*((ready & condition).fill_null(False).alias(f"_is_{kind}")
                        for kind, (condition, _, _, _) in rules.items()))
        .filter(pl.any_horizontal(f"_is_{kind}" for kind in rules))
    )
    # anomalies are rare: the rows with any hit are few, and the plan computes them once for all the kinds
    return pl.concat([
        scored.filter(f"_is_{kind}").select(
            "tenant_id", "event_date", pl.lit(kind).alias("kind"), score.cast(pl.Float64).alias("score"),
            expected.cast(pl.Float64).alias("expected"), observed.cast(pl.Float64).alias("observed"))
        for kind, (_, score, expected, observed) in rules.items()
    ]).sort("tenant_id", "event_date", "kind")


def detect(daily: pl.DataFrame, config: DetectorConfig | None = None) -> pl.DataFrame:
    """Anomalies of every tenant-day in `daily` (tenant_id, event_date, kind, score, expected, observed)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in daily.columns]
    if missing:
        raise InvalidInputError(f"the daily frame lacks columns {missing}; expected the tenant_daily shape")
    frame = daily.lazy().select(REQUIRED_COLUMNS)
    if daily.height != daily["tenant_id"].n_unique() * daily["event_date"].n_unique():
        frame = _complete_grid(frame)
    return detect_lazy(frame, config).collect()


@dataclass
class AnomalyResult:
    """What one detection run stored: anomalies and tenants, by kind, and the table version."""

    start: date
    end: date
    anomalies: int = 0
    tenants: int = 0
    version: int | None = None
    by_kind: dict[str, int] = field(default_factory=dict)


def build_anomalies(
    *, start: date, end: date, settings: Settings | None = None, config: DetectorConfig | None = None
) -> AnomalyResult:
    """Run the detector over tenant_daily (with the history it needs before `start`) and replace the anomalies
    of [start, end] in `_platform/monitoring/anomalies` in one commit."""
    import polars as pl

    from monitoring.tenant_daily import check_range, tenant_daily_uri
    from shironzi.audit import record_table_write
    from shironzi.lake import delete, overwrite, read_polars, table_exists, table_version
    from shironzi.observability import stage

    settings = settings or get_settings()
    config = config or DetectorConfig()
    check_range(start, end)
    result = AnomalyResult(start=start, end=end)
    opts = settings.storage_options or None
    source = tenant_daily_uri(settings)
    with stage("monitoring:anomalies", start=str(start), end=str(end)) as summary:
        if not table_exists(source, storage_options=opts):
            raise InvalidInputError(f"no tenant_daily table at {source}: run `shironzi monitor tenants daily` first")
        since = start - timedelta(days=7 * config.weeks + 28 + 7)
        daily = read_polars(source, columns=list(REQUIRED_COLUMNS), storage_options=opts,
                            filters=[("event_date", ">=", since), ("event_date", "<=", end)])
        found = detect(daily, config).filter(pl.col("event_date").is_between(start, end)).with_columns(
            pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("detected_at"))
        uri = anomalies_uri(settings)
        window = [("event_date", ">=", start), ("event_date", "<=", end)]
        if found.height:
            result.version = overwrite(uri, found.to_arrow(), partition_by="event_date", predicate=window,
                                       storage_options=opts).version
        elif table_exists(uri, storage_options=opts):  # nothing found: clear what an earlier run stored
            delete(uri, window, storage_options=opts)
            result.version = table_version(uri, storage_options=opts)
        if result.version is not None:
            record_table_write(ACTOR, uri, result.version, found.height, operation="detect_anomalies",
                               inputs=[(source, table_version(source, storage_options=opts))])
        result.anomalies = found.height
        result.tenants = found.get_column("tenant_id").n_unique()
        result.by_kind = dict(found.group_by("kind").len().sort("kind").iter_rows())
        summary.rows = found.height
        summary.extra.update(tenants=result.tenants, **result.by_kind)
    return result


# --- intraday freshness: a source that stopped sending -----------------------------------------------------
def overdue_sources(
    deliveries: pl.DataFrame, *, now: datetime, false_alarm_odds: float = 1e-4, max_missed: int = 5
) -> pl.DataFrame:
    """Sources (tenant_id, source) whose next delivery is overdue at `now`, learned from their own history.

    `deliveries` holds one row per arrival (tenant_id, source, delivered_at: a landed batch or an hour with
    events). Per source: the cadence is the median gap between arrivals, the miss rate the share of gaps
    longer than 1.5 cadences; the source may skip k deliveries in a row, the smallest k with
    miss_rate^k <= false_alarm_odds (at most `max_missed`), before it is overdue. An hourly sender that
    rarely skips is flagged about two hours after its expected next delivery. Columns: tenant_id, source,
    last_delivery, cadence_hours, overdue_at, hours_overdue.
    """
    import math

    import polars as pl

    past = deliveries.filter(pl.col("delivered_at") <= now).sort("tenant_id", "source", "delivered_at")
    gaps = past.with_columns(
        (pl.col("delivered_at").diff().over("tenant_id", "source").dt.total_seconds() / 3600.0).alias("gap"))
    stats = gaps.group_by("tenant_id", "source").agg(
        pl.col("delivered_at").max().alias("last_delivery"),
        pl.col("gap").drop_nulls().median().alias("cadence_hours"),
        pl.col("gap").drop_nulls().alias("_gaps"),
    ).filter(pl.col("cadence_hours").is_not_null() & (pl.col("cadence_hours") > 0))
    miss_rate = (pl.col("_gaps").list.eval(pl.element() > 1.5 * pl.element().median()).list.mean()
                 .clip(1e-6, 0.99))
    allowed = ((math.log(false_alarm_odds) / miss_rate.log()).ceil().clip(1, max_missed))
    return (
        stats.with_columns(allowed.alias("_allowed"))
        .with_columns((pl.col("last_delivery") + pl.duration(
            seconds=(pl.col("cadence_hours") * (pl.col("_allowed") + 1.25) * 3600).cast(pl.Int64))).alias("overdue_at"))
        .filter(pl.col("overdue_at") <= now)
        .with_columns(((pl.lit(now) - pl.col("overdue_at")).dt.total_seconds() / 3600.0).alias("hours_overdue"))
        .select("tenant_id", "source", "last_delivery", "cadence_hours", "overdue_at", "hours_overdue")
        .sort("tenant_id", "source")
    )


def read_anomalies(
    *, start: date, end: date, tenant_id: str | None = None, settings: Settings | None = None
) -> pl.DataFrame:
    """The stored anomalies of [start, end] (one tenant's only when `tenant_id` is given), newest first."""
    import polars as pl

    from monitoring.tenant_daily import check_range
    from shironzi.lake import read_polars, table_exists

    settings = settings or get_settings()
    check_range(start, end)
    uri, opts = anomalies_uri(settings), settings.storage_options or None
    if not table_exists(uri, storage_options=opts):
        return pl.DataFrame(schema={c: pl.String for c in ANOMALY_COLUMNS})
    found = read_polars(uri, tenant_id=tenant_id, storage_options=opts,
                        filters=[("event_date", ">=", start), ("event_date", "<=", end)])
    return found.select(ANOMALY_COLUMNS).sort(["event_date", "score"], descending=[True, True])
