"""A change of the analytics tenants never turns the next dbt build into a full refresh: an onboarded tenant is
built for itself only (exactly the rows a full build gives it), a tenant switched off loses only its rows, and a
tenant one of whose subjects was erased is rebuilt alone (exactly what a full refresh gives); a delete that names
no tenant still forces the full refresh."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from shironzi.audit.erasure import erasure_commit_metadata
from shironzi.lake import delete
from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.dbt_project._fixtures import TENANTS, sample_events, write_bronze
from transformations.dbt_plan import needs_full_refresh
from transformations.dbt_runner import DbtBuildResult, bronze_events_uri, dbt_home, run_dbt_build
from transformations.dbt_state import build_state_uri, read_build_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "eu-west"
NEW = {"tenant_id": "t-new", "industry": "education", "analytics_enabled": True}
TABLES = {
    ("silver", "int_events__unified"): ["tenant_id", "event_id"],
    ("silver", "int_customer_daily_activity"): ["tenant_id", "customer_id", "event_date"],
    ("gold", "fct_tenant_daily_kpis"): ["tenant_id", "event_date"],
    ("gold", "fct_tenant_usage"): ["tenant_id", "usage_date"],
    ("gold", "fct_churn_labels"): ["tenant_id", "customer_id", "snapshot_date"],
    ("gold", "dim_customers"): ["tenant_id", "customer_id"],
    ("gold", "fct_cohort_retention"): ["tenant_id", "cohort_month", "months_since_signup"],
}
MERGED = [t for t in TABLES if t[1] not in ("dim_customers", "fct_cohort_retention")]


def _uri(settings: Settings, layer: str, table: str) -> str:
    return table_uri(settings.resolved_lake_uri, layer=layer, table=table, region=REGION)  # type: ignore[arg-type]


def _frames(settings: Settings) -> dict[tuple[str, str], pl.DataFrame]:
    """Every model table, sorted by its key; the ingestion watermark column aside (it records when a row was
    computed, which differs between an increment and a rebuild)."""
    return {
        (layer, table): pl.read_delta(_uri(settings, layer, table))
        .drop("last_ingested_at", strict=False)
        .sort(keys)
        for (layer, table), keys in TABLES.items()
    }


def _commits_since(uri: str, version: int) -> list[dict]:
    return [c for c in DeltaTable(uri).history() if c["version"] > version]


@pytest.fixture(scope="module")
def first_build(module_settings: Settings) -> DbtBuildResult:
    """Bronze holds t-new's history already (an import before onboarding); the registry does not list it yet."""
    events = sample_events()
    new_rows = [{**e, "tenant_id": NEW["tenant_id"], "event_id": e["event_id"].replace("t-school", "t-new")}
                for e in events if e["tenant_id"] == "t-school"]
    write_bronze(bronze_events_uri(module_settings, REGION), events + new_rows)
    result = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert result.success, result.failures
    return result


def _twin(frame: pl.DataFrame, tenant: str) -> pl.DataFrame:
    """A tenant's rows without what names the tenant (ids, byte counts of ids), comparable across tenants."""
    rows = frame.filter(pl.col("tenant_id") == tenant).drop("tenant_id", "payload_bytes", strict=False)
    if "event_id" in rows.columns:
        rows = rows.with_columns(pl.col("event_id").str.replace(f"^{tenant}-", ""))
    return rows.sort(rows.columns)


def test_onboarded_tenant_is_built_alone_and_exactly(first_build: DbtBuildResult, module_settings: Settings) -> None:
    """t-new's bronze history is t-school's, under another id: the increment must give it exactly t-school's rows
    (which the first, full build computed), and leave every other tenant's rows as they were."""
    state = read_build_state(module_settings, REGION)
    assert state is not None and NEW["tenant_id"] not in state[0]
    assert build_state_uri(module_settings, REGION).startswith(module_settings.resolved_lake_uri)
    before = _frames(module_settings)
    versions = {t: DeltaTable(_uri(module_settings, *t)).version() for t in TABLES}

    result = run_dbt_build(region=REGION, tenants=[*TENANTS, NEW], settings=module_settings)
    assert result.success, result.failures
    assert not result.full_refresh
    for table in MERGED:  # no overwrite of a merged table: an increment for t-new, nobody else's files rewritten
        since = _commits_since(_uri(module_settings, *table), versions[table])
        commits = {c.get("shironzi.operation"): c for c in since}
        # nothing else arrived: no partition merge, not even the churn labels' re-labelling of recent snapshots
        assert set(commits) == {"tenants_added"}, (table, commits)
        assert commits["tenants_added"]["operationMetrics"]["num_removed_files"] == 0, table
    # the data tests checked t-new's rows, not every day its history touches
    run_dir = dbt_home(module_settings, REGION) / "target" / "run"
    (path,) = run_dir.rglob("not_null_int_events__unified_event_date.sql")
    compiled = path.read_text()
    assert "tenant_id in ('t-new')" in compiled and "event_date in (" not in compiled
    _grain_test_checks_the_added_tenant_within_its_own_rows(module_settings, run_dir)
    state = read_build_state(module_settings, REGION)
    assert state is not None and NEW["tenant_id"] in state[0]

    after = _frames(module_settings)
    for table in TABLES:
        new_rows = _twin(after[table], NEW["tenant_id"])
        assert new_rows.height > 0, table
        assert_frame_equal(new_rows, _twin(before[table], "t-school"), check_exact=False, rel_tol=1e-9)
        assert_frame_equal(after[table].filter(pl.col("tenant_id") != NEW["tenant_id"]), before[table],
                           check_exact=False, rel_tol=1e-9)


