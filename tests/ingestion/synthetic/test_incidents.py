"""Labelled incidents in simulated events: applied to the events themselves (the lake path), with the labels kept
beside the churn ground truth and never in the lake."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from ingestion.synthetic import simulate
from ingestion.synthetic.incidents import (
    INCIDENT_KINDS,
    PLAN_SCHEMA,
    RENAMED_PROPERTY,
    apply_incidents,
    incident_labels,
    plan_incidents,
    write_incident_labels,
)

START = date(2026, 1, 5)


def _plan(tenant_id: str) -> pl.DataFrame:
    days = (20, 24, 28, 32, 36)
    return pl.DataFrame({"tenant_id": [tenant_id] * 5, "kind": list(INCIDENT_KINDS),
                         "first_day": [START + timedelta(days=d) for d in days], "days": [2, 1, 2, 1, 2],
                         "factor": [1.0, 4.0, 0.5, 1.0, 1.0]}, schema=PLAN_SCHEMA)


def test_incidents_change_the_events_as_labelled(home: Path) -> None:
    sim = simulate([("t1", "ecommerce"), ("t2", "ecommerce")], customers=600, days=45, start=START, seed=2)
    plan = _plan("t1")
    events = apply_incidents(sim.events, plan, seed=2)
    per_day = events.group_by("tenant_id", pl.col("event_time").dt.date().alias("day")).len()

    def count(tenant: str, offset: int, frame: pl.DataFrame = per_day) -> int:
        hit = frame.filter((pl.col("tenant_id") == tenant) & (pl.col("day") == START + timedelta(days=offset)))
        return int(hit["len"].sum())

    before = sim.events.group_by("tenant_id", pl.col("event_time").dt.date().alias("day")).len()
    assert count("t1", 20) == count("t1", 21) == 0  # silent
    assert count("t1", 24) == 4 * count("t1", 24, before)  # the flood: 3 copies of each event, new ids
    assert events["event_id"].n_unique() == events.height
    assert count("t1", 28) == pytest.approx(count("t1", 28, before) / 2, rel=0.3)  # half dropped
    assert count("t2", 28) == count("t2", 28, before)  # the other tenant is untouched
    old, new = (name.split(".", 1)[1] for name in RENAMED_PROPERTY)
    orders = events.filter((pl.col("tenant_id") == "t1") & (pl.col("event_type") == "order_placed"))
    renamed = orders.filter(pl.col("event_time").dt.date() >= START + timedelta(days=32))
    assert renamed.height and renamed["properties"].str.contains(f'"{new}"').all()
    assert not renamed["properties"].str.contains(f'"{old}"').any()
    late = events.filter((pl.col("tenant_id") == "t1") & pl.col("event_time").dt.date().is_between(
        START + timedelta(days=36), START + timedelta(days=37)))
    assert late.height and (late["ingested_at"].dt.date() == START + timedelta(days=39)).all()

    labels = incident_labels(plan)
    assert labels.group_by("kind").len().sort("kind").rows() == [
        ("late_backfill", 1), ("schema_change", 1), ("silent", 2), ("volume_drop", 2), ("volume_spike", 1)]
    assert labels.filter(pl.col("kind") == "late_backfill")["event_date"].to_list() == [START + timedelta(days=39)]
    written = write_incident_labels(plan)
    assert written == home / "ground_truth" and not (home / "lake" / "ground_truth").exists()
    assert pl.read_parquet(written / "incident_days.parquet").equals(labels)


def test_plans_keep_a_tenants_incidents_apart_and_refuse_unknown_kinds() -> None:
    from shironzi.errors import InvalidInputError

    plan = plan_incidents([f"t{i}" for i in range(300)], start=START, days=365, per_tenant=3.0, seed=1)
    assert set(plan["kind"]) == set(INCIDENT_KINDS)
    gaps = plan.sort("tenant_id", "first_day").with_columns(
        (pl.col("first_day").diff().over("tenant_id").dt.total_days()).alias("gap"))
    assert gaps["gap"].drop_nulls().min() >= 5 and plan["first_day"].min() >= START + timedelta(days=56)
    with pytest.raises(InvalidInputError, match="unknown incident kind"):
        plan_incidents(["t1"], start=START, days=365, kinds=["meteor"])
