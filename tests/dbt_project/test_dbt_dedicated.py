"""Dedicated tenants get their own silver and gold from dbt: a region build covers the pooled tables and each
dedicated tenant with analytics on (its own bronze, roots, work dir and registry snapshot), never mixes their
rows, skips a dedicated tenant with analytics off, and the gold readers (model training inputs, dashboards)
find the dedicated tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from shironzi.cli.main import run
from shironzi.errors import InvalidInputError
from shironzi.lake import table_exists
from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from shironzi.tenancy import TenantContext, get_registry
from tests.dbt_project._fixtures import sample_events, write_bronze
from transformations.dbt_runner import (
    RegionBuildResult,
    bronze_events_uri,
    build_region,
    dbt_home,
    registry_snapshot_uri,
    run_dbt_build,
)
from transformations.dbt_state import has_build_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "eu-west"
KPIS = "fct_tenant_daily_kpis"
GOLD = ["dim_customers", "fct_churn_labels", "fct_cohort_retention", KPIS, "fct_tenant_usage"]


@dataclass
class Lake:
    settings: Settings
    pooled: str  # a pooled tenant
    solo: str  # dedicated, analytics on
    quiet: str  # dedicated, analytics off
    solo_events: int  # events in solo's own bronze
    result: RegionBuildResult


def _rows_as(rows: list[dict[str, Any]], source: str, tenant_id: str) -> list[dict[str, Any]]:
    return [{**r, "tenant_id": tenant_id} for r in rows if r["tenant_id"] == source]


def _gold(settings: Settings, table: str, tenant_id: str | None = None) -> str:
    placement: dict[str, Any] = {"placement": "dedicated", "tenant_id": tenant_id} if tenant_id else {}
    return table_uri(settings.resolved_lake_uri, layer="gold", table=table, region=REGION, **placement)


@pytest.fixture(scope="module")
def lake(module_settings: Settings) -> Lake:
    settings = module_settings
    registry = get_registry(settings)
    ctx = TenantContext.admin(actor="dbt-tests", purpose="dedicated dbt builds")
    made = {}
    for slug, industry, plan, placement in (
        ("pool-shop", "ecommerce", "standard", "pooled"),
        ("solo-clinic", "healthcare", "enterprise", "dedicated"),
        ("quiet-clinic", "healthcare", "free", "dedicated"),
    ):
        tenant, _ = registry.provision_tenant(
            ctx, slug=slug, name=slug, industry=industry, region=REGION, plan=plan, placement=placement
        )
        made[slug] = tenant.id
    registry.disable_module(ctx, made["quiet-clinic"], "analytics")
    rows = sample_events(days=60)
    solo_rows = _rows_as(rows, "t-clinic", made["solo-clinic"])
    # Pooled bronze: the pooled tenant, plus stray rows of the dedicated one (as a migration could leave behind):
    # the pooled build must keep them out of the pooled marts.
    write_bronze(bronze_events_uri(settings, REGION), _rows_as(rows, "t-shop", made["pool-shop"]) + solo_rows[:20])
    write_bronze(bronze_events_uri(settings, REGION, made["solo-clinic"]), solo_rows)
    quiet_rows = _rows_as(rows, "t-clinic", made["quiet-clinic"])
    write_bronze(bronze_events_uri(settings, REGION, made["quiet-clinic"]), quiet_rows)
    result = build_region(region=REGION, settings=settings)
    return Lake(settings, made["pool-shop"], made["solo-clinic"], made["quiet-clinic"], len(solo_rows), result)


def test_region_build_covers_pooled_and_the_dedicated_tenant_with_analytics_on(lake: Lake) -> None:
    result = lake.result
    assert result.success, result.failures
    assert result.pooled is not None and result.pooled.tenant_id is None
    assert set(result.dedicated) == {lake.solo}  # quiet-clinic has analytics off: no build
    solo = result.dedicated[lake.solo]
    assert solo.tenant_id == lake.solo and solo.tests_failed == 0 and solo.tests_passed > 0
    assert set(solo.gold_versions) == set(GOLD)
    # versions keyed by path under the region: pooled and dedicated never collide
    assert set(result.gold_versions) == set(GOLD) | {f"tenants/{lake.solo}/{name}" for name in GOLD}
    # own work dir, state file and registry snapshot
    assert has_build_state(lake.settings, REGION, lake.solo) and not has_build_state(lake.settings, REGION, "nobody")
    assert dbt_home(lake.settings, REGION, lake.solo) != dbt_home(lake.settings, REGION)
    assert registry_snapshot_uri(lake.settings, REGION, lake.solo) != registry_snapshot_uri(lake.settings)
    assert table_exists(registry_snapshot_uri(lake.settings, REGION, lake.solo))


def test_dedicated_gold_holds_only_its_rows_and_pooled_gold_none_of_them(lake: Lake) -> None:
    for name in GOLD:
        own = pl.read_delta(_gold(lake.settings, name, lake.solo))
        pooled = pl.read_delta(_gold(lake.settings, name))
        assert set(own["tenant_id"]) == {lake.solo}, name
        assert set(pooled["tenant_id"]) == {lake.pooled}, name
    kpis = pl.read_delta(_gold(lake.settings, KPIS, lake.solo))
    assert kpis["events"].sum() == lake.solo_events  # every event of its own bronze, none of the pooled strays
    for layer in ("silver", "gold"):
        quiet_root = table_uri(
            lake.settings.resolved_lake_uri, layer=layer, table=KPIS, region=REGION,  # type: ignore[arg-type]
            placement="dedicated", tenant_id=lake.quiet,
        ).rsplit("/", 1)[0]
        assert not Path(quiet_root).exists()


def test_a_dedicated_build_must_name_a_dedicated_tenant_of_the_region(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidInputError, match="not a dedicated tenant"):
        run_dbt_build(region=REGION, tenant_id=lake.pooled, settings=lake.settings)
    with pytest.raises(InvalidInputError, match="not a dedicated tenant"):
        run_dbt_build(region="us-east", tenant_id=lake.solo, settings=lake.settings)
    with pytest.raises(SystemExit) as exit_info:
        run(["transform", "--region", REGION, "--tenant", lake.pooled])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid_input:") and "not a dedicated tenant" in err[0]


def test_model_training_reads_the_dedicated_gold(lake: Lake) -> None:
    from models.common import read_gold_inputs

    gold = read_gold_inputs(KPIS, "analytics", columns=["tenant_id", "event_date", "events"], settings=lake.settings)
    assert lake.solo in gold.tenants and lake.quiet not in gold.tenants
    uris = dict(gold.inputs)
    own = _gold(lake.settings, KPIS, lake.solo)
    assert set(uris) == {own, _gold(lake.settings, KPIS)}
    assert uris[own] == lake.result.gold_versions[f"tenants/{lake.solo}/{KPIS}"]
    frame = pl.from_arrow(pa.concat_tables(gold.parts))
    assert isinstance(frame, pl.DataFrame)
    assert frame.filter(pl.col("tenant_id") == lake.solo)["events"].sum() == lake.solo_events
    assert set(frame["tenant_id"]) == {lake.pooled, lake.solo}


def test_dashboard_reads_follow_the_tenant_placement(lake: Lake) -> None:
    from apps import data

    lake_uri = lake.settings.resolved_lake_uri
    mine = data.daily_kpis(lake_uri, REGION, lake.solo)
    assert not mine.empty and set(mine.data["tenant_id"]) == {lake.solo}
    assert mine.data["events"].sum() == lake.solo_events
    assert mine.version == lake.result.gold_versions[f"tenants/{lake.solo}/{KPIS}"]
    assert data.customer_count(lake_uri, REGION, lake.solo) == pl.read_delta(
        _gold(lake.settings, "dim_customers", lake.solo)).height
    pooled = data.daily_kpis(lake_uri, REGION, lake.pooled)
    assert set(pooled.data["tenant_id"]) == {lake.pooled}
    assert set(data.region_kpis(lake_uri, REGION).data["tenant_id"]) == {lake.pooled, lake.solo}
    assert set(data.usage(lake_uri, REGION, None).data["tenant_id"]) == {lake.pooled, lake.solo}
    runs = data.dbt_run_results(lake.settings.home, REGION)
    assert {REGION, f"{REGION}/tenants/{lake.solo}"} == set(runs["region"])


def test_dashboard_predictions_follow_the_tenant_placement(lake: Lake) -> None:
    """Scores and forecasts of a dedicated tenant live under its own path; the dashboard reads them there."""
    import datetime as dt

    from deltalake import write_deltalake

    from apps import data
    from models.predictions import churn_scores_schema, forecasts_schema

    day, now = dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    scores = {"tenant_id": [lake.solo], "customer_id": ["c1"], "score_date": [day], "churn_probability": [0.7],
              "risk_band": ["high"], "top_reasons": ["[]"], "model_name": ["shironzi-churn"], "model_version": ["1"],
              "feature_timestamp": [now], "scored_at": [now]}
    forecasts = {"tenant_id": [lake.solo], "kpi": ["revenue"], "forecast_date": [day], "horizon_day": [1],
                 "yhat": [1.0], "yhat_lower": [0.5], "yhat_upper": [1.5], "model_name": ["shironzi-trend"],
                 "model_version": ["1"], "generated_date": [day], "generated_at": [now]}
    for table, rows, schema in (("churn_scores", scores, churn_scores_schema()),
                                ("forecasts", forecasts, forecasts_schema())):
        uri = table_uri(lake.settings.resolved_lake_uri, layer="predictions", table=table, region=REGION,
                        placement="dedicated", tenant_id=lake.solo)
        write_deltalake(uri, pa.table(rows, schema=schema), mode="overwrite")
    lake_uri = lake.settings.resolved_lake_uri
    assert data.latest_churn_scores(lake_uri, REGION, lake.solo).data["customer_id"].to_list() == ["c1"]
    assert data.latest_forecasts(lake_uri, REGION, lake.solo).data["kpi"].to_list() == ["revenue"]
    assert data.latest_churn_scores(lake_uri, REGION, lake.pooled).empty


def test_transform_cli_reports_the_dedicated_build(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    run(["transform", "--region", REGION])
    out = capsys.readouterr().out
    assert f"{REGION} pooled: models built:" in out
    assert f"{REGION} tenants/{lake.solo}: models built:" in out and "tests failed: 0" in out
    assert f"tenants/{lake.solo}/{KPIS}" in out
    assert lake.quiet not in out


def test_airflow_plan_lists_the_dedicated_tenant_and_its_task_builds_it(lake: Lake) -> None:
    from orchestration.pipeline import build_dedicated_tenants, plan_dbt_build

    plan = plan_dbt_build(settings=lake.settings)
    assert plan["regions"] == [REGION] and plan["dedicated"] == {REGION: [lake.solo]} and plan["target"] == "duckdb"
    built = build_dedicated_tenants(plan, settings=lake.settings)
    assert set(built) == {f"{REGION}/tenants/{lake.solo}"}
    assert KPIS in built[f"{REGION}/tenants/{lake.solo}"]["built"]


def test_turning_analytics_off_empties_the_dedicated_marts(lake: Lake) -> None:
    """Like a pooled build drops a disabled tenant's rows, the next region build builds a dedicated tenant that
    was built before once more, deleting its rows without a full refresh (runs last: it changes the module's lake)."""
    ctx = TenantContext.admin(actor="dbt-tests", purpose="dedicated dbt builds")
    registry = get_registry(lake.settings)
    for module in ("churn_prediction", "trend_forecast"):
        if registry.is_enabled(lake.solo, module):
            registry.disable_module(ctx, lake.solo, module)
    registry.disable_module(ctx, lake.solo, "analytics")
    result = build_region(region=REGION, settings=lake.settings)
    assert result.success, result.failures
    assert set(result.dedicated) == {lake.solo} and not result.dedicated[lake.solo].full_refresh
    assert pl.read_delta(_gold(lake.settings, KPIS, lake.solo)).is_empty()
    assert not pl.read_delta(_gold(lake.settings, KPIS)).is_empty()  # the pooled tenant keeps its rows