def _grain_test_checks_the_added_tenant_within_its_own_rows(settings: Settings, run_dir: Path) -> None:
    """The grain test of int_events__unified (tenant_id, event_id) groups t-new's rows alone: a key holding
    tenant_id cannot be shared with another tenant's row, so it reads no other key of the table. Run as compiled
    on the table plus one repeated t-new row, it finds that duplicate."""
    (path,) = [p for p in run_dir.rglob("int_events__unified.yml/unique_combination_of_columns__*.sql")
               if "tenant_id, event_id" in p.read_text()]
    grain = path.read_text()
    assert "tenant_id in ('t-new')" in grain and "changed_keys" not in grain, grain
    rows = pl.read_delta(_uri(settings, "silver", "int_events__unified")).to_arrow()
    repeated = rows.filter(pc.equal(rows.column("tenant_id"), NEW["tenant_id"])).slice(0, 1)
    with duckdb.connect() as con:
        con.execute("attach ':memory:' as shironzi")
        con.execute("create schema shironzi.silver")
        for name, table in (("clean", rows), ("broken", pa.concat_tables([rows, repeated]))):
            con.register("staged", table)
            con.execute("create or replace table shironzi.silver.int_events__unified as select * from staged")
            (failures, *_), = con.sql(grain).fetchall()
            assert failures == (0 if name == "clean" else 1), name


def test_module_off_deletes_only_that_tenants_rows(first_build: DbtBuildResult, module_settings: Settings) -> None:
    state = read_build_state(module_settings, REGION)
    assert state is not None
    tenants = [*TENANTS, NEW] if NEW["tenant_id"] in state[0] else TENANTS  # whether the onboarding test ran
    before = _frames(module_settings)
    versions = {t: DeltaTable(_uri(module_settings, *t)).version() for t in TABLES}

    off = [{**t, "analytics_enabled": False} if t["tenant_id"] == "t-clinic" else t for t in tenants]
    result = run_dbt_build(region=REGION, tenants=off, settings=module_settings)
    assert result.success, result.failures
    assert not result.full_refresh
    after = _frames(module_settings)
    for table in TABLES:
        assert "t-clinic" not in set(after[table]["tenant_id"]), table
        assert_frame_equal(after[table], before[table].filter(pl.col("tenant_id") != "t-clinic"),
                           check_exact=False, rel_tol=1e-9)
    for table in TABLES:  # one commit per table removes the tenant (never one per tenant or per partition)
        commits = _commits_since(_uri(module_settings, *table), versions[table])
        removals = [c for c in commits if c.get("shironzi.operation") == "tenants_removed"]
        assert len(removals) == 1 and removals[0]["shironzi.deleted_rows"] != "0", (table, commits)
        if table in MERGED:  # and only the partitions that held its rows were rewritten
            assert {c.get("shironzi.operation") for c in commits} <= {"tenants_removed", "partition_merge"}


def _current_tenants(settings: Settings) -> list[dict]:
    """The tenants as the earlier tests of this module left them (t-new onboarded, t-clinic off, if they ran)."""
    state = read_build_state(settings, REGION)
    assert state is not None
    built = state[0]
    tenants = [*TENANTS, NEW] if NEW["tenant_id"] in built else list(TENANTS)
    return [{**t, "analytics_enabled": t["analytics_enabled"] and t["tenant_id"] in built} for t in tenants]


def test_a_subject_erasure_rebuilds_only_that_tenant(first_build: DbtBuildResult, module_settings: Settings) -> None:
    tenants = _current_tenants(module_settings)
    bronze = bronze_events_uri(module_settings, REGION)
    subject = sorted(set(pl.read_delta(bronze).filter(pl.col("tenant_id") == "t-shop")["customer_id"]))[0]
    versions = {t: DeltaTable(_uri(module_settings, *t)).version() for t in TABLES}
    assert delete(bronze, f"tenant_id = 't-shop' AND customer_id = '{subject}'",
                  metadata=erasure_commit_metadata("t-shop")) > 0
    assert not needs_full_refresh(region=REGION, settings=module_settings)

    result = run_dbt_build(region=REGION, tenants=tenants, settings=module_settings)
    assert result.success, result.failures
    assert not result.full_refresh
    for table in MERGED:  # t-shop's rows out and back in; nobody else's partitions beyond the usual re-labelling
        operations = {c.get("shironzi.operation") for c in _commits_since(_uri(module_settings, *table),
                                                                            versions[table])}
        assert {"tenants_removed", "tenants_added"} <= operations <= {"tenants_removed", "tenants_added",
                                                                      "partition_merge"}, (table, operations)
    incremental = _frames(module_settings)
    for frame in incremental.values():
        if "customer_id" in frame.columns:
            assert frame.filter((pl.col("tenant_id") == "t-shop") & (pl.col("customer_id") == subject)).is_empty()

    full = run_dbt_build(region=REGION, tenants=tenants, settings=module_settings, full_refresh=True)
    assert full.success, full.failures
    rebuilt = _frames(module_settings)
    for table in TABLES:  # the increment gave every tenant exactly what a full refresh gives
        assert_frame_equal(incremental[table], rebuilt[table], check_exact=False, rel_tol=1e-9)


def test_a_delete_that_names_no_tenant_still_forces_a_full_refresh(
    first_build: DbtBuildResult, module_settings: Settings
) -> None:
    tenants = _current_tenants(module_settings)
    assert run_dbt_build(region=REGION, tenants=tenants, settings=module_settings).success
    assert not needs_full_refresh(region=REGION, settings=module_settings)
    bronze = bronze_events_uri(module_settings, REGION)
    assert delete(bronze, "tenant_id = 't-school' AND event_type = 'lesson_completed'") > 0
    assert needs_full_refresh(region=REGION, settings=module_settings)
