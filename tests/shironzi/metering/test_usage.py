"""Usage metering on a real lake: events landed through the batch connector, bytes from the Delta add actions
(apportioned in pooled tables, exact in dedicated ones), API requests and stage compute, in `_platform/usage`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.shironzi.metering._fixtures import MeteredLake, land_simulated_tenants


@pytest.fixture
def lake(home: Path, tmp_path: Path) -> MeteredLake:
    return land_simulated_tenants(tmp_path / "landing")


def _today() -> date:
    return datetime.now(UTC).date()


def test_usage_counts_the_landed_events_and_splits_every_tables_bytes(lake: MeteredLake) -> None:
    import polars as pl

    from shironzi.lake import add_actions, discover_tables, read_polars
    from shironzi.metering.stage_log import stage_runs_uri
    from shironzi.metering.usage import collect_usage, read_usage
    from shironzi.settings import get_settings

    result = collect_usage(day=_today())
    usage = read_usage(start=_today(), end=_today())
    assert result.rows == usage.height == 3
    by_tenant = {r["tenant_id"]: r for r in usage.to_dicts()}
    for tenant in (lake.pooled_a, lake.pooled_b, lake.dedicated):
        assert by_tenant[tenant.id]["events_landed"] == lake.landed[tenant.id]  # exact, pooled and dedicated

    tables = [t for t in discover_tables(include_platform=False) if t.layer == "bronze"]
    sizes = {t.uri: int(pa.compute.sum(add_actions(t.uri)["size_bytes"]).as_py()) for t in tables}
    dedicated = next(u for u in sizes if f"/tenants/{lake.dedicated.id}/" in u)
    assert by_tenant[lake.dedicated.id]["bytes_bronze"] == sizes[dedicated]  # its own table, exactly
    pooled_total = sum(v for u, v in sizes.items() if u != dedicated)
    assert by_tenant[lake.pooled_a.id]["bytes_bronze"] + by_tenant[lake.pooled_b.id]["bytes_bronze"] == pooled_total
    assert by_tenant[lake.pooled_a.id]["bytes_bronze"] > 0 and by_tenant[lake.pooled_b.id]["bytes_bronze"] > 0
    assert all(r["bytes_total"] == r["bytes_bronze"] for r in by_tenant.values())  # nothing built past bronze yet

    # the landing stage was recorded and its seconds shared out by bronze rows: the shares add up to it
    runs = read_polars(stage_runs_uri(get_settings()))
    ingest = runs.filter(pl.col("compute_group") == "ingest")
    assert ingest.height >= 1 and ingest["tenant_id"].null_count() == ingest.height
    assert usage["compute_seconds_ingest"].sum() == pytest.approx(ingest["seconds"].sum(), rel=1e-9)
    assert by_tenant[lake.pooled_a.id]["compute_seconds"] > 0


def test_mixed_pooled_files_are_apportioned_by_rows_to_the_byte(home: Path) -> None:
    from shironzi.lake import add_actions, append
    from shironzi.metering.usage import table_bytes_by_tenant
    from shironzi.settings import get_settings

    uri = str(home / "lake" / "eu-west" / "gold" / "mixed")
    # two files holding both tenants (1:3 rows) and one file of a third tenant alone
    append(uri, pa.table({"tenant_id": ["t_a"] * 100 + ["t_b"] * 300, "v": list(range(400))}))
    append(uri, pa.table({"tenant_id": ["t_a"] * 10 + ["t_b"] * 30, "v": list(range(40))}))
    append(uri, pa.table({"tenant_id": ["t_c"] * 50, "v": list(range(50))}))
    files = add_actions(uri).to_pylist()
    split = {r["tenant_id"]: r for r in table_bytes_by_tenant(uri, tenant_id=None, settings=get_settings()).to_dicts()}
    own = next(f for f in files if f["min.tenant_id"] == f["max.tenant_id"] == "t_c")
    assert split["t_c"] == {"tenant_id": "t_c", "bytes": own["size_bytes"], "rows": 50}
    mixed = sum(f["size_bytes"] for f in files) - own["size_bytes"]
    assert split["t_a"]["bytes"] + split["t_b"]["bytes"] == mixed
    assert split["t_a"]["bytes"] == pytest.approx(mixed / 4, abs=1)
    assert (split["t_a"]["rows"], split["t_b"]["rows"]) == (110, 330)


def test_api_requests_and_own_stage_runs_are_metered_per_tenant(lake: MeteredLake) -> None:
    from shironzi.metering.api_requests import ApiUsageCounter
    from shironzi.metering.usage import collect_usage, read_usage
    from shironzi.observability import stage
    from shironzi.settings import get_settings

    counter = ApiUsageCounter(get_settings())
    for _ in range(7):
        counter.count(lake.pooled_a.id, "/v1/churn/{customer_id}")
    for _ in range(3):
        counter.count(lake.pooled_a.id, "/v1/events")
    counter.count(lake.dedicated.id, "/v1/tenant")
    assert counter.flush() == 11 and counter.pending() == 0
    with stage("dbt_build", region="eu-west", tenant=lake.dedicated.id):
        pass
    collect_usage(day=_today())
    rows = {r["tenant_id"]: r for r in read_usage(start=_today(), end=_today()).to_dicts()}
    a, c = rows[lake.pooled_a.id], rows[lake.dedicated.id]
    assert (a["api_churn"], a["api_events"], a["api_requests"]) == (7, 3, 10)
    assert (c["api_tenant"], c["api_requests"]) == (1, 1)
    assert rows[lake.pooled_b.id]["api_requests"] == 0
    assert c["compute_seconds_transform"] > 0 and a["compute_seconds_transform"] == 0  # its own build only


def test_collecting_a_day_again_replaces_it(lake: MeteredLake) -> None:
    from shironzi.metering.usage import collect_usage, read_usage

    first = collect_usage(day=_today())
    again = collect_usage(day=_today())
    assert again.version == (first.version or 0) + 1
    assert read_usage(start=_today() - timedelta(days=3), end=_today()).height == 3


def test_a_reversed_range_is_refused(home: Path) -> None:
    from shironzi.errors import InvalidInputError
    from shironzi.metering.usage import read_usage

    with pytest.raises(InvalidInputError, match="before the start"):
        read_usage(start=date(2026, 5, 2), end=date(2026, 5, 1))
