"""Sparse-buyer tenants: Pareto/NBD customers, mostly one-time buyers, repeat gaps of weeks to months."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from ingestion.contracts import tenants_frame, validate_batch
from ingestion.synthetic import Simulation, simulate
from shironzi.errors import InvalidInputError

TENANTS = [("shop-sparse", "ecommerce", "sparse"), ("shop-dense", "ecommerce")]


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(TENANTS, customers=1_500, days=300, start=date(2024, 1, 1), seed=5)


def _purchase_days(sim: Simulation, tenant: str) -> pl.DataFrame:
    return (sim.events.filter((pl.col("tenant_id") == tenant) & (pl.col("event_type") == "order_placed"))
            .select("customer_id", pl.col("event_time").dt.date().alias("day")).unique())


def test_sparse_customers_are_mostly_one_time_buyers_with_gaps_of_weeks_to_months(sim: Simulation) -> None:
    days = _purchase_days(sim, "shop-sparse")
    per_customer = days.group_by("customer_id").len()
    assert per_customer.height > 300
    assert (per_customer["len"] == 1).mean() > 0.5
    gaps = (days.sort("customer_id", "day")
            .with_columns((pl.col("day") - pl.col("day").shift(1).over("customer_id")).dt.total_days().alias("gap"))
            .drop_nulls("gap")["gap"])
    assert 14 <= gaps.median() <= 120  # type: ignore[operator]
    dense = _purchase_days(sim, "shop-dense").group_by("customer_id").len()
    assert (dense["len"] == 1).mean() < 0.3  # the dense tenant behaves as before


def test_sparse_ground_truth_stays_outside_the_events_and_is_consistent(sim: Simulation) -> None:
    customers = sim.customers.filter(pl.col("tenant_id") == "shop-sparse")
    assert customers["signup_date"].min() >= sim.start  # every sparse customer's first purchase is in the window
    churned = customers.filter(pl.col("churn_date").is_not_null())
    assert churned.height > 100 and (churned["churn_kind"] == "silent").all()  # retail: no account closure
    after = sim.events.join(churned, on=["tenant_id", "customer_id"]).filter(
        pl.col("event_time").dt.date() >= pl.col("churn_date"))
    assert after.height == 0
    truth = sim.snapshots.filter((pl.col("tenant_id") == "shop-sparse") & pl.col("horizon_complete"))
    hazard = truth["hazard_next_day"]
    assert truth.height > 1_000 and hazard.min() > 0  # type: ignore[operator]
    means = dict(truth.group_by("churned_within_30d").agg(pl.col("churn_probability_30d").mean()).iter_rows())
    assert means[True] > 1.5 * means[False]  # the oracle's probability is the true dropout hazard


def test_sparse_events_pass_the_contract_and_bad_kinds_are_refused(sim: Simulation) -> None:
    tenants = tenants_frame([("shop-sparse", "ecommerce", "active"), ("shop-dense", "ecommerce", "active")])
    result = validate_batch(sim.events.drop("seq"), tenants=tenants, now=datetime.now(UTC), source="synthetic")
    assert result.quarantined.num_rows == 0, result.counts_by_reason
    with pytest.raises(InvalidInputError, match="buyers must be one of"):
        simulate([("t", "ecommerce", "weekly")], customers=10, days=5)
