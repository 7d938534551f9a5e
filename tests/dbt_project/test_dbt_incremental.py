"""Incremental builds: a late event re-merges only its day, bronze schema evolution flows through
ignored. Switching a tenant's analytics on or off: test_dbt_tenant_changes.py."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.dbt_project._fixtures import BRONZE_SCHEMA, START, TENANTS, event, sample_events, write_bronze
from transformations.dbt_runner import DbtBuildResult, bronze_events_uri, dbt_home, run_dbt_build

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

    from shironzi.lake.leases import table_lease

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


def _gold_frames(settings: Settings, tables: dict[str, list[str]]) -> dict[str, pl.DataFrame]:
    return {
        table: pl.read_delta(_uri(settings, "gold", table)).drop("last_ingested_at").sort(keys)
        for table, keys in tables.items()
    }


def test_incremental_customers_and_cohorts_equal_a_full_rebuild(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    """dim_customers folds a new day into the previous rows and re-aggregates a customer with a late event;
    fct_cohort_retention recomputes only changed months and cohorts (a brand-new customer, a first signup
    moving a customer to a later cohort). Both equal what a full rebuild yields."""
    bronze = bronze_events_uri(module_settings, REGION)
    last_day = pl.read_delta(bronze)["event_date"].max()
    assert isinstance(last_day, dt.date)
    new_day = last_day + dt.timedelta(days=1)
    ingested = LATE_INGESTED + dt.timedelta(hours=20)  # after the churn test's, before the next tests'
    write_bronze(
        bronze,
        [
            event("t-shop", "c1", "order_placed", new_day, event_id="t-shop-fold-1", amount=12.5, ingested_at=ingested),
            event("t-school", "c9", "student_enrolled", new_day, event_id="t-school-new-c9", ingested_at=ingested),
            # a late closure on a day t-clinic/c2 was already active: re-aggregated from its whole history
            event("t-clinic", "c2", "patient_disenrolled", START + dt.timedelta(days=34), event_id="t-clinic-late-c2",
                  ingested_at=ingested),
            # t-shop/c6 only browsed in month 1 (cohort = month 1), then signs up on the new day: it moves cohort
            event("t-shop", "c6", "product_viewed", START + dt.timedelta(days=5), event_id="t-shop-c6-browse",
                  ingested_at=ingested - dt.timedelta(hours=1)),
        ],
    )
    first = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert first.success, first.failures
    write_bronze(
        bronze,
        [event("t-shop", "c6", "customer_signed_up", new_day, event_id="t-shop-c6-signup",
               ingested_at=ingested + dt.timedelta(hours=1))],
    )
    dim_uri = _uri(module_settings, "gold", "dim_customers")
    version = DeltaTable(dim_uri).version()
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    assert not first.full_refresh and not result.full_refresh
    assert DeltaTable(dim_uri).version() == version + 1
    tables = {
        "dim_customers": ["tenant_id", "customer_id"],
        "fct_cohort_retention": ["tenant_id", "cohort_month", "months_since_signup"],
    }
    incremental = _gold_frames(module_settings, tables)
    c6 = incremental["dim_customers"].filter((pl.col("tenant_id") == "t-shop") & (pl.col("customer_id") == "c6"))
    assert c6["cohort_month"].to_list() == [new_day.replace(day=1)]
    assert c6["active_days"].to_list() == [2]

    full = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings, full_refresh=True)
    assert full.success, full.failures
    rebuilt = _gold_frames(module_settings, tables)
    for table in tables:
        assert_frame_equal(incremental[table], rebuilt[table], check_exact=False, rel_tol=1e-9)


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


def test_customers_and_cohorts_written_before_their_new_columns_are_computed_in_full(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    """A table written before the incremental columns existed (an upgrade) is computed in full once, not merged."""
    from deltalake import write_deltalake

    old_columns = {
        "dim_customers": ["last_ingested_at", "first_event_date", "cohort_month"],
        "fct_cohort_retention": ["members_checksum", "last_ingested_at"],
    }
    expected = {}
    for table, columns in old_columns.items():
        uri = _uri(module_settings, "gold", table)
        expected[table] = pl.read_delta(uri)
        write_deltalake(uri, expected[table].drop(columns).to_arrow(), mode="overwrite", schema_mode="overwrite")
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    for table, frame in expected.items():
        keys = ["tenant_id", "customer_id"] if table == "dim_customers" else ["tenant_id", "cohort_month",
                                                                               "months_since_signup"]
        assert_frame_equal(pl.read_delta(_uri(module_settings, "gold", table)).sort(keys), frame.sort(keys),
                           check_exact=False, rel_tol=1e-9)




NOTHING_NEW_MERGED = [("silver", "int_events__unified"), ("silver", "int_customer_daily_activity"),
                      ("gold", "fct_tenant_daily_kpis"), ("gold", "fct_churn_labels")]
SCOPED_TESTS = ["not_null_int_events__unified_event_date",
                "int_events__unified.yml/unique_combination_of_columns__*",  # dbt names it by a hash
                "tenant_isolated_int_events__unified_bronze"]


def _compiled_test(settings: Settings, name: str) -> str:
    (path,) = (dbt_home(settings, REGION) / "target" / "run").rglob(f"{name}.sql")
    return path.read_text()


def test_a_build_with_nothing_new_commits_nothing_and_does_not_test_again(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    """Once a build has passed every test, a build with nothing new commits nothing to the merged models (churn
    labels included: no existing tenant's data moved) and does not re-check what the passed build tested."""
    settled = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert settled.success, settled.failures
    versions = {t: DeltaTable(_uri(module_settings, *t)).version() for t in NOTHING_NEW_MERGED}

    again = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert again.success and not again.full_refresh, again.failures
    assert {t: DeltaTable(_uri(module_settings, *t)).version() for t in NOTHING_NEW_MERGED} == versions
    for name in SCOPED_TESTS:
        compiled = _compiled_test(module_settings, name)
        assert "where false" in compiled, (name, compiled)
        assert "event_date in (" not in compiled, name


def test_incremental_tests_see_rewritten_partitions_but_keys_across_the_whole_table(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    """On an incremental build a test on a merged model checks only the partitions the merge rewrote, yet a key
    without the partition column is checked against the whole table: an event re-delivered under another
    event_date (the merge keeps the old day's row) fails the uniqueness test. `full_tests` checks every row."""
    write_bronze(
        bronze_events_uri(module_settings, REGION),
        [event("t-shop", "c0", "customer_signed_up", START + dt.timedelta(days=60), event_id="t-shop-c0-0",
               ingested_at=LATE_INGESTED + dt.timedelta(days=1, hours=2))],
        schema_mode="merge",  # bronze has gained a column in the schema-evolution test
    )
    scoped = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert not scoped.success and not scoped.full_refresh
    assert [f for f in scoped.failures if "unique_combination_of_columns_int_events__unified" in f], scoped.failures
    moved_day = (START + dt.timedelta(days=60)).isoformat()
    not_null_name = "not_null_int_events__unified_event_date"
    assert f"event_date in ('{moved_day}')" in _compiled_test(module_settings, not_null_name)

    # a failed build's scope is not marked tested: the next build, with nothing new, checks it again
    again = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert not again.success
    assert [f for f in again.failures if "unique_combination_of_columns_int_events__unified" in f], again.failures
    assert f"event_date in ('{moved_day}')" in _compiled_test(module_settings, not_null_name)

    full = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings, full_tests=True)
    assert not full.success
    assert [f for f in full.failures if "unique_combination_of_columns_int_events__unified" in f], full.failures
    assert "event_date in (" not in _compiled_test(module_settings, "not_null_int_events__unified_event_date")
