"""`retention enforce` at 100,000 tenants: one commit per table, cost that follows the data.

Builds a pooled bronze table of N events (default 10M) for T tenants (default 100,000, Zipf-sized: a few
large tenants and a long tail), partitioned by `event_date`, collected daily over two years (`ingested_at`
on the event's day). Tenants are spread over the industries (different default retention) and 10 % carry
a per-tenant override, so the cutoff map has many groups. Then it times, in a fresh SHIRONZI_HOME:

- the dry run (the plan: per tenant, rows that would expire),
- the first enforcement (`confirm=True`: about half of the history expires),
- a steady-state run one day later (one day expires).

and prints seconds, Delta commits per table, rows deleted and the process's peak RSS. Target: <= 60 s at
100k tenants (issue 19). `benchmarks/scale_tenants.py` may call `run()`.

    .venv/bin/python benchmarks/retention_scale.py                                  # 100k tenants, 10M events
    .venv/bin/python benchmarks/retention_scale.py --tenants 10000 --events 1000000  # quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]

from shironzi.audit.log import reset_audit_logs
from shironzi.audit.retention import _overrides_uri, enforce_retention
from shironzi.lake.delta import append, table_version
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
HISTORY_DAYS = 730
INDUSTRIES = ("ecommerce",) * 7 + ("healthcare", "education", "finance")
TARGET_SECONDS = 60.0


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def build_lake(tenants: int, events: int, *, seed: int = 7, chunk: int = 2_500_000) -> tuple[str, dict[str, str]]:
    """The bronze table and the tenant -> industry map (10 % of tenants with a bronze override)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"t_{i:06d}" for i in range(tenants)], dtype=object)
    weights = 1.0 / np.arange(1, tenants + 1) ** 0.8  # Zipf-like tenant sizes
    weights /= weights.sum()
    bronze = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    first_day = (NOW - dt.timedelta(days=HISTORY_DAYS)).date()
    for start in range(0, events, chunk):
        n = min(chunk, events - start)
        days = np.sort(rng.integers(0, HISTORY_DAYS, n))
        event_date = np.datetime64(first_day) + days.astype("timedelta64[D]")
        ingested = event_date.astype("datetime64[us]") + rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]")
        batch = pa.table({
            "tenant_id": pa.array(ids[rng.choice(tenants, n, p=weights)], pa.string()),
            "event_id": pa.array([f"e{start + i}" for i in range(n)], pa.string()),
            "customer_id": pa.array([f"c{v}" for v in rng.integers(0, 50_000, n)], pa.string()),
            "event_type": pa.array(["order_placed"] * n, pa.string()),
            "event_date": pa.array(event_date, pa.date32()),
            "ingested_at": pa.array(ingested).cast(pa.timestamp("us", tz="UTC")),
            "amount": pa.array(rng.random(n) * 100),
        })
        append(bronze, batch, partition_by="event_date")
    industries = {str(t): INDUSTRIES[i % len(INDUSTRIES)] for i, t in enumerate(ids)}
    overridden = ids[rng.choice(tenants, max(1, tenants // 10), replace=False)]
    append(_overrides_uri(), pa.table({
        "tenant_id": pa.array([str(t) for t in overridden], pa.string()),
        "target": ["bronze"] * len(overridden),
        "days": pa.array(rng.integers(30, 1000, len(overridden)), pa.int64()),
        "set_at": pa.array([NOW] * len(overridden), pa.timestamp("us", tz="UTC")),
        "set_by": ["bench"] * len(overridden),
    }))
    return bronze, industries


def _timed_run(bronze: str, industries: dict[str, str], *, now: dt.datetime, **kwargs: Any) -> dict[str, Any]:
    before = table_version(bronze)
    started = time.perf_counter()
    result = enforce_retention(now=now, tenants=industries, **kwargs)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "commits": table_version(bronze) - before,
        "rows": sum(r["expired"] for r in result["plan"]),
        "tenants": len(result["tenants"]),
        "over_threshold": sum(r["share"] > get_settings().retention_confirm_share for r in result["plan"]),
    }


@contextmanager
def scratch_lake(tenants: int, events: int) -> Iterator[tuple[str, dict[str, str], float]]:
    """A fresh SHIRONZI_HOME holding the benchmark lake: (bronze uri, tenant -> industry, build seconds)."""
    with tempfile.TemporaryDirectory(prefix="shironzi-scale-") as tmp:
        os.environ["SHIRONZI_HOME"] = str(Path(tmp) / "home")
        os.environ["SHIRONZI_LOG_LEVEL"] = "WARNING"
        get_settings.cache_clear()
        reset_audit_logs()
        started = time.perf_counter()
        bronze, industries = build_lake(tenants, events)
        try:
            yield bronze, industries, time.perf_counter() - started
        finally:
            reset_audit_logs()


def run(tenants: int, events: int) -> dict[str, Any]:
    with scratch_lake(tenants, events) as (bronze, industries, built):
        figures = {
            "tenants": tenants, "events": events, "build_s": round(built, 1),
            "dry_run": _timed_run(bronze, industries, now=NOW, dry_run=True),
            "first_run": _timed_run(bronze, industries, now=NOW, confirm=True),
            "next_day": _timed_run(bronze, industries, now=NOW + dt.timedelta(days=1), confirm=True),
        }
    figures["peak_rss_gib"] = round(_peak_rss_gib(), 2)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args(argv)
    print_header("retention enforce at scale: one commit per table")
    figures = run(args.tenants, args.events)
    print(f"lake       {figures['tenants']:,} tenants, {figures['events']:,} events over {HISTORY_DAYS} days "
          f"(built in {figures['build_s']} s)")
    for name in ("dry_run", "first_run", "next_day"):
        f = figures[name]
        print(f"{name:<10} {f['seconds']:>7.2f} s  commits={f['commits']}  rows={f['rows']:,}  "
              f"tenants={f['tenants']:,}  over_threshold={f['over_threshold']:,}")
    worst = max(figures["first_run"]["seconds"], figures["next_day"]["seconds"])
    verdict = "meets" if worst <= TARGET_SECONDS else "misses"
    print(f"target     enforce <= {TARGET_SECONDS:.0f} s at 100k tenants: {verdict} ({worst:.2f} s)")
    print(f"peak RSS   {figures['peak_rss_gib']} GiB (whole process, lake build included)")
    if args.json:
        print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
