"""The anomaly detector on tenants x days frames from the simulator's laws: each planted incident kind is found
on its labelled days, clean tenants are left alone, and thousands of tenants go through one lazy plan."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ingestion.synthetic.incidents import (
    INCIDENT_KINDS,
    PLAN_SCHEMA,
    apply_incidents_to_daily,
    incident_labels,
    plan_incidents,
    simulate_daily_counts,
)
from monitoring.detector import DetectorConfig, detect, detect_lazy, overdue_sources

START = date(2025, 1, 6)


def _largest(daily: pl.DataFrame, n: int) -> list[str]:
    sizes = daily.group_by("tenant_id").agg(pl.col("events").median()).sort(["events", "tenant_id"], descending=True)
    return sizes["tenant_id"].head(n).to_list()


def test_each_planted_incident_kind_is_found_and_clean_tenants_are_not_flagged() -> None:
    tenants = [f"t{i:03d}" for i in range(40)]
    clean = simulate_daily_counts(tenants, start=START, days=140, seed=3)
    big = _largest(clean, 12)
    incident_tenants, clean_tenants = big[:5], big[5:]
    plan = pl.DataFrame({
        "tenant_id": incident_tenants, "kind": list(INCIDENT_KINDS),
        "first_day": [START + timedelta(days=d) for d in (100, 104, 110, 115, 120)],
        "days": [3, 1, 3, 1, 2], "factor": [1.0, 5.0, 0.5, 1.0, 1.0],
    }, schema=PLAN_SCHEMA)
    daily = apply_incidents_to_daily(clean, plan, seed=3)
    found = detect(daily)
    labels = incident_labels(plan)
    assert labels.height == 3 + 1 + 3 + 1 + 1
    hits = labels.join(found, on=["tenant_id", "event_date", "kind"], how="inner")
    assert hits.height == labels.height, labels.join(hits, on=["tenant_id", "event_date"], how="anti")
    assert found.filter(pl.col("tenant_id").is_in(clean_tenants)).is_empty()
    # nothing before the history is long enough to learn from
    assert found["event_date"].min() >= START + timedelta(days=DetectorConfig().min_history_days)
    # the same frame without the incidents: the incident tenants are clean too
    assert detect(clean).filter(pl.col("tenant_id").is_in(incident_tenants)).is_empty()
    spike = found.filter(pl.col("kind") == "volume_spike").row(0, named=True)
    assert spike["observed"] > 3 * spike["expected"] and spike["score"] >= DetectorConfig().threshold


def test_five_thousand_tenants_go_through_one_lazy_plan() -> None:
    tenants = [f"t{i:05d}" for i in range(5000)]
    clean = simulate_daily_counts(tenants, start=START, days=120, seed=4)
    plan = plan_incidents(tenants, start=START, days=120, per_tenant=0.3, seed=4)
    daily = apply_incidents_to_daily(clean, plan, seed=4)
    query = detect_lazy(daily.lazy().select("tenant_id", "event_date", "events", "late_events", "new_properties",
                                            "vanished_properties"))
    # by design: one lazy plan of column expressions, no Python callback per tenant or per row
    assert isinstance(query, pl.LazyFrame)
    assert "python" not in query.explain().lower() and "map_" not in query.explain()
    found = query.collect()
    labels = incident_labels(plan)
    hits = labels.join(found, on=["tenant_id", "event_date"], how="semi")
    assert set(found["kind"]) == set(INCIDENT_KINDS)
    assert hits.height / labels.height > 0.85
    flagged = found.select("tenant_id", "event_date").unique()
    assert flagged.join(labels, on=["tenant_id", "event_date"], how="semi").height / flagged.height > 0.8


def test_a_frame_without_the_daily_columns_is_refused() -> None:
    from shironzi.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="late_events"):
        detect(pl.DataFrame({"tenant_id": ["t"], "event_date": [START], "events": [1]}))


def test_an_hourly_sender_that_stops_is_overdue_within_six_hours_and_a_healthy_one_never() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    hours = [h for h in range(24 * 7) if h % 50 != 7]  # a delivery every hour, a rare one skipped
    stop = 24 * 6 + 5
    deliveries = pl.DataFrame({
        "tenant_id": ["healthy"] * len(hours) + ["stops"] * sum(h < stop for h in hours),
        "source": "hourly",
        "delivered_at": [start + timedelta(hours=h, minutes=3) for h in hours]
        + [start + timedelta(hours=h, minutes=3) for h in hours if h < stop],
    })
    last = start + timedelta(hours=stop - 1, minutes=3)
    expected_next = last + timedelta(hours=1)
    alerts = {}
    check = start + timedelta(days=2)
    while check < start + timedelta(days=7):
        for tenant in overdue_sources(deliveries, now=check)["tenant_id"].to_list():
            alerts.setdefault(tenant, check)
        check += timedelta(minutes=15)
    assert "healthy" not in alerts
    assert expected_next < alerts["stops"] <= expected_next + timedelta(hours=6)
