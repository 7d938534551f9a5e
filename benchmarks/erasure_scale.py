"""One subject erasure on a large pooled lake: how long it takes and how many files it reads.

Builds the same Zipf-sized bronze table as `benchmarks/retention_scale.py` (N events, T tenants, two years
of daily partitions), then erases one customer of the largest tenant with `erase_subject` and prints the
seconds, the rows deleted, the files the verification read and skipped (judged from the log statistics),
and the files physically removed. Target (issue 19): <= 30 s at 10M events on the local lake.

    .venv/bin/python benchmarks/erasure_scale.py                                  # 10M events, 100k tenants
    .venv/bin/python benchmarks/erasure_scale.py --events 1000000 --tenants 10000  # quick run
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

try:
    from benchmarks._machine import print_header
    from benchmarks.retention_scale import _peak_rss_gib, scratch_lake
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]
    from retention_scale import _peak_rss_gib, scratch_lake  # type: ignore[no-redef]

from shironzi.audit.erasure import erase_subject
from shironzi.lake.delta import read_arrow
from shironzi.tenancy.context import TenantContext

TARGET_SECONDS = 30.0


def run(tenants: int, events: int) -> dict[str, Any]:
    with scratch_lake(tenants, events) as (bronze, _, built):
        tenant = "t_000000"  # the largest tenant (Zipf rank 1)
        subject = read_arrow(bronze, columns=["customer_id"], filters=[("tenant_id", "=", tenant)]).column(
            "customer_id")[0].as_py()
        ctx = TenantContext.admin(actor="bench", purpose="erasure benchmark")
        started = time.perf_counter()
        receipt = erase_subject(ctx, tenant, subject)
        seconds = time.perf_counter() - started
    return {
        "tenants": tenants, "events": events, "build_s": round(built, 1), "erase_s": round(seconds, 2),
        "rows_deleted": sum(t["rows_deleted"] for t in receipt.tables),
        "files_removed": sum(t["files_removed"] for t in receipt.tables),
        "files_scanned": receipt.verification["files_scanned"],
        "files_skipped": receipt.verification["files_skipped"],
        "verified": receipt.verification["ok"], "peak_rss_gib": round(_peak_rss_gib(), 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args(argv)
    print_header("one subject erasure on a large pooled lake")
    f = run(args.tenants, args.events)
    print(f"lake       {f['tenants']:,} tenants, {f['events']:,} events (built in {f['build_s']} s)")
    print(f"erase      {f['erase_s']:.2f} s  rows={f['rows_deleted']}  files removed={f['files_removed']}  "
          f"verification read {f['files_scanned']} files, skipped {f['files_skipped']}  verified={f['verified']}")
    verdict = "meets" if f["erase_s"] <= TARGET_SECONDS else "misses"
    print(f"target     erasure <= {TARGET_SECONDS:.0f} s at 10M events: {verdict} ({f['erase_s']:.2f} s)")
    print(f"peak RSS   {f['peak_rss_gib']} GiB (whole process, lake build included)")
    if args.json:
        print(json.dumps(f, indent=2))
    return f


if __name__ == "__main__":
    main()
