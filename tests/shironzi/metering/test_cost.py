"""The cost model's arithmetic on hand-computed figures, per plan, from the settings."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from shironzi.settings import get_settings

COSTS = {
    "free": {"plan_price": 0.0, "per_million_events": 2.0, "per_gb_month": 0.5, "per_thousand_api_calls": 0.1},
    "standard": {"plan_price": 100.0, "per_million_events": 1.0, "per_gb_month": 0.25,
                 "per_thousand_api_calls": 0.05},
}


@pytest.fixture
def priced(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_PLAN_COSTS", json.dumps(COSTS))
    get_settings.cache_clear()


def _usage(rows: list[tuple[str, date, int, int, int]]):  # type: ignore[no-untyped-def]
    import polars as pl

    from shironzi.metering.usage import USAGE_COLUMNS, usage_schema

    frame = pl.DataFrame([{"tenant_id": t, "day": d, "events_landed": e, "bytes_total": b, "api_requests": a,
                           "compute_seconds": 1.5} for t, d, e, b, a in rows])
    return frame.with_columns(*(pl.lit(0).alias(c) for c in USAGE_COLUMNS if c not in frame.columns)) \
        .cast({k: v for k, v in usage_schema().items() if k in frame.columns})


def test_monthly_cost_and_margin_per_plan(priced: None) -> None:
    import polars as pl

    from shironzi.metering.cost import monthly_costs

    # June has 30 days: 30 GB stored for 10 days is 10 GB-months
    usage = _usage([("t_big", date(2026, 6, d), 400_000, 30_000_000_000, 2_000) for d in range(1, 11)]
                   + [("t_big", date(2026, 7, 1), 9_999_999, 1, 1),  # another month: not counted
                      ("t_free", date(2026, 6, 3), 250_000, 3_000_000_000, 500)])
    plans = pl.DataFrame({"tenant_id": ["t_big", "t_free", "t_idle"], "plan": ["standard", "free", "standard"]})
    costs = {r["tenant_id"]: r for r in monthly_costs(usage, plans, month=date(2026, 6, 15)).to_dicts()}
    big = costs["t_big"]
    assert big["events_landed"] == 4_000_000 and big["api_requests"] == 20_000
    assert big["gb_month"] == pytest.approx(10.0)
    assert big["cost_events"] == pytest.approx(4.0)  # 4M events x 1.0 per million
    assert big["cost_storage"] == pytest.approx(2.5)  # 10 GB-months x 0.25
    assert big["cost_api"] == pytest.approx(1.0)  # 20k calls x 0.05 per thousand
    assert big["cost"] == pytest.approx(7.5) and big["margin"] == pytest.approx(92.5)
    free = costs["t_free"]
    assert free["cost"] == pytest.approx(0.25 * 2.0 + 0.1 * 0.5 + 0.5 * 0.1)
    assert free["margin"] == pytest.approx(-free["cost"])  # a free tenant costs the platform
    assert costs["t_idle"]["cost"] == 0 and costs["t_idle"]["margin"] == 100.0


def test_a_plan_without_a_cost_model_is_named(priced: None) -> None:
    import polars as pl

    from shironzi.errors import InvalidInputError
    from shironzi.metering.cost import monthly_costs

    plans = pl.DataFrame({"tenant_id": ["t_x"], "plan": ["enterprise"]})
    with pytest.raises(InvalidInputError, match="enterprise"):
        monthly_costs(_usage([("t_x", date(2026, 6, 1), 1, 1, 1)]), plans, month=date(2026, 6, 1))

