"""A full dbt build on hand-made bronze: every dbt test passes, the KPIs match an independent Polars
computation, modules gate the marts, quarantine never reaches silver, gold reads back everywhere, and
a second build changes nothing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.dbt_project._fixtures import START, TENANTS, event, sample_events, write_bronze
from transformations.dbt_runner import DbtBuildResult, bronze_events_uri, dbt_home, run_dbt_build

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "eu-west"
GOLD = [
    "dim_customers",
    "fct_churn_labels",
    "fct_cohort_retention",
    "fct_tenant_daily_kpis",
    "fct_tenant_usage",
]
SILVER = ["int_customer_daily_activity", "int_events__unified"]
EMPTY_DAY = START + dt.timedelta(days=50)
QUARANTINED_ID = "t-shop-quarantined-1"


def _uri(settings: Settings, layer: str, table: str) -> str:
    return table_uri(settings.resolved_lake_uri, layer=layer, table=table, region=REGION)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bronze_rows() -> list[dict[str, Any]]:
    # an empty day: no event at all on EMPTY_DAY
    return [row for row in sample_events() if row["event_date"] != EMPTY_DAY]


@pytest.fixture(scope="module")
def build(module_settings: Settings, bronze_rows: list[dict[str, Any]]) -> DbtBuildResult:
    write_bronze(bronze_events_uri(module_settings, REGION), bronze_rows)
    quarantine = _uri(module_settings, "quarantine", "events")
    write_bronze(
        quarantine,
        [
            event(
                "t-shop",
                "c1",
                "order_placed",
                START + dt.timedelta(3),
                event_id=QUARANTINED_ID,
                amount=1000.0,
            )
        ],
    )
    return run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)


def _gold(settings: Settings, table: str) -> pl.DataFrame:
    return pl.read_delta(_uri(settings, "gold", table))


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_build_succeeds_with_every_data_and_unit_test_passing(
    build: DbtBuildResult, module_settings: Settings
) -> None:
    assert build.success, build.failures
    assert build.tests_failed == 0
    assert set(GOLD + SILVER) <= set(build.models_built)
    assert set(build.gold_versions) == set(GOLD)
    results = json.loads((dbt_home(module_settings, REGION) / "target" / "run_results.json").read_text())
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    unit = {uid: status for uid, status in statuses.items() if uid.startswith("unit_test.")}
    assert len(unit) == 4 and set(unit.values()) == {"pass"}
    isolation = [uid for uid in statuses if ".tenant_isolated" in uid]
    assert len(isolation) >= 7 and all(statuses[uid] == "pass" for uid in isolation)
    assert build.tests_passed == sum(1 for s in statuses.values() if s == "pass")


def _expected_kpis(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The KPI definitions, computed independently with Polars from the raw rows."""
    enabled = {t["tenant_id"] for t in TENANTS if t["analytics_enabled"]}
    revenue_types = [
        "order_placed",
        "subscription_changed",
        "prescription_filled",
        "claim_submitted",
        "payment_made",
    ]
    signup_types = ["customer_signed_up", "patient_registered", "student_enrolled"]
    core_types = ["order_placed", "appointment_attended", "lesson_completed"]
    closure_types = ["account_closed", "patient_disenrolled", "student_withdrew"]
    frame = pl.DataFrame(rows).filter(pl.col("tenant_id").is_in(sorted(enabled)))
    return (
        frame.group_by("tenant_id", "event_date")
        .agg(
            active_customers=pl.col("customer_id").n_unique(),
            new_customers=pl.col("customer_id").filter(pl.col("event_type").is_in(signup_types)).n_unique(),
            events=pl.len(),
            revenue=pl.col("amount").filter(pl.col("event_type").is_in(revenue_types)).sum(),
            refunds=pl.col("amount").filter(pl.col("event_type") == "order_refunded").sum(),
            core_actions=pl.col("event_type").is_in(core_types).sum(),
            support_tickets=(pl.col("event_type") == "support_ticket_opened").sum(),
            closed_customers=pl.col("customer_id")
            .filter(pl.col("event_type").is_in(closure_types))
            .n_unique(),
        )
        .with_columns(
            pl.col(c).cast(pl.Int64)
            for c in [
                "active_customers",
                "new_customers",
                "events",
                "core_actions",
                "support_tickets",
                "closed_customers",
            ]
        )
    )


def test_daily_kpis_match_an_independent_polars_computation(
    build: DbtBuildResult, module_settings: Settings, bronze_rows: list[dict[str, Any]]
) -> None:
    expected = _expected_kpis(bronze_rows)
    actual = _gold(module_settings, "fct_tenant_daily_kpis").select(expected.columns)
    assert actual.height == expected.height > 100
    assert _sorted(actual).equals(_sorted(expected.select(actual.columns)))
    dim = _gold(module_settings, "dim_customers")
    ltv = (
        pl.DataFrame(bronze_rows)
        .filter(pl.col("tenant_id") == "t-shop")
        .group_by("customer_id")
        .agg(
            value=pl.col("amount")
            .filter(pl.col("event_type").is_in(["order_placed", "subscription_changed"]))
            .sum()
            - pl.col("amount").filter(pl.col("event_type") == "order_refunded").sum()
        )
    )
    joined = dim.filter(pl.col("tenant_id") == "t-shop").join(ltv, on="customer_id")
    assert joined.height == 6
    assert (joined["lifetime_value"] - joined["value"]).abs().max() < 1e-9


