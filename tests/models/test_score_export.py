"""`shironzi score export`: one tenant's newest batch scores or forecasts as CSV or Parquet, never another
tenant's rows, wherever the tenant's predictions live (pooled or its dedicated root)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from models.cli import score
from models.predictions import churn_scores_schema, forecasts_schema, replace_slice
from shironzi.errors import NotFoundError
from shironzi.lake.groups import LakeGroup
from shironzi.settings import Settings
from shironzi.tenancy import TenantContext, get_registry

OLD, NEW = date(2024, 3, 1), date(2024, 3, 8)


def _scores(tenant_id: str, day: date, customers: list[str]) -> pa.Table:
    now = datetime(2024, 3, 8, tzinfo=UTC)
    return pa.Table.from_pylist([
        {"tenant_id": tenant_id, "customer_id": c, "score_date": day, "churn_probability": 0.1 * (i + 1),
         "risk_band": "low", "top_reasons": "[]", "model_name": "shironzi-churn", "model_version": "1",
         "feature_timestamp": now, "scored_at": now} for i, c in enumerate(customers)], schema=churn_scores_schema())


@pytest.fixture
def scored(settings: Settings) -> dict[str, str]:
    registry = get_registry()
    ctx = TenantContext.admin(actor="test", purpose="score export test")
    ids = {}
    for slug, placement in (("shop-a", "pooled"), ("shop-b", "pooled"), ("shop-c", "dedicated")):
        tenant, _ = registry.provision_tenant(ctx, slug=slug, name=slug, industry="ecommerce", plan="enterprise",
                                              placement=placement)
        ids[slug] = tenant.id
    pooled = LakeGroup.pooled("eu-west").uri(settings, layer="predictions", table="churn_scores")
    for day, customers in ((OLD, ["c1", "c2", "c3"]), (NEW, ["c2", "c1"])):
        replace_slice(pooled, _scores(ids["shop-a"], day, customers), partition="score_date", day=day,
                      tenant_ids=[ids["shop-a"]], settings=settings)
    replace_slice(pooled, _scores(ids["shop-b"], NEW, ["c9"]), partition="score_date", day=NEW,
                  tenant_ids=[ids["shop-b"]], settings=settings)
    dedicated = LakeGroup.of_tenant(ids["shop-c"], region="eu-west", placement="dedicated")
    forecast = pa.Table.from_pylist([
        {"tenant_id": ids["shop-c"], "kpi": "revenue", "forecast_date": date(2024, 3, 8 + h), "horizon_day": h,
         "yhat": 10.0 * h, "yhat_lower": 9.0, "yhat_upper": 11.0 * h, "model_name": "shironzi-trend",
         "model_version": "2", "generated_date": NEW, "generated_at": datetime(2024, 3, 8, tzinfo=UTC)}
        for h in (2, 1)], schema=forecasts_schema())
    replace_slice(dedicated.uri(settings, layer="predictions", table="forecasts"), forecast,
                  partition="generated_date", day=NEW, tenant_ids=[ids["shop-c"]], settings=settings)
    return ids


def _export(*args: str) -> object:
    return CliRunner().invoke(score, ["export", *args], catch_exceptions=False)


def test_exports_the_tenants_newest_scores_only(scored: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    result = _export("--table", "churn_scores", "--tenant", "shop-a", "--format", "csv", "--out", str(out))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "2 churn_scores rows of 2024-03-08" in result.output  # type: ignore[attr-defined]
    rows = pl.read_csv(out)
    assert rows.get_column("customer_id").to_list() == ["c1", "c2"]
    assert set(rows.get_column("tenant_id")) == {scored["shop-a"]} and set(rows.get_column("score_date")) == {
        "2024-03-08"}
    parquet = tmp_path / "old.parquet"
    _export("--table", "churn_scores", "--tenant", scored["shop-a"], "--format", "parquet", "--out", str(parquet),
            "--date", "2024-03-01")
    assert pl.read_parquet(parquet).get_column("customer_id").to_list() == ["c1", "c2", "c3"]


def test_exports_a_dedicated_tenants_forecasts_to_stdout(scored: dict[str, str]) -> None:
    result = _export("--table", "forecasts", "--tenant", "shop-c")
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith("tenant_id,kpi,forecast_date,horizon_day") and len(lines) == 3
    assert lines[1].split(",")[3] == "1" and all(scored["shop-c"] in line for line in lines[1:])
    with pytest.raises(NotFoundError, match="no forecasts yet for tenant 'shop-a'"):
        _export("--table", "forecasts", "--tenant", "shop-a")
