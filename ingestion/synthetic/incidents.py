"""Labelled data incidents for the per-tenant monitors: the oracle of `monitoring.detector`.

An incident plan says which tenant breaks how and when; the labels (one row per tenant and day the detector
should flag) are written beside the churn ground truth (`{SHIRONZI_HOME}/ground_truth/incidents.parquet`),
never into the lake. The kinds:

* `silent`: the tenant's source sends nothing for 1-3 days (labelled: each silent day);
* `volume_spike`: a duplicate flood, every event re-sent 3-8 times under new ids (labelled: the day);
* `volume_drop`: half of the events stop arriving for 1-3 days (labelled: each day);
* `schema_change`: a property is renamed from that day on (labelled: the first day);
* `late_backfill`: 1-3 days of events arrive together a day after the last of them (labelled: the arrival day).

Two ways to apply a plan: `apply_incidents` to simulated events (the lake path: land them and build
tenant_daily), and `simulate_daily_counts` + `apply_incidents_to_daily` straight on a tenants x days frame of
the tenant_daily shape, from the simulator's own laws (tenant sizes, weekly and yearly seasonality, growth),
for year-long benchmarks over thousands of tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ingestion.synthetic.emit import _atomic_write, default_ground_truth_dir
from ingestion.synthetic.laws import tenant_sizes
from ingestion.synthetic.profiles import PROFILES
from shironzi.errors import InvalidInputError

INCIDENT_KINDS: tuple[str, ...] = ("silent", "volume_spike", "volume_drop", "schema_change", "late_backfill")
WARMUP_DAYS = 56  # no incident in the first weeks: a detector needs a history to learn from
RENAMED_PROPERTY = ("order_placed.payment_method", "order_placed.payment_type")  # planted by schema_change
PLAN_SCHEMA = {"tenant_id": pl.String, "kind": pl.String, "first_day": pl.Date, "days": pl.Int32,
               "factor": pl.Float64}


def plan_incidents(
    tenant_ids: Sequence[str],
    *,
    start: date,
    days: int,
    per_tenant: float = 1.0,
    kinds: Sequence[str] = INCIDENT_KINDS,
    seed: int = 0,
) -> pl.DataFrame:
    """About `per_tenant` incidents per tenant (Poisson), kinds drawn evenly, placed after the warm-up and at
    least two weeks apart on one tenant: tenant_id, kind, first_day, days, factor."""
    unknown = set(kinds) - set(INCIDENT_KINDS)
    if unknown:
        raise InvalidInputError(f"unknown incident kind(s) {sorted(unknown)}; known: {', '.join(INCIDENT_KINDS)}")
    usable = days - WARMUP_DAYS - 5
    if usable < 14:
        raise InvalidInputError(f"{days} days leave no room for incidents after a {WARMUP_DAYS}-day warm-up")
    rng = np.random.default_rng([seed, 0x1C1D])
    counts = np.minimum(rng.poisson(per_tenant, size=len(tenant_ids)), usable // 14)
    tenant_of = np.repeat(np.arange(len(tenant_ids)), counts)
    # incidents of one tenant in separate 14-day slots, so two never overlap
    slots = np.concatenate([rng.choice(usable // 14, size=c, replace=False) for c in counts]) if counts.sum() else \
        np.zeros(0, dtype=np.int64)
    offsets = WARMUP_DAYS + slots * 14 + rng.integers(0, 10, size=slots.size)
    kind = np.asarray(list(kinds), dtype=object)[rng.integers(0, len(kinds), size=slots.size)]
    length = np.where(np.isin(kind, ["silent", "volume_drop", "late_backfill"]), rng.integers(1, 4, size=slots.size), 1)
    factor = np.select([kind == "volume_spike", kind == "volume_drop"],
                       [rng.uniform(3.0, 8.0, size=slots.size), np.full(slots.size, 0.5)], 1.0)
    return pl.DataFrame({
        "tenant_id": np.asarray(tenant_ids, dtype=object)[tenant_of].tolist(), "kind": kind.tolist(),
        "first_day": [start + timedelta(days=int(o)) for o in offsets], "days": length.astype(np.int32),
        "factor": factor,
    }, schema=PLAN_SCHEMA).sort("tenant_id", "first_day")


def incident_labels(plan: pl.DataFrame) -> pl.DataFrame:
    """The tenant-days a detector should flag: tenant_id, event_date, kind (see the module docstring)."""
    labelled_days = (pl.when(pl.col("kind").is_in(["silent", "volume_drop"])).then(pl.col("days"))
                     .otherwise(1))
    first = (pl.when(pl.col("kind") == "late_backfill")
             .then(pl.col("first_day") + pl.duration(days=pl.col("days") + 1))
             .otherwise(pl.col("first_day")))
    return (
        plan.with_columns(first.alias("_from"), labelled_days.alias("_n"))
        .with_columns(pl.date_ranges("_from", pl.col("_from") + pl.duration(days=pl.col("_n") - 1)).alias("event_date"))
        .explode("event_date")
        .select("tenant_id", "event_date", "kind")
        .unique(["tenant_id", "event_date"], keep="first")
        .sort("tenant_id", "event_date")
    )


def write_incident_labels(plan: pl.DataFrame, directory: str | Path | None = None) -> Path:
    """`incidents.parquet` (the plan) and `incident_days.parquet` (the labels) beside the churn ground truth."""
    target = Path(directory) if directory is not None else default_ground_truth_dir()
    _atomic_write(target / "incidents.parquet", lambda tmp: plan.write_parquet(tmp))
    _atomic_write(target / "incident_days.parquet", lambda tmp: incident_labels(plan).write_parquet(tmp))
    return target


def _window(plan: pl.DataFrame, kind: str) -> pl.DataFrame:
    """(tenant_id, event_date, factor) for every day an incident of `kind` covers."""
    return (plan.filter(pl.col("kind") == kind)
            .with_columns(pl.date_ranges("first_day", pl.col("first_day") + pl.duration(days=pl.col("days") - 1))
                          .alias("event_date"))
            .explode("event_date").select("tenant_id", "event_date", "factor", "days", "first_day"))


# --- the lake path: events --------------------------------------------------------------------------------
def apply_incidents(events: pl.DataFrame, plan: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """Simulated events (tenant_id, event_id, event_time, properties, ...) with the plan applied, plus an
    `ingested_at` column: when each row arrives (minutes after its event, or the backfill's arrival day)."""
    rng = np.random.default_rng([seed, 0x1C1E])
    events = events.with_columns(pl.col("event_time").dt.date().alias("_day"))
    keys = ["tenant_id", "_day"]

    def covered(kind: str) -> pl.DataFrame:
        return _window(plan, kind).rename({"event_date": "_day"})

    events = events.join(covered("silent").select(keys), on=keys, how="anti")
    dropped = events.join(covered("volume_drop").select(keys), on=keys, how="semi")
    coin = pl.Series(rng.random(dropped.height) < 0.5)
    events = events.join(dropped.filter(coin).select("event_id"), on="event_id", how="anti")
    flood = events.join(covered("volume_spike").select(*keys, "factor"), on=keys, how="inner")
    copies = flood.with_columns((pl.col("factor").round(0).cast(pl.Int64) - 1).alias("_copies")) \
        .with_columns(pl.int_ranges(1, pl.col("_copies") + 1).alias("_copy")).explode("_copy") \
        .drop_nulls("_copy").with_columns(pl.format("{}-dup{}", "event_id", "_copy").alias("event_id")) \
        .drop("factor", "_copies", "_copy")
    events = pl.concat([events, copies], how="vertical_relaxed")
    old, new = (name.split(".", 1)[1] for name in RENAMED_PROPERTY)
    since = (plan.filter(pl.col("kind") == "schema_change").group_by("tenant_id")
             .agg(pl.col("first_day").min().alias("_since")))
    renamed = events.join(since, on="tenant_id", how="left")
    events = renamed.with_columns(
        pl.when(pl.col("_since").is_not_null() & (pl.col("_day") >= pl.col("_since"))
                & (pl.col("event_type") == RENAMED_PROPERTY[0].split(".")[0]))
        .then(pl.col("properties").str.replace(f'"{old}"', f'"{new}"', literal=True))
        .otherwise(pl.col("properties")).alias("properties")).drop("_since")
    late = covered("late_backfill").with_columns(
        (pl.col("first_day") + pl.duration(days=pl.col("days") + 1)).alias("_arrival")).select(*keys, "_arrival")
    delay = pl.duration(minutes=pl.Series(rng.integers(1, 30, size=events.height)))
    arrival = pl.col("_arrival").cast(pl.Datetime("us", "UTC")) + pl.duration(hours=9)
    return (events.join(late, on=keys, how="left")
            .with_columns(pl.when(pl.col("_arrival").is_not_null()).then(arrival)
                          .otherwise(pl.col("event_time") + delay).alias("ingested_at"))
            .drop("_day", "_arrival").sort("event_time"))


# --- the benchmark path: a tenants x days frame of the tenant_daily shape ---------------------------------
def simulate_daily_counts(
    tenant_ids: Sequence[str],
    *,
    start: date,
    days: int,
    customers_per_tenant: int = 3_000,
    seed: int = 0,
) -> pl.DataFrame:
    """Daily event counts per tenant from the simulator's laws: Zipf-like tenant sizes, each industry's weekly
    and yearly seasonality and rates, a per-tenant growth trend, day-to-day over-dispersion and Poisson noise;
    plus the healthy noise a monitor must not flag: a few straggling late rows, quarantined records, and now
    and then a new optional property. Columns as in tenant_daily."""
    rng = np.random.default_rng([seed, 0xDA11])
    n = len(tenant_ids)
    industries = sorted(PROFILES)
    industry = rng.integers(0, len(industries), size=n)
    sizes = tenant_sizes(n, customers_per_tenant * n, zipf_exponent=1.1, rng=rng).astype(float)
    rate = np.asarray([PROFILES[i].activity_rate + PROFILES[i].purchase_rate + PROFILES[i].friction_rate
                       for i in industries])[industry] * 1.25
    growth = np.clip(rng.normal(0.5, 0.7, size=n), -1.5, 2.5)  # per year, as the simulator's signups
    dates = [start + timedelta(days=d) for d in range(days)]
    weekly = np.asarray([PROFILES[i].weekly for i in industries])[industry][:, [d.weekday() for d in dates]]
    yearly = np.asarray([[PROFILES[i].yearly(d) for d in dates] for i in industries])[industry]
    trend = np.exp(np.outer(growth, np.arange(days) / 365.0))
    noise = np.exp(rng.normal(0.0, 0.08, size=(n, days)))
    lam = (sizes * rate)[:, None] * weekly * yearly * trend * noise
    events = rng.poisson(lam)
    late = rng.binomial(events, 0.002)
    quarantined = rng.binomial(events, 0.001)
    new_property = rng.random((n, days)) < 0.003
    frame = pl.DataFrame({
        "tenant_id": np.repeat(np.asarray(tenant_ids, dtype=object), days).tolist(),
        "event_date": pl.Series(dates * n, dtype=pl.Date),
        "events": events.ravel().astype(np.int64),
        "late_events": late.ravel().astype(np.int64),
        "quarantined": quarantined.ravel().astype(np.int64),
        "_new": new_property.ravel(),
    })
    return frame.with_columns(
        pl.when(pl.col("_new")).then(pl.lit(["order_placed.gift_note"])).otherwise(pl.lit([], pl.List(pl.String)))
        .alias("new_properties"),
        pl.lit([], pl.List(pl.String)).alias("vanished_properties"),
    ).drop("_new")


def apply_incidents_to_daily(daily: pl.DataFrame, plan: pl.DataFrame, *, seed: int = 0) -> pl.DataFrame:
    """The daily frame as tenant_daily would show it once the incidents happened (and backfills arrived)."""
    rng = np.random.default_rng([seed, 0x1C1F])
    keys = ["tenant_id", "event_date"]
    frame = daily.with_row_index("_row")
    silent = _window(plan, "silent").select(keys).with_columns(pl.lit(0.0).alias("_silent"))
    spikes = _window(plan, "volume_spike").select(*keys, pl.col("factor").round(0).alias("_spike"))
    drops = _window(plan, "volume_drop").select(*keys, pl.col("factor").alias("_drop"))
    frame = (frame.join(silent, on=keys, how="left").join(spikes, on=keys, how="left")
             .join(drops, on=keys, how="left"))
    kept = rng.binomial(frame["events"].to_numpy(), np.where(frame["_drop"].is_null().to_numpy(), 1.0, 0.5))
    frame = frame.with_columns(pl.Series("events", kept, dtype=pl.Int64)).with_columns(
        (pl.col("events") * pl.col("_spike").fill_null(1.0) * pl.col("_silent").fill_null(1.0)).cast(pl.Int64)
        .alias("events"))
    # backfill: the delayed days keep their events (they did happen), the arrival day counts them as late
    arrivals = (_window(plan, "late_backfill").join(frame.select(*keys, "events"), on=keys, how="left")
                .group_by("tenant_id", (pl.col("first_day") + pl.duration(days=pl.col("days") + 1)).alias("event_date"))
                .agg(pl.col("events").sum().alias("_backfill")))
    frame = frame.join(arrivals, on=keys, how="left").with_columns(
        (pl.col("late_events") + pl.col("_backfill").fill_null(0)).alias("late_events"))
    # a renamed property: new on the first day, the old name missing from then on (until it is no longer common)
    old, new = RENAMED_PROPERTY
    renames = plan.filter(pl.col("kind") == "schema_change")
    onset = renames.select("tenant_id", pl.col("first_day").alias("event_date"), pl.lit(True).alias("_onset"))
    missing = (renames.with_columns(days=14).pipe(_window, "schema_change").select(keys).unique()
               .with_columns(pl.lit(True).alias("_missing")))
    frame = frame.join(onset, on=keys, how="left").join(missing, on=keys, how="left").with_columns(
        pl.when(pl.col("_onset")).then(pl.concat_list(pl.col("new_properties"), pl.lit([new])))
        .otherwise(pl.col("new_properties")).alias("new_properties"),
        pl.when(pl.col("_missing")).then(pl.lit([old])).otherwise(pl.col("vanished_properties"))
        .alias("vanished_properties"),
    )
    return frame.sort("_row").drop("_row", "_silent", "_spike", "_drop", "_backfill", "_onset", "_missing")
