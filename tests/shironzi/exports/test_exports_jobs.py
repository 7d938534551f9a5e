"""Export jobs in the kernel: a dedicated tenant's export holds its rows from its own root and the rows a
placement move left in the pooled table, never a pooled neighbour's; the date range bounds the rows; a failed
run is recorded with its reason and leaves no file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shironzi.audit.log import reset_audit_logs
from shironzi.exports import request_export, run_export, tenant_rows
from shironzi.lake import append, table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry, reset_registries

ADMIN = TenantContext.admin(actor="test", purpose="export jobs")
DAY = dt.date(2026, 1, 6)


@pytest.fixture
def lake_home(home: Path) -> Iterator[Path]:
    reset_registries()
    reset_audit_logs()
    yield home
    reset_audit_logs()
    reset_registries()


def _kpis(tenant_id: str, days: list[dt.date], value: float) -> pa.Table:
    return pa.table({"tenant_id": [tenant_id] * len(days), "event_date": pa.array(days, pa.date32()),
                     "active_customers": [value] * len(days)})


def test_dedicated_tenant_exports_its_own_rows_from_every_root(lake_home: Path) -> None:
    settings = get_settings()
    lake = settings.resolved_lake_uri
    registry = get_registry()
    clinic, _ = registry.provision_tenant(ADMIN, slug="big-clinic", name="Clinic", industry="healthcare",
                                          plan="enterprise", placement="dedicated")
    shop, _ = registry.provision_tenant(ADMIN, slug="small-shop", name="Shop", industry="ecommerce",
                                        plan="standard")
    pooled = table_uri(lake, layer="gold", table="fct_tenant_daily_kpis", region=clinic.region)
    own = table_uri(lake, layer="gold", table="fct_tenant_daily_kpis", region=clinic.region,
                    placement="dedicated", tenant_id=clinic.id)
    days = [DAY - dt.timedelta(days=i) for i in range(5)]
    append(pooled, pa.concat_tables([_kpis(shop.id, days, 1.0), _kpis(clinic.id, days[3:], 2.0)]))
    append(own, _kpis(clinic.id, days[:3], 3.0))

    rows = tenant_rows(clinic, "fct_tenant_daily_kpis", days[-1], DAY, settings=settings)
    assert rows.num_rows == 5 and set(rows.column("tenant_id").to_pylist()) == {clinic.id}
    assert tenant_rows(clinic, "fct_tenant_daily_kpis", days[1], DAY, settings=settings).num_rows == 2

    ctx = TenantContext.for_tenant(clinic.id, actor="key:test", purpose="api")
    record = request_export(ctx, clinic.id, table="fct_tenant_daily_kpis", start=days[-1], end=DAY, fmt="parquet")
    done = run_export(record.id)
    assert done.status == "ready" and done.rows == 5 and done.uri is not None
    written = pq.read_table(done.uri)
    assert sorted(written.column("active_customers").to_pylist()) == [2.0, 2.0, 3.0, 3.0, 3.0]
    assert f"/_platform/exports/{clinic.id}/{record.id}.parquet" in done.uri


def test_a_failed_run_keeps_its_reason_and_writes_no_file(lake_home: Path) -> None:
    shop, _ = get_registry().provision_tenant(ADMIN, slug="fail-shop", name="Shop", industry="ecommerce",
                                              plan="standard")
    ctx = TenantContext.for_tenant(shop.id, actor="key:test", purpose="api")
    record = request_export(ctx, shop.id, table="churn_scores", start=DAY, end=DAY, fmt="csv")
    blocker = Path(get_settings().resolved_lake_uri) / "_platform" / "exports" / shop.id
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the tenant's export directory belongs")  # the write cannot succeed

    done = run_export(record.id)
    assert done.status == "failed" and done.uri is None and done.rows is None
    assert done.error is not None and done.error.startswith(("FileExistsError", "OSError", "NotADirectoryError"))
    assert [p for p in blocker.parent.rglob("*") if p.is_file()] == [blocker]