def test_tenants_with_analytics_off_or_no_events_are_in_no_mart(
    build: DbtBuildResult, module_settings: Settings
) -> None:
    for layer, tables in (("silver", SILVER), ("gold", GOLD)):
        for table in tables:
            tenants = set(pl.read_delta(_uri(module_settings, layer, table))["tenant_id"].unique())
            assert tenants == {"t-shop", "t-clinic", "t-school"}, (table, tenants)


def test_quarantined_event_never_reaches_silver(build: DbtBuildResult, module_settings: Settings) -> None:
    events = pl.read_delta(_uri(module_settings, "silver", "int_events__unified"))
    assert QUARANTINED_ID not in set(events["event_id"])
    assert (
        events.height
        == pl.read_delta(bronze_events_uri(module_settings, REGION))
        .filter(pl.col("tenant_id") != "t-dark")
        .height
    )


def test_empty_day_has_no_kpi_row_and_breaks_nothing(
    build: DbtBuildResult, module_settings: Settings
) -> None:
    kpis = _gold(module_settings, "fct_tenant_daily_kpis")
    days = set(kpis["event_date"])
    assert any(row["event_date"] == EMPTY_DAY for row in sample_events())  # the day was emptied
    assert EMPTY_DAY not in days
    assert min(days) < EMPTY_DAY < max(days)


def test_gold_tables_read_back_with_deltalake_polars_and_duckdb(
    build: DbtBuildResult, module_settings: Settings
) -> None:
    for table in GOLD:
        uri = _uri(module_settings, "gold", table)
        delta = DeltaTable(uri)
        arrow = delta.to_pyarrow_table()
        assert arrow.num_rows > 0
        assert pl.read_delta(uri).height == arrow.num_rows
        connection = duckdb.connect()
        connection.register("gold_table", delta.to_pyarrow_dataset())
        assert connection.execute("select count(*) from gold_table").fetchall() == [(arrow.num_rows,)]
    kpis = DeltaTable(_uri(module_settings, "gold", "fct_tenant_daily_kpis"))
    assert kpis.metadata().partition_columns == ["event_date"]
    schema = {f.name: str(f.type) for f in kpis.schema().fields}
    assert schema["events"] == 'PrimitiveType("long")' and schema["tenant_id"] == 'PrimitiveType("string")'


def test_second_build_changes_no_gold_row(build: DbtBuildResult, module_settings: Settings) -> None:
    before = {table: _sorted(_gold(module_settings, table)) for table in GOLD}
    again = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert again.success, again.failures
    for table in GOLD:
        assert _sorted(_gold(module_settings, table)).equals(before[table]), table
    # the incremental facts saw no new data: no commit at all
    for table in ("fct_tenant_daily_kpis", "fct_tenant_usage"):
        assert again.gold_versions[table] == build.gold_versions[table]


def test_docs_generate_and_every_model_and_column_is_described(
    build: DbtBuildResult, module_settings: Settings
) -> None:
    from transformations.dbt_runner import _invoke, dbt_workdir

    with dbt_workdir(module_settings, REGION) as work:
        outcome = _invoke("docs generate", settings=module_settings, region=REGION)
        assert outcome.success, outcome.exception
        catalog = json.loads((work / "target" / "catalog.json").read_text())
        manifest = json.loads((work / "target" / "manifest.json").read_text())
    assert any(key.endswith("fct_tenant_daily_kpis") for key in catalog["nodes"])
    models = [n for n in manifest["nodes"].values() if n["resource_type"] in ("model", "seed")]
    assert len(models) == 13  # 12 + stg_platform__usage (usage metering)
    for node in models:
        assert node["description"].strip(), node["name"]
        assert node["columns"], node["name"]
        assert all(column["description"].strip() for column in node["columns"].values()), node["name"]
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert {"tenant_analytics_dashboard", "churn_prediction_api"} <= set(exposures)
    assert exposures["tenant_analytics_dashboard"]["type"] == "dashboard"


def test_the_build_books_each_models_duration_in_the_pipeline_metrics(build: DbtBuildResult) -> None:
    """The dbt_build stage summary carries per-model figures, which the monitoring observer exports."""
    from monitoring.metrics import PIPELINE_METRICS

    get = PIPELINE_METRICS.registry.get_sample_value
    for model in GOLD + SILVER:
        assert (get("shironzi_dbt_model_duration_seconds_count", {"model": model}) or 0) >= 1, model
    assert (get("shironzi_stage_runs_total", {"stage": "dbt_build", "outcome": "succeeded"}) or 0) >= 1
