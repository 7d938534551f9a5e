"""Benchmark the curated layer: a full `dbt build` on N bronze events, an incremental build after one
new day, and how many files a tenant-scoped read of a gold fact touches on a 100,000-tenant lake,
clustered by tenant_id versus unclustered.

    .venv/bin/python benchmarks/dbt_build.py --events 10000000 --tenants 2000 --days 365
    .venv/bin/python benchmarks/dbt_build.py --target duckdb,spark    # both dbt targets, their ratio and peak memory

With several targets each one builds every model in its own process (its peak RSS is that process's: dbt, DuckDB
or the embedded Sail server) on a copy of the same bronze table, then one new day incrementally.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

INDUSTRY_EVENTS = {  # event type -> weight, amount range (None: no amount)
    "ecommerce": [
        ("customer_signed_up", 1, None),
        ("session_started", 30, None),
        ("product_viewed", 40, None),
        ("cart_updated", 12, None),
        ("order_placed", 8, (5, 300)),
        ("order_refunded", 1, (5, 150)),
        ("subscription_changed", 1, (5, 50)),
        ("support_ticket_opened", 2, None),
        ("account_closed", 0.2, None),
    ],
    "healthcare": [
        ("patient_registered", 1, None),
        ("appointment_booked", 10, None),
        ("appointment_attended", 8, None),
        ("appointment_missed", 2, None),
        ("prescription_filled", 5, (5, 200)),
        ("portal_login", 25, None),
        ("claim_submitted", 4, (50, 2000)),
        ("patient_disenrolled", 0.2, None),
    ],
    "education": [
        ("student_enrolled", 1, None),
        ("course_started", 5, None),
        ("lesson_completed", 30, None),
        ("assessment_submitted", 8, None),
        ("payment_made", 3, (20, 500)),
        ("forum_post", 10, None),
        ("student_withdrew", 0.2, None),
    ],
}
INDUSTRIES = list(INDUSTRY_EVENTS)
START = dt.date(2024, 1, 1)
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def print_machine_info() -> None:
    try:
        from benchmarks._machine import print_header

        print_header("dbt build")
    except ImportError:
        import platform

        print(f"machine: {platform.platform()} python {platform.python_version()} cpus {os.cpu_count()}")


def tenant_table(tenants: int) -> list[dict[str, object]]:
    return [
        {"tenant_id": f"t{n:06d}", "industry": INDUSTRIES[n % 3], "analytics_enabled": True}
        for n in range(tenants)
    ]


def generate_events(
    rng: np.random.Generator,
    *,
    count: int,
    tenants: int,
    customers_per_tenant: int,
    first_day: int,
    days: int,
    ingested_at: dt.datetime,
    id_offset: int,
) -> pa.Table:
    """`count` canonical bronze events, vectorised; skewed tenant sizes, sorted by tenant then time."""
    tenant = np.minimum((rng.pareto(1.2, count) * tenants / 20).astype(np.int64), tenants - 1)
    customer = rng.integers(0, customers_per_tenant, count)
    day = first_day + rng.integers(0, days, count)
    seconds = rng.integers(0, 86_400, count)
    industry = tenant % 3
    event_type = np.empty(count, dtype=object)
    amount = np.full(count, np.nan)
    for code, name in enumerate(INDUSTRIES):
        mask = industry == code
        specs = INDUSTRY_EVENTS[name]
        weights = np.array([w for _, w, _ in specs], dtype=float)
        picks = rng.choice(len(specs), size=int(mask.sum()), p=weights / weights.sum())
        names = np.array([n for n, _, _ in specs], dtype=object)
        event_type[mask] = names[picks]
        for index, (_, _, bounds) in enumerate(specs):
            if bounds:
                where = np.flatnonzero(mask)[picks == index]
                amount[where] = np.round(rng.uniform(*bounds, where.size), 2)
    order = np.lexsort((day * 86_400 + seconds, tenant))
    tenant, customer, day, seconds, event_type, amount = (
        a[order] for a in (tenant, customer, day, seconds, event_type, amount)
    )
    tenant_ids = pc.binary_join_element_wise("t", pc.utf8_lpad(pa.array(tenant.astype(str)), 6, "0"), "")
    ids = pa.array((np.arange(count) + id_offset).astype(str))
    micros = (day * 86_400 + seconds) * 1_000_000
    has_amount = ~np.isnan(amount)
    return pa.table(
        {
            "tenant_id": tenant_ids,
            "event_id": pc.binary_join_element_wise("e", ids, ""),
            "customer_id": pc.binary_join_element_wise("c", pa.array(customer.astype(str)), ""),
            "event_type": pa.array(event_type, type=pa.string()),
            "event_time": pa.array(micros + int(EPOCH.timestamp() * 1e6), type=pa.timestamp("us", tz="UTC")),
            "event_date": pa.array(
                (day + (START - dt.date(1970, 1, 1)).days).astype(np.int32), type=pa.date32()
            ),
            "source": pa.array(np.full(count, "stream", dtype=object), type=pa.string()),
            "ingested_at": pa.array(
                np.full(count, int(ingested_at.timestamp() * 1e6)), type=pa.timestamp("us", tz="UTC")
            ),
            "amount": pa.array(amount, mask=~has_amount, type=pa.float64()),
            "currency": pa.array(np.where(has_amount, "EUR", None), type=pa.string()),
            "properties": pc.binary_join_element_wise('{"ref": "', ids, '"}', ""),
        }
    )


def write_bronze(
    uri: str, *, events: int, tenants: int, customers: int, days: int, chunk: int = 2_000_000
) -> None:
    rng = np.random.default_rng(7)
    written = 0
    while written < events:
        size = min(chunk, events - written)
        table = generate_events(
            rng,
            count=size,
            tenants=tenants,
            customers_per_tenant=customers,
            first_day=0,
            days=days,
            ingested_at=EPOCH + dt.timedelta(days=days),
            id_offset=written,
        )
        write_deltalake(uri, table, mode="append", partition_by=["event_date"])
        written += size


def tenant_scoped_read(root: Path, *, lake_tenants: int, days: int, files: int) -> None:
    """Files a one-tenant, 90-day read of a gold-fact-shaped table touches: clustered vs random order."""
    from shironzi.lake.delta import files_touched

    rng = np.random.default_rng(11)
    tenant = np.repeat(np.arange(lake_tenants), days)
    day = np.tile(np.arange(days), lake_tenants)
    rows = tenant.size
    base = pa.table(
        {
            "tenant_id": pc.binary_join_element_wise(
                "t", pc.utf8_lpad(pa.array(tenant.astype(str)), 6, "0"), ""
            ),
            "event_date": pa.array(
                (day + (START - dt.date(1970, 1, 1)).days).astype(np.int32), type=pa.date32()
            ),
            "events": pa.array(rng.integers(0, 500, rows)),
            "revenue": pa.array(rng.uniform(0, 1000, rows)),
        }
    )
    rows_per_file = max(1, rows // files)
    shuffled = base.take(pa.array(rng.permutation(rows)))
    probe = f"t{lake_tenants // 2:06d}"
    window = [("event_date", ">=", START), ("event_date", "<", START + dt.timedelta(days=90))]
    for label, table in (("clustered by tenant_id", base), ("unclustered (random order)", shuffled)):
        uri = str(root / label.split()[0])
        for offset in range(0, rows, rows_per_file):  # one file per slice: a lake of many small commits
            write_deltalake(uri, table.slice(offset, rows_per_file), mode="append")
        touched, total = files_touched(uri, window, tenant_id=probe)
        print(
            f"tenant-scoped read ({lake_tenants:,} tenants, 90 days), {label}: "
            f"{touched}/{total} files = {100 * touched / total:.1f}%"
        )


def _slowest_nodes(settings: object, region: str, top: int = 8) -> str:
    import json

    from transformations.dbt_runner import dbt_home

    results = json.loads((dbt_home(settings, region) / "target" / "run_results.json").read_text())["results"]  # type: ignore[arg-type]
    ranked = sorted(results, key=lambda r: -r["execution_time"])[:top]
    return ", ".join(f"{r['unique_id'].split('.')[-1][:40]} {r['execution_time']:.1f}s" for r in ranked)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_one_target(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """In this process: copy the prepared bronze into a fresh home, a full build, one new day, an incremental build."""
    os.environ["SHIRONZI_HOME"] = str(scratch / args.target)
    from shironzi.settings import get_settings
    from transformations.dbt_runner import bronze_events_uri, run_dbt_build
    from transformations.spark import stop_spark

    get_settings.cache_clear()
    settings = get_settings()
    region = settings.default_region
    bronze = bronze_events_uri(settings, region)
    shutil.copytree(args.bronze, bronze)
    build = {"region": region, "tenants": tenant_table(args.tenants), "settings": settings, "target": args.target}
    try:
        full = run_dbt_build(**build)
        write_new_day(bronze, args)
        incremental = run_dbt_build(**build)
    finally:
        stop_spark()
    return {"target": args.target, "full_s": full.seconds, "incremental_s": incremental.seconds,
            "success": full.success and incremental.success, "models": len(full.models_built),
            "tests": full.tests_passed, "peak_rss_mb": _peak_rss_mb(),
            "failures": [*full.failures, *incremental.failures][:5]}


def write_new_day(bronze: str, args: argparse.Namespace) -> int:
    """One more day of events, ingested after the rest; returns how many."""
    new_day = max(1, args.events // args.days)
    write_deltalake(
        bronze,
        generate_events(
            np.random.default_rng(99),
            count=new_day,
            tenants=args.tenants,
            customers_per_tenant=args.customers_per_tenant,
            first_day=args.days,
            days=1,
            ingested_at=EPOCH + dt.timedelta(days=args.days + 1),
            id_offset=args.events,
        ),
        mode="append",
        partition_by=["event_date"],
    )
    return new_day


def compare_targets(args: argparse.Namespace, targets: list[str]) -> None:
    """Each target in its own process on a copy of one bronze table; prints both, their ratio and peak memory."""
    with tempfile.TemporaryDirectory(prefix="shironzi-bench-") as scratch:
        bronze = str(Path(scratch) / "bronze")
        started = time.perf_counter()
        write_bronze(bronze, events=args.events, tenants=args.tenants, customers=args.customers_per_tenant,
                     days=args.days)
        print(f"bronze: {args.events:,} events, {args.tenants:,} tenants, {args.days} days "
              f"written in {time.perf_counter() - started:.1f}s")
        results = {}
        for target in targets:
            command = [sys.executable, __file__, "--target", target, "--bronze", bronze, "--scratch", scratch,
                       "--events", str(args.events), "--tenants", str(args.tenants), "--days", str(args.days),
                       "--customers-per-tenant", str(args.customers_per_tenant)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[target] = json.loads(out.strip().splitlines()[-1])
            r = results[target]
            print(f"{target}: full build {r['full_s']:.1f}s, incremental (one new day) {r['incremental_s']:.1f}s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB, models {r['models']}, tests {r['tests']}, "
                  f"success {r['success']}{'' if r['success'] else ' ' + '; '.join(r['failures'])}")
        base = results[targets[0]]
        for target in targets[1:]:
            r = results[target]
            print(f"{target} / {targets[0]}: full {r['full_s'] / base['full_s']:.2f}x, "
                  f"incremental {r['incremental_s'] / base['incremental_s']:.2f}x, "
                  f"peak memory {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--tenants", type=int, default=2_000)
    parser.add_argument("--customers-per-tenant", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--lake-tenants", type=int, default=100_000)
    parser.add_argument("--fact-days", type=int, default=90)
    parser.add_argument("--fact-files", type=int, default=200)
    parser.add_argument("--skip-build", action="store_true", help="only run the files-touched measurement")
    parser.add_argument("--target", default="duckdb",
                        help="dbt target(s), comma separated: duckdb (default) or duckdb,spark (both, their ratio)")
    parser.add_argument("--bronze", help=argparse.SUPPRESS)  # internal: one target's run in its own process
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bronze:
        print(json.dumps(build_one_target(args, Path(args.scratch))))
        return
    print_machine_info()
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if targets != ["duckdb"]:
        compare_targets(args, targets)
        return
    with tempfile.TemporaryDirectory(prefix="shironzi-bench-") as scratch:
        os.environ["SHIRONZI_HOME"] = scratch
        from shironzi.settings import get_settings
        from transformations.dbt_runner import bronze_events_uri, run_dbt_build

        get_settings.cache_clear()
        settings = get_settings()
        region = settings.default_region
        tenants = tenant_table(args.tenants)
        if not args.skip_build:
            bronze = bronze_events_uri(settings, region)
            started = time.perf_counter()
            write_bronze(
                bronze,
                events=args.events,
                tenants=args.tenants,
                customers=args.customers_per_tenant,
                days=args.days,
            )
            print(
                f"bronze: {args.events:,} events, {args.tenants:,} tenants, {args.days} days "
                f"written in {time.perf_counter() - started:.1f}s"
            )
            full = run_dbt_build(region=region, tenants=tenants, settings=settings)
            print(
                f"full build: {full.seconds:.1f}s (target <= 180s), models {len(full.models_built)}, "
                f"tests passed {full.tests_passed}, failed {full.tests_failed}, success {full.success}"
            )
            new_day = write_new_day(bronze, args)
            incremental = run_dbt_build(region=region, tenants=tenants, settings=settings)
            print("slowest nodes of the incremental build:", _slowest_nodes(settings, region))
            print(
                f"incremental build after one new day ({new_day:,} events): {incremental.seconds:.1f}s = "
                f"{100 * incremental.seconds / full.seconds:.1f}% of the full build (target <= 15%), "
                f"success {incremental.success}"
            )
        tenant_scoped_read(
            Path(scratch) / "fact", lake_tenants=args.lake_tenants, days=args.fact_days, files=args.fact_files
        )


if __name__ == "__main__":
    main()
