"""Incremental builds: a late event re-merges only its day, bronze schema evolution flows through
ignored, and switching a tenant's analytics off rebuilds the facts without it."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.dbt_project.bronze import BRONZE_SCHEMA, START, TENANTS, event, sample_events, write_bronze
from transformations.dbt_runner import DbtBuildResult, bronze_events_uri, run_dbt_build

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "eu-west"
LATE_DAY = START + dt.timedelta(days=14)
LATE_INGESTED = dt.datetime(2024, 9, 1, tzinfo=dt.UTC)


def _uri(settings: Settings, layer: str, table: str) -> str:
    return table_uri(settings.resolved_lake_uri, layer=layer, table=table, region=REGION)  # type: ignore[arg-type]


def _files(uri: str) -> set[str]:
    return set(DeltaTable(uri).file_uris())


@pytest.fixture(scope="module")
def first_build(module_settings: Settings) -> DbtBuildResult:
    write_bronze(bronze_events_uri(module_settings, REGION), sample_events())
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    return result


def test_late_event_months_back_rewrites_only_its_partition(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    kpi_uri = _uri(module_settings, "gold", "fct_tenant_daily_kpis")
    silver_uri = _uri(module_settings, "silver", "int_events__unified")
    kpis_before = pl.read_delta(kpi_uri)
    files_before = {uri: _files(uri) for uri in (kpi_uri, silver_uri)}
    version_before = DeltaTable(kpi_uri).version()

    write_bronze(
        bronze_events_uri(module_settings, REGION),
        [
            event(
                "t-shop",
                "c1",
                "order_placed",
                LATE_DAY,
                event_id="t-shop-late-1",
                amount=99.0,
                ingested_at=LATE_INGESTED,
            )
        ],
    )
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    assert not result.full_refresh

    partition = f"event_date={LATE_DAY.isoformat()}"
    for uri in (kpi_uri, silver_uri):
        removed = files_before[uri] - _files(uri)
        added = _files(uri) - files_before[uri]
        assert removed and added, uri
        assert all(partition in path for path in removed | added), (uri, removed, added)
    table = DeltaTable(kpi_uri)
    assert table.version() == version_before + 1
    commit = table.history(1)[0]
    assert commit["shironzi.operation"] == "partition_merge"
    assert commit["operationMetrics"]["num_removed_files"] == 1
    assert commit["operationMetrics"]["num_added_files"] == 1

    kpis_after = pl.read_delta(kpi_uri)
    key = (pl.col("tenant_id") == "t-shop") & (pl.col("event_date") == LATE_DAY)
    before_row, after_row = (
        kpis_before.filter(key).row(0, named=True),
        kpis_after.filter(key).row(0, named=True),
    )
    assert after_row["events"] == before_row["events"] + 1
    assert after_row["revenue"] == pytest.approx(before_row["revenue"] + 99.0)
    assert after_row["orders"] == before_row["orders"] + 1
    untouched = ~key
    assert (
        kpis_after.filter(untouched)
        .sort("tenant_id", "event_date")
        .drop("last_ingested_at")
        .equals(kpis_before.filter(untouched).sort("tenant_id", "event_date").drop("last_ingested_at"))
    )


def test_gold_writes_wait_for_an_erasure_lease(first_build: DbtBuildResult, module_settings: Settings) -> None:
    """The Delta plugin holds each table's shared lease, so a build cannot commit while an erasure holds it."""
    import threading
    import time

    from shironzi.audit.lease import table_lease

    kpi_uri = _uri(module_settings, "gold", "fct_tenant_daily_kpis")
    silver_uri = _uri(module_settings, "silver", "int_events__unified")
    write_bronze(
        bronze_events_uri(module_settings, REGION),
        [event("t-shop", "c1", "order_placed", LATE_DAY, event_id="t-shop-lease-1", amount=5.0,
               ingested_at=LATE_INGESTED + dt.timedelta(hours=12))],
    )
    kpi_version, silver_version = DeltaTable(kpi_uri).version(), DeltaTable(silver_uri).version()
    outcome: list[DbtBuildResult] = []
    build = threading.Thread(
        target=lambda: outcome.append(run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings))
    )
    with table_lease(kpi_uri, mode="exclusive"):
        build.start()
        deadline = time.monotonic() + 120
        while DeltaTable(silver_uri).version() == silver_version and build.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # far longer than the KPI merge takes once its lease is free
        assert build.is_alive(), "the build finished while the KPI table's lease was held exclusively"
        assert DeltaTable(kpi_uri).version() == kpi_version
    build.join(timeout=180)
    assert outcome and outcome[0].success, outcome and outcome[0].failures
    assert DeltaTable(kpi_uri).version() > kpi_version


