"""Per-tenant point-in-time restore on a large pooled lake: seconds, rows and the files the read could skip.

Builds the Zipf-sized bronze table of `benchmarks/retention_scale.py` (N events, T tenants, two years of daily
partitions), provisions one more tenant and lands its history (`--rows`), notes the moment, lands a bad import
for that tenant (`--bad-rows` junk rows), then runs `shironzi tenants restore` (`restore_tenant`) back to the
moment and prints the seconds of the dry run and the restore, the rows before/after, the table's files and how
many the tenant's `tenant_id` statistics let the time-travel read skip, and whether every other tenant's rows
were left alone (row count of the rest of the table before and after).

    .venv/bin/python benchmarks/tenant_restore.py                                   # 10M events, 100k tenants
    .venv/bin/python benchmarks/tenant_restore.py --events 1000000 --tenants 10000   # quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

import pyarrow as pa

try:
    from benchmarks._machine import print_header
    from benchmarks.retention_scale import _peak_rss_gib, scratch_lake
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]
    from retention_scale import _peak_rss_gib, scratch_lake  # type: ignore[no-redef]

from shironzi.audit.restore import restore_tenant
from shironzi.lake.delta import append, files_touched, open_table, read_arrow
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry


def _rows_like(bronze: str, tenant_id: str, count: int, *, amount: float, start: int) -> pa.Table:
    """`count` rows of the bronze table's schema for one tenant (copied from the table's first rows)."""
    sample = read_arrow(bronze).slice(0, count)
    while sample.num_rows < count:
        sample = pa.concat_tables([sample, sample]).slice(0, count)
    columns = {name: sample.column(name) for name in sample.column_names}
    columns["tenant_id"] = pa.array([tenant_id] * count, sample.schema.field("tenant_id").type)
    if "event_id" in columns:
        columns["event_id"] = pa.array([f"r{start + i}" for i in range(count)], sample.schema.field("event_id").type)
    if "amount" in columns:
        columns["amount"] = pa.array([amount] * count, sample.schema.field("amount").type)
    return pa.table(columns, schema=sample.schema)


def run(tenants: int, events: int, rows: int, bad_rows: int) -> dict[str, Any]:
    ctx = TenantContext.admin(actor="bench", purpose="restore benchmark")
    with scratch_lake(tenants, events) as (bronze, _, built):
        parts = list(open_table(bronze).metadata().partition_columns) or None
        tenant, _ = get_registry().provision_tenant(ctx, slug="restore-bench", name="Restore", industry="ecommerce",
                                                    placement="pooled")
        append(bronze, _rows_like(bronze, tenant.id, rows, amount=10.0, start=0), partition_by=parts)
        time.sleep(0.05)
        moment = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        append(bronze, _rows_like(bronze, tenant.id, bad_rows, amount=-1.0, start=rows), partition_by=parts)
        others_before = read_arrow(bronze, columns=["tenant_id"], filters=[("tenant_id", "!=", tenant.id)]).num_rows
        touched, total = files_touched(bronze, tenant_id=tenant.id)
        started = time.perf_counter()
        restore_tenant(ctx, tenant.id, to=moment, dry_run=True)
        dry = time.perf_counter() - started
        started = time.perf_counter()
        receipt = restore_tenant(ctx, tenant.id, to=moment)
        seconds = time.perf_counter() - started
        others_after = read_arrow(bronze, columns=["tenant_id"], filters=[("tenant_id", "!=", tenant.id)]).num_rows
        (result,) = [t for t in receipt.tables if t["table"].endswith("bronze/events")]
    return {
        "tenants": tenants, "events": events, "build_s": round(built, 1), "dry_run_s": round(dry, 2),
        "restore_s": round(seconds, 2), "rows_before": result["rows_before"], "rows_after": result["rows_after"],
        "files_read": touched, "files_total": total, "others_unchanged": others_before == others_after,
        "peak_rss_gib": round(_peak_rss_gib(), 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=100_000, help="The restored tenant's good rows.")
    parser.add_argument("--bad-rows", type=int, default=20_000, help="Rows of its bad import.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args(argv)
    print_header("per-tenant point-in-time restore on a large pooled lake")
    f = run(args.tenants, args.events, args.rows, args.bad_rows)
    print(f"lake       {f['tenants']:,} tenants, {f['events']:,} events (built in {f['build_s']} s)")
    print(f"dry run    {f['dry_run_s']:.2f} s")
    print(f"restore    {f['restore_s']:.2f} s  rows {f['rows_before']:,} -> {f['rows_after']:,}  "
          f"time-travel read {f['files_read']} of {f['files_total']} files (tenant statistics)  "
          f"other tenants unchanged={f['others_unchanged']}")
    print(f"peak RSS   {f['peak_rss_gib']} GiB (whole process, lake build included)")
    if args.json:
        print(json.dumps(f, indent=2))
    return f


if __name__ == "__main__":
    main()
