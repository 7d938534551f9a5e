"""Tenant data exports (`POST /v1/exports`' work) on a pooled predictions table shared by many tenants.

Writes R churn scores for T tenants (Zipf-sized: the largest holds about a sixth of the rows) over D score dates
into the real pooled `predictions/churn_scores` Delta table (files clustered by tenant), then for the largest and
the smallest tenant times: the request (module, formats, plan limits and the row count the limit needs) and the
run (tenant-filtered read, file written through the kernel filesystem, disclosure audit), in Parquet and CSV.

    .venv/bin/python benchmarks/exports.py                                  # 2M rows, 200 tenants, 30 days
    .venv/bin/python benchmarks/exports.py --rows 200000 --tenants 50       # quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]

FIRST_DAY = dt.date(2026, 1, 1)


def _seed(rows: int, tenants: int, days: int) -> list[str]:
    """Provision the tenants and write their churn scores (one append per score date); returns tenant ids,
    largest first."""
    import numpy as np
    import pyarrow as pa

    from shironzi.lake import append, cluster_by_tenant, table_uri
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry

    admin = TenantContext.admin(actor="ops", purpose="benchmark setup")
    registry = get_registry()
    ids = [registry.provision_tenant(admin, slug=f"shop-{i:04d}", name=f"Shop {i}", industry="ecommerce",
                                     plan="enterprise")[0].id for i in range(tenants)]
    weights = 1.0 / np.arange(1, tenants + 1)
    per_tenant = np.maximum(1, (weights / weights.sum() * rows / days).astype(int))
    uri = table_uri(get_settings().resolved_lake_uri, layer="predictions", table="churn_scores", region="eu-west")
    rng = np.random.default_rng(7)
    now = dt.datetime.now(dt.UTC)
    for day in range(days):
        tenant_col = np.repeat(np.asarray(ids), per_tenant)
        n = tenant_col.size
        customers = np.concatenate([np.arange(k) for k in per_tenant]).astype(str)
        probability = rng.random(n)
        append(uri, cluster_by_tenant(pa.table({
            "tenant_id": tenant_col, "customer_id": np.char.add("cus_", customers),
            "score_date": pa.array([FIRST_DAY + dt.timedelta(days=day)] * n, pa.date32()),
            "churn_probability": probability,
            "risk_band": np.where(probability >= 0.6, "high", np.where(probability >= 0.3, "medium", "low")),
            "top_reasons": ["[]"] * n, "model_name": ["shironzi-churn"] * n, "model_version": ["1"] * n,
            "feature_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        })), partition_by="score_date")
    return ids


def _export(tenant_id: str, fmt: str, days: int) -> dict[str, Any]:
    from shironzi.exports import request_export, run_export
    from shironzi.tenancy import TenantContext

    ctx = TenantContext.for_tenant(tenant_id, actor="key:bench", purpose="api")
    started = time.perf_counter()
    record = request_export(ctx, tenant_id, table="churn_scores", start=FIRST_DAY,
                            end=FIRST_DAY + dt.timedelta(days=days - 1), fmt=fmt)
    requested = time.perf_counter()
    done = run_export(record.id)
    finished = time.perf_counter()
    assert done.status == "ready", done.error
    return {"rows": done.rows, "bytes": done.size_bytes, "request_s": requested - started,
            "run_s": finished - requested}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="shironzi-exports-"))
    os.environ["SHIRONZI_HOME"] = str(home)
    os.environ.setdefault("SHIRONZI_LOG_LEVEL", "WARNING")
    print_header("tenant data exports")
    started = time.perf_counter()
    ids = _seed(args.rows, args.tenants, args.days)
    print(f"seeded {args.rows:,} rows for {args.tenants} tenants over {args.days} days "
          f"in {time.perf_counter() - started:.1f} s")
    figures: dict[str, Any] = {}
    for label, tenant_id in (("largest", ids[0]), ("smallest", ids[-1])):
        for fmt in ("parquet", "csv"):
            got = _export(tenant_id, fmt, args.days)
            figures[f"{label}_{fmt}"] = got
            rate = got["rows"] / got["run_s"] if got["run_s"] else 0.0
            print(f"{label:8s} tenant {fmt:7s}: {got['rows']:>9,} rows, {got['bytes'] / 1e6:8.2f} MB | request "
                  f"{got['request_s'] * 1000:7.1f} ms (incl. row count) | run {got['run_s']:6.2f} s "
                  f"({rate:,.0f} rows/s)")
    return figures


if __name__ == "__main__":
    main()