def test_incremental_churn_labels_equal_a_full_rebuild(first_build: DbtBuildResult, module_settings: Settings) -> None:
    """New days re-label only recent snapshots, and the result is exactly what a full rebuild yields."""
    labels_uri = _uri(module_settings, "gold", "fct_churn_labels")
    bronze = pl.read_delta(bronze_events_uri(module_settings, REGION))
    last_day = bronze["event_date"].max()
    assert isinstance(last_day, dt.date)
    new_days = [last_day + dt.timedelta(days=d) for d in (3, 12, 26, 40)]
    write_bronze(
        bronze_events_uri(module_settings, REGION),
        [event("t-shop", "c1", "session_started", day, event_id=f"t-shop-new-{day}",
               ingested_at=LATE_INGESTED + dt.timedelta(hours=18)) for day in new_days]
        + [event("t-clinic", "c0", "portal_login", new_days[0], event_id="t-clinic-new-1",
                 ingested_at=LATE_INGESTED + dt.timedelta(hours=18))],
    )
    before = DeltaTable(labels_uri)
    partitions_before = {p for path in before.file_uris() for p in path.split("/") if p.startswith("snapshot_date=")}
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    assert not result.full_refresh
    commit = DeltaTable(labels_uri).history(1)[0]
    assert commit["shironzi.operation"] == "partition_merge"
    rewritten = commit["operationMetrics"]["num_removed_files"]
    assert 0 < rewritten < len(partitions_before) / 2, (rewritten, len(partitions_before))

    keys = ["tenant_id", "customer_id", "snapshot_date"]
    incremental = pl.read_delta(labels_uri).drop("last_ingested_at").sort(keys)
    full = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings, full_refresh=True)
    assert full.success, full.failures
    rebuilt = pl.read_delta(labels_uri).drop("last_ingested_at").sort(keys)
    assert incremental.equals(rebuilt)
    assert rebuilt["snapshot_date"].max() > dt.date.fromisoformat(
        max(p.split("=")[1] for p in partitions_before)
    ), "the new days should make later snapshots eligible"


def test_new_bronze_column_flows_through_ignored(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    evolved = BRONZE_SCHEMA.append(pa.field("device_type", pa.string()))
    row = event(
        "t-school",
        "c2",
        "forum_post",
        START + dt.timedelta(days=100),
        event_id="t-school-evolved-1",
        ingested_at=LATE_INGESTED + dt.timedelta(days=1),
    )
    write_bronze(
        bronze_events_uri(module_settings, REGION),
        [{**row, "device_type": "tablet"}],
        schema=evolved,
        schema_mode="merge",
    )
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    silver = pl.read_delta(_uri(module_settings, "silver", "int_events__unified"))
    assert "device_type" not in silver.columns
    assert "t-school-evolved-1" in set(silver["event_id"])


def test_switching_analytics_off_rebuilds_the_facts_without_the_tenant(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    tenants = [{**t, "analytics_enabled": False} if t["tenant_id"] == "t-clinic" else t for t in TENANTS]
    result = run_dbt_build(region=REGION, tenants=tenants, settings=module_settings)
    assert result.success, result.failures
    assert result.full_refresh
    for layer, table in (
        ("silver", "int_events__unified"),
        ("gold", "fct_tenant_daily_kpis"),
        ("gold", "fct_tenant_usage"),
        ("gold", "dim_customers"),
    ):
        assert set(pl.read_delta(_uri(module_settings, layer, table))["tenant_id"]) == {"t-shop", "t-school"}

