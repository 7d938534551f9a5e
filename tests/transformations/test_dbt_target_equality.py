"""The curated project gives the same rows on both dbt targets (dbt-duckdb, and dbt-spark on Sail): the staging
views over one bronze lake, and every silver/gold Delta table built into two lake roots, after a full build and after
an incremental one (a new day and a late event), compared row for row after a canonical sort with floats to 1e-9
relative. Every dbt data test and unit test passes on both targets."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake import DeltaTable

from shironzi.lake import history
from shironzi.lake.paths import table_uri
from shironzi.metering.usage import usage_uri
from shironzi.settings import Settings
from tests.dbt_project._fixtures import INGESTED, START, TENANTS, event, meter_usage, sample_events, write_bronze
from transformations.dbt_runner import bronze_events_uri, dbt_home, registry_snapshot_uri, run_dbt_build
from transformations.spark import get_spark, stop_spark

REGION = "eu-west"
STAGING = ["stg_events__ecommerce", "stg_events__healthcare", "stg_events__education", "stg_platform__tenants",
           "stg_platform__usage"]
TABLES = {"silver": ["int_events__unified", "int_customer_daily_activity"],
                 "gold": ["fct_tenant_daily_kpis", "fct_tenant_usage", "dim_customers", "fct_churn_labels",
                          "fct_cohort_retention"]}
# each engine hashes member ids with its own function: the checksum detects changes within one target only
ENGINE_SPECIFIC = {"fct_cohort_retention": {"members_checksum"}}


def _canonical(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    def normal(value: Any) -> Any:
        if hasattr(value, "tzinfo") and hasattr(value, "hour"):
            return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    return sorted((tuple(normal(v) for v in row) for row in rows), key=repr)


def _same(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> bool:
    if len(left) != len(right):
        return False
    for a_row, b_row in zip(left, right, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not (math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))):
                    return False
            elif a != b:
                return False
    return True


@pytest.mark.integration
@pytest.mark.slow
def test_staging_models_give_the_same_rows_on_duckdb_and_spark(settings: Settings) -> None:
    rows = sample_events(days=6)
    rows.append(event("t-shop", "c1", "order_placed", rows[0]["event_date"], event_id="bad-json", properties="{oops"))
    bronze = bronze_events_uri(settings, REGION)
    write_bronze(bronze, rows)
    meter_usage(settings, [("t-shop", rows[0]["event_date"], 3), ("t-clinic", rows[0]["event_date"], 5)],
                dt.datetime(2024, 6, 2, 12, tzinfo=dt.UTC))
    build = {"region": REGION, "tenants": TENANTS, "settings": settings, "select": "event_types staging",
             "indirect_selection": "cautious"}
    duck = run_dbt_build(**build, target="duckdb")
    assert duck.success, duck.failures
    try:
        spark_result = run_dbt_build(**build, target="spark")
        assert spark_result.success, spark_result.failures
        assert sorted(spark_result.models_built) == sorted(STAGING)
        spark = get_spark(settings)
        with duckdb.connect(str(dbt_home(settings, REGION) / "shironzi.duckdb"), read_only=True) as con:
            con.execute("set TimeZone = 'UTC'")
            # the staging views read the sources as the datasets dbt-duckdb registers on its own cursors
            con.register("shironzi_bronze_events_df", DeltaTable(bronze).to_pyarrow_dataset())
            registry = DeltaTable(registry_snapshot_uri(settings))
            con.register("shironzi_platform_tenants_df", registry.to_pyarrow_dataset())
            con.register("shironzi_platform_usage_df", DeltaTable(usage_uri(settings)).to_pyarrow_dataset())
            for model in STAGING:
                columns = [c[0] for c in con.execute(f"describe staging.{model}").fetchall()]
                on_duckdb = _canonical(con.execute(f"select * from staging.{model}").fetchall())
                spark_frame = spark.sql(f"select * from staging.{model}")
                assert spark_frame.columns == columns, model
                on_spark = _canonical([tuple(r) for r in spark_frame.collect()])
                assert on_duckdb, model if model != "stg_platform__tenants" else None
                assert _same(on_duckdb, on_spark), (model, on_duckdb[:3], on_spark[:3])
    finally:
        stop_spark()


def _delta_rows(location: str, skip: set[str]) -> tuple[list[str], list[tuple[Any, ...]]]:
    table = DeltaTable(location).to_pyarrow_table()
    names = sorted(set(table.column_names) - skip)
    return names, _canonical([tuple(row[n] for n in names) for row in table.to_pylist()])


def _assert_same_tables(duck: Settings, spark: Settings) -> None:
    for layer, models in TABLES.items():
        for model in models:
            skip = ENGINE_SPECIFIC.get(model, set())
            on_duckdb = _delta_rows(table_uri(duck.resolved_lake_uri, layer=layer, table=model, region=REGION), skip)
            on_spark = _delta_rows(table_uri(spark.resolved_lake_uri, layer=layer, table=model, region=REGION), skip)
            assert on_duckdb[0] == on_spark[0], model
            assert on_duckdb[1], model
            assert _same(on_duckdb[1], on_spark[1]), (model, len(on_duckdb[1]), len(on_spark[1]))


@pytest.mark.integration
@pytest.mark.slow
def test_every_model_builds_the_same_tables_on_duckdb_and_spark_full_and_incremental(tmp_path: Path) -> None:
    homes = {"duckdb": Settings(home=tmp_path / "duckdb"), "spark": Settings(home=tmp_path / "spark")}
    rows = sample_events(days=21)
    later = INGESTED + dt.timedelta(days=1)
    increment = [
        event("t-shop", "c1", "order_placed", START + dt.timedelta(21), event_id="new-day", amount=30.0,
              ingested_at=later),
        event("t-clinic", "c2", "appointment_attended", START + dt.timedelta(3), event_id="late", ingested_at=later),
    ]
    try:
        for step, bronze_rows in (("full", rows), ("incremental", increment)):
            for target, settings in homes.items():
                write_bronze(bronze_events_uri(settings, REGION), bronze_rows)
                result = run_dbt_build(region=REGION, tenants=TENANTS, settings=settings, target=target)
                assert result.success, (step, target, result.failures)
                assert result.tests_failed == 0 and result.tests_passed > 0, (step, target)
            _assert_same_tables(homes["duckdb"], homes["spark"])
        merged = table_uri(homes["spark"].resolved_lake_uri, layer="silver", table="int_events__unified", region=REGION)
        assert history(merged)[0]["operation"] == "MERGE"  # the spark build merged the increment
        built = {m for models in TABLES.values() for m in models}
        assert built == {m for m in result.models_built if not m.startswith("stg_")}, result.models_built
    finally:
        stop_spark()
