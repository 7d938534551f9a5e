"""Anomaly detection quality: the per-tenant detector against two classic baselines, on labelled incidents.

A simulated year of daily counts for `--tenants` tenants, drawn from the simulator's own laws
(`ingestion.synthetic.incidents.simulate_daily_counts`: Zipf tenant sizes, weekly/yearly seasonality, growth,
over-dispersion), with labelled incidents planted by `plan_incidents` (silent source, duplicate flood, volume
halved, property renamed, late backfill). The detector runs on that tenant_daily-shaped frame in one call;
the baselines run on the same frame in the same run:

* static threshold: a day is anomalous when its count is outside +-50 % of the trailing 28-day mean;
* trailing z-score: |count - mean| / sd over the trailing 28 days above 3 (the Elementary-style test).

Both baselines watch the same series as the detector (events and late-arriving rows) and get the same
schema rule (a property vanished), so the comparison is about the statistics, not the inputs. Precision and
recall are counted at tenant-day granularity over the days after the warm-up.

The intraday check: hourly senders deliver every hour (+-10 min jitter, 2 % of deliveries skipped), a share
of them go silent at a random moment; `overdue_sources` is polled every 15 minutes and the delay from the
expected next delivery to the first alert is reported, with the false alarms on healthy senders.

    .venv/bin/python benchmarks/anomaly_detection.py --tenants 2000 --days 365
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks._machine import print_header  # noqa: E402

TRAILING_DAYS = 28


def _trailing(column: str) -> tuple[pl.Expr, pl.Expr]:
    series = pl.col(column).cast(pl.Float64)
    mean = series.shift(1).rolling_mean(window_size=TRAILING_DAYS, min_samples=14).over("tenant_id")
    sd = series.shift(1).rolling_std(window_size=TRAILING_DAYS, min_samples=14).over("tenant_id")
    return mean, sd


def _schema_onset() -> pl.Expr:
    vanished = pl.col("vanished_properties").list.len()
    return (vanished > 0) & (vanished.shift(1).over("tenant_id").fill_null(0) == 0)


def static_threshold(daily: pl.DataFrame) -> pl.DataFrame:
    """Flag a tenant-day whose events or late rows are outside +-50 % of their trailing 28-day mean."""
    flags = []
    for column in ("events", "late_events"):
        mean, _ = _trailing(column)
        value = pl.col(column)
        rule = (value > 1.5 * mean) | (value < 0.5 * mean)
        if column == "late_events":  # stragglers are mostly 0: only a rise, and of at least a few rows
            rule = (value > 1.5 * mean) & (value >= 3)
        flags.append(rule.fill_null(False))
    return daily.sort("tenant_id", "event_date").filter(pl.any_horizontal(*flags) | _schema_onset()) \
        .select("tenant_id", "event_date")


def zscore(daily: pl.DataFrame, limit: float = 3.0) -> pl.DataFrame:
    """Flag a tenant-day whose events or late rows are more than `limit` trailing sds from the trailing mean."""
    flags = []
    for column in ("events", "late_events"):
        mean, sd = _trailing(column)
        flags.append(((pl.col(column) - mean).abs() > limit * pl.max_horizontal(sd, pl.lit(0.5))).fill_null(False))
    return daily.sort("tenant_id", "event_date").filter(pl.any_horizontal(*flags) | _schema_onset()) \
        .select("tenant_id", "event_date")


def score(flagged: pl.DataFrame, labels: pl.DataFrame, since: date) -> dict[str, float]:
    """Precision and recall at tenant-day granularity (days from `since` on)."""
    keys = ["tenant_id", "event_date"]
    flagged = flagged.filter(pl.col("event_date") >= since).select(keys).unique()
    labels = labels.filter(pl.col("event_date") >= since)
    hits = flagged.join(labels.select(keys), on=keys, how="semi").height
    found = labels.join(flagged, on=keys, how="semi")
    by_kind = {k: found.filter(pl.col("kind") == k).height / max(labels.filter(pl.col("kind") == k).height, 1)
               for k in sorted(labels["kind"].unique().to_list())}
    return {"precision": hits / max(flagged.height, 1), "recall": found.height / max(labels.height, 1),
            "flagged": flagged.height, "labelled": labels.height, **{f"recall_{k}": v for k, v in by_kind.items()}}


def intraday(tenants: int, seed: int) -> dict[str, float]:
    """Hourly senders, a third of which go silent; `overdue_sources` polled every 15 minutes."""
    from monitoring.detector import overdue_sources

    rng = np.random.default_rng([seed, 0xF4E5])
    start = datetime(2026, 1, 5, tzinfo=UTC)
    hours = 14 * 24
    slots = np.arange(hours)[None, :].repeat(tenants, axis=0)
    jitter = rng.normal(0.0, 10.0, size=slots.shape)  # minutes
    kept = rng.random(slots.shape) >= 0.02
    silent = rng.random(tenants) < 1 / 3
    stop = np.where(silent, rng.uniform(8 * 24, 13 * 24, size=tenants), np.inf)  # hours after start
    at = slots * 60.0 + jitter
    sent = kept & (at / 60.0 < stop[:, None])
    rows = np.nonzero(sent)
    deliveries = pl.DataFrame({
        "tenant_id": [f"t{i:05d}" for i in rows[0]], "source": "hourly",
        "delivered_at": [start + timedelta(minutes=float(m)) for m in at[rows]],
    })
    first_alert: dict[str, datetime] = {}
    false_alarms = 0
    check = start + timedelta(days=7)
    started = time.perf_counter()
    checks = 0
    while check <= start + timedelta(hours=hours):
        overdue = overdue_sources(deliveries, now=check)
        checks += 1
        for tenant in overdue["tenant_id"].to_list():
            index = int(tenant[1:])
            if silent[index] and check >= start + timedelta(hours=float(stop[index])):
                first_alert.setdefault(tenant, check)
            elif not silent[index] or check < start + timedelta(hours=float(stop[index])):
                false_alarms += 1
        check += timedelta(minutes=15)
    seconds = time.perf_counter() - started
    last = deliveries.group_by("tenant_id").agg(pl.col("delivered_at").max())
    last_of = dict(last.iter_rows())
    delays = [(alert - (last_of[t] + timedelta(hours=1))).total_seconds() / 3600 for t, alert in first_alert.items()]
    went_silent = int(silent.sum())
    return {"senders": tenants, "went_silent": went_silent, "detected": len(first_alert),
            "median_delay_h": float(np.median(delays)) if delays else float("nan"),
            "max_delay_h": float(np.max(delays)) if delays else float("nan"),
            "within_6h": sum(d <= 6.0 for d in delays) / max(went_silent, 1),
            "false_alarm_checks": false_alarms, "checks": checks, "seconds_per_check": seconds / max(checks, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers-per-tenant", type=int, default=3000)
    parser.add_argument("--incidents-per-tenant", type=float, default=1.0)
    parser.add_argument("--hourly-senders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print_header("anomaly detection: per-tenant detector vs static threshold and trailing z-score")

    from ingestion.synthetic.incidents import (
        WARMUP_DAYS,
        apply_incidents_to_daily,
        incident_labels,
        plan_incidents,
        simulate_daily_counts,
    )
    from monitoring.detector import detect

    start = date(2025, 1, 1)
    tenants = [f"t{i:05d}" for i in range(args.tenants)]
    began = time.perf_counter()
    clean = simulate_daily_counts(tenants, start=start, days=args.days,
                                  customers_per_tenant=args.customers_per_tenant, seed=args.seed)
    plan = plan_incidents(tenants, start=start, days=args.days, per_tenant=args.incidents_per_tenant, seed=args.seed)
    daily = apply_incidents_to_daily(clean, plan, seed=args.seed)
    labels = incident_labels(plan)
    simulated = time.perf_counter() - began
    since = start + timedelta(days=WARMUP_DAYS)
    print(f"frame      {daily.height:,} tenant-days ({args.tenants:,} tenants x {args.days} days), "
          f"{plan.height:,} incidents, {labels.height:,} labelled tenant-days, simulated in {simulated:.1f} s")
    sizes = daily.group_by("tenant_id").agg(pl.col("events").median()).get_column("events")
    print(f"volume     median events per tenant-day: p10={sizes.quantile(0.1):.0f} p50={sizes.median():.0f} "
          f"p90={sizes.quantile(0.9):.0f}")
    results = {}
    for name, run in (("detector", detect), ("static +-50%", static_threshold), ("z-score 28d", zscore)):
        began = time.perf_counter()
        flagged = run(daily)
        seconds = time.perf_counter() - began
        results[name] = {**score(flagged, labels, since), "seconds": seconds}
    kinds = sorted(k for k in next(iter(results.values())) if k.startswith("recall_"))
    print(f"\n{'method':<14} {'precision':>9} {'recall':>7} {'flagged':>8} {'seconds':>8}  "
          + " ".join(f"{k[7:]:>13}" for k in kinds))
    for name, r in results.items():
        print(f"{name:<14} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['flagged']:>8,} {r['seconds']:>8.2f}  "
              + " ".join(f"{r[k]:>13.3f}" for k in kinds))
    ours = results["detector"]
    beats = all(ours["precision"] > r["precision"] and ours["recall"] > r["recall"]
                for n, r in results.items() if n != "detector")
    met = ours["recall"] >= 0.9 and ours["precision"] >= 0.8
    print(f"\ngoal recall >= 0.9 and precision >= 0.8: {'met' if met else 'NOT met'}; "
          f"above both baselines on both: {'yes' if beats else 'no'}")

    fresh = intraday(args.hourly_senders, args.seed)
    print(f"\nintraday freshness: {fresh['senders']} hourly senders, {fresh['went_silent']} went silent, "
          f"{fresh['detected']} detected; delay after the expected next delivery: median "
          f"{fresh['median_delay_h']:.2f} h, max {fresh['max_delay_h']:.2f} h; within 6 h: {fresh['within_6h']:.3f}; "
          f"false alarms: {fresh['false_alarm_checks']} of {fresh['checks']} checks x {fresh['senders']} senders "
          f"({fresh['seconds_per_check'] * 1000:.0f} ms per check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
