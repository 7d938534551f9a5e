"""The lake_maintenance DAG's retention step: it fails with the threshold message instead of deleting, and a
run triggered with confirm_retention goes on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from orchestration import pipeline
from shironzi.audit.log import reset_audit_logs
from shironzi.audit.retention import RetentionConfirmationRequired
from shironzi.lake.delta import append, read_arrow, table_version
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext
from shironzi.tenancy.registry import get_registry, reset_registries


@pytest.fixture
def lake_home(home: Path) -> Iterator[Path]:
    reset_registries()
    reset_audit_logs()
    yield home
    reset_audit_logs()
    reset_registries()


def test_retention_task_fails_clearly_and_confirm_proceeds(lake_home: Path) -> None:
    admin = TenantContext.admin(actor="ops", purpose="tests")
    tenant, _ = get_registry().provision_tenant(admin, slug="shop", name="Shop", industry="ecommerce")
    bronze = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    now = dt.datetime.now(dt.UTC)
    ingested = [now - dt.timedelta(days=500), now - dt.timedelta(days=2)]
    append(bronze, pa.table({
        "tenant_id": [tenant.id] * 2, "customer_id": ["c1", "c2"],
        "ingested_at": pa.array(ingested, pa.timestamp("us", tz="UTC")),
    }))
    before = table_version(bronze)
    with pytest.raises(RetentionConfirmationRequired, match=f"50% of tenant {tenant.id}'s rows"):
        pipeline.enforce_retention_policies()
    assert table_version(bronze) == before and read_arrow(bronze).num_rows == 2
    summary = pipeline.enforce_retention_policies(confirm=True)
    assert summary["rows_deleted"] == 1 and summary["tables"] == ["eu-west/bronze/events"]
    assert read_arrow(bronze).column("customer_id").to_pylist() == ["c2"]
