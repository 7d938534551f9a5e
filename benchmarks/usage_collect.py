"""Usage metering at scale: `collect_usage` for one day over N tenants (Zipf-sized, all pooled in one region),
then the month's cost per tenant (what the Tenants page computes), and the checks that make the figure honest:
the tenants' bronze bytes add up to the table's bytes, and every landed event is counted once.

    .venv/bin/python benchmarks/usage_collect.py --tenants 100000 --events 2000000
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

from benchmarks._machine import print_header  # noqa: E402


def _provision(home: Path, count: int) -> list[str]:
    from shironzi.tenancy import TenantContext, get_registry

    source = home / "tenants.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slug", "name", "industry", "region", "plan"])
        for i in range(count):
            writer.writerow([f"tenant-{i:07d}", f"Tenant {i}", "ecommerce", "eu-west",
                             ("free", "standard", "enterprise")[i % 3]])
    registry = get_registry()
    registry.import_tenants(TenantContext.admin(actor="benchmark", purpose="usage benchmark"), source)
    return sorted(registry.tenant_directory(fresh=True))


def _land(tenants: list[str], events: int, batches: int) -> dict[str, int]:
    """Zipf-sized tenants' events ingested today, in `batches` appends (each a commit, as flushes would be)."""
    from ingestion.contracts.schema import CANONICAL_SCHEMA
    from shironzi.lake import append, table_uri
    from shironzi.settings import get_settings

    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, len(tenants) + 1) ** 1.1
    owners = rng.choice(len(tenants), size=events, p=weights / weights.sum())
    now = datetime.now(UTC)
    uri = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    ids = np.array(tenants)[owners]
    for part in np.array_split(np.arange(events), batches):
        n = len(part)
        table = pa.table({
            "tenant_id": ids[part], "event_id": [f"e{i}" for i in part], "customer_id": [f"c{i % 5000}" for i in part],
            "event_type": ["order_placed"] * n, "event_time": [now - timedelta(hours=1)] * n,
            "event_date": [(now - timedelta(hours=1)).date()] * n, "source": ["benchmark"] * n,
            "ingested_at": [now] * n, "amount": np.ones(n), "currency": ["EUR"] * n, "properties": ["{}"] * n,
        }).cast(CANONICAL_SCHEMA)
        append(uri, table, partition_by="event_date")
    counts = pl.Series(ids).value_counts()
    return dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list(), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args(argv)
    print_header("usage metering")
    with tempfile.TemporaryDirectory(prefix="usage-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["SHIRONZI_HOME"] = str(home)
        os.environ["SHIRONZI_USAGE_STAGE_LOG"] = "0"  # the setup's own stages are not the measured work
        from shironzi.lake import add_actions, table_uri
        from shironzi.metering.cost import monthly_costs
        from shironzi.metering.usage import collect_usage, read_usage
        from shironzi.settings import get_settings

        started = time.perf_counter()
        tenants = _provision(home, args.tenants)
        landed = _land(tenants, args.events, args.batches)
        print(f"setup: {len(tenants):,} tenants, {args.events:,} events in {args.batches} commits, "
              f"{time.perf_counter() - started:.1f} s")

        today = datetime.now(UTC).date()
        started = time.perf_counter()
        result = collect_usage(day=today)
        collect_s = time.perf_counter() - started
        usage = read_usage(start=today, end=today)
        uri = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
        table_bytes = int(pa.compute.sum(add_actions(uri)["size_bytes"]).as_py())
        counted = dict(zip(usage["tenant_id"].to_list(), usage["events_landed"].to_list(), strict=True))
        assert int(usage["bytes_bronze"].sum()) == table_bytes, "apportioned bytes do not add up"
        assert all(counted[t] == n for t, n in landed.items()) and sum(counted.values()) == args.events

        plans = pl.DataFrame([{"tenant_id": t, "plan": i.plan}
                              for t, i in __import__("shironzi.tenancy", fromlist=["get_registry"])
                              .get_registry().tenant_directory().items()])
        started = time.perf_counter()
        costs = monthly_costs(usage, plans, month=today)
        cost_s = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"collect_usage: {collect_s:.2f} s for {result.rows:,} tenants ({len(result.inputs)} tables read), "
              f"version {result.version}")
        print(f"  bronze bytes apportioned: {table_bytes:,} = sum over tenants (exact); events counted: "
              f"{sum(counted.values()):,} = landed")
        print(f"monthly_costs: {cost_s:.3f} s for {costs.height:,} tenants; platform margin "
              f"{costs['margin'].sum():,.2f}")
        print(f"peak RSS: {peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
