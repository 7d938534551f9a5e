"""The Spark feature pipeline on embedded Sail: module gating, incremental runs, and parity with an
independent DuckDB reference computed from the same bronze events."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from feature_store.offline import build_features, read_feature_table, snapshot_dates
from feature_store.registry import get_feature_view, list_feature_views
from shironzi.errors import InvalidInputError, TransformationError
from shironzi.lake import table_exists, table_uri
from shironzi.settings import Settings
from tests.feature_store._fixtures import START, bronze_events, bronze_uri, provision, write_bronze

pytestmark = pytest.mark.integration

# An independent reference: a range join of snapshots x raw events (no daily table, no window functions).
REFERENCE_SQL = """
WITH spine AS (
  SELECT s.tenant_id, s.customer_id, s.snapshot_date FROM offline s
),
joined AS (
  SELECT sp.tenant_id, sp.customer_id, sp.snapshot_date, e.event_type, e.amount, e.event_date,
         date_diff('day', e.event_date, sp.snapshot_date) AS age
  FROM spine sp JOIN events e
    ON e.tenant_id = sp.tenant_id AND e.customer_id = sp.customer_id AND e.event_date <= sp.snapshot_date
)
SELECT tenant_id, customer_id, snapshot_date,
  count(*) FILTER (WHERE age < 7) AS events_7d,
  count(*) FILTER (WHERE age < 30) AS events_30d,
  count(*) FILTER (WHERE age < 90) AS events_90d,
  count(DISTINCT event_date) FILTER (WHERE age < 7) AS active_days_7d,
  count(DISTINCT event_date) FILTER (WHERE age < 30) AS active_days_30d,
  count(DISTINCT event_date) FILTER (WHERE age < 90) AS active_days_90d,
  count(*) FILTER (WHERE age < 7 AND event_type IN ({visits})) AS visits_7d,
  count(*) FILTER (WHERE age < 30 AND event_type IN ({visits})) AS visits_30d,
  count(*) FILTER (WHERE age < 90 AND event_type IN ({visits})) AS visits_90d,
  coalesce(sum(amount) FILTER (WHERE age < 7 AND event_type IN ({purchases})), 0) AS spend_7d,
  coalesce(sum(amount) FILTER (WHERE age < 30 AND event_type IN ({purchases})), 0) AS spend_30d,
  coalesce(sum(amount) FILTER (WHERE age < 90 AND event_type IN ({purchases})), 0) AS spend_90d,
  count(*) FILTER (WHERE age < 30 AND event_type IN ({purchases})) AS purchases_30d,
  count(*) FILTER (WHERE age < 90 AND event_type IN ({purchases})) AS purchases_90d,
  date_diff('day', max(event_date), snapshot_date) AS days_since_last_event,
  date_diff('day', min(event_date), snapshot_date) AS tenure_days,
  count(*) AS lifetime_events,
  count(DISTINCT event_date) FILTER (WHERE event_type IN ({purchases})) - 1 AS repeat_purchase_days,
  date_diff('day', min(event_date) FILTER (WHERE event_type IN ({purchases})),
            max(event_date) FILTER (WHERE event_type IN ({purchases}))) AS purchase_span_days,
  date_diff('day', min(event_date) FILTER (WHERE event_type IN ({purchases})), snapshot_date)
    AS days_since_first_purchase
FROM joined GROUP BY tenant_id, customer_id, snapshot_date ORDER BY 1, 2, 3
"""
VISITS = "'session_started', 'portal_login', 'appointment_attended', 'lesson_completed'"
PURCHASES = "'order_placed', 'subscription_changed', 'prescription_filled', 'claim_submitted', 'payment_made'"


def _reference(events: pa.Table, offline: pa.Table) -> list[dict]:
    con = duckdb.connect()
    con.register("events", events)
    con.register("offline", offline)
    return con.sql(REFERENCE_SQL.format(visits=VISITS, purchases=PURCHASES)).to_arrow_table().to_pylist()


def test_pipeline_gates_modules_runs_incrementally_and_matches_a_duckdb_reference(settings: Settings) -> None:
    shop, school, free = provision(settings, [("fs-shop", "ecommerce", "standard"),
                                              ("fs-school", "education", "enterprise"),
                                              ("fs-free", "healthcare", "free")])
    events = bronze_events([shop, school, free], customers=5, days=50)
    write_bronze(settings, events)

    first = build_features(cadence="weekly")
    assert first.tenants == sorted([shop.tenant_id, school.tenant_id])
    assert first.skipped_tenants == [free.tenant_id]  # active, but no feature module
    assert set(first.rows) == {v.name for v in list_feature_views()}
    assert all(n > 0 for n in first.rows.values())

    activity = get_feature_view("customer_activity")
    offline = read_feature_table(activity, [shop.tenant_id, school.tenant_id, free.tenant_id])
    # module gating: the free-plan tenant (no churn_prediction / trend_forecast) has no feature rows
    assert free.tenant_id not in offline.column("tenant_id").to_pylist()
    # weekly snapshots on Sundays, one row per customer and snapshot, each with its end-of-day timestamp
    assert {d.weekday() for d in offline.column("snapshot_date").to_pylist()} == {6}
    keys = list(zip(*(offline.column(c).to_pylist() for c in ("tenant_id", "customer_id", "snapshot_date")),
                    strict=True))
    assert len(keys) == len(set(keys))

    # parity: Spark on Sail == an independent DuckDB computation over the same bronze rows
    lifecycle = read_feature_table(get_feature_view("customer_lifecycle"), [shop.tenant_id, school.tenant_id])
    repeats = read_feature_table(get_feature_view("customer_repeat_purchases"), [shop.tenant_id, school.tenant_id])
    repeat_by_key = {(r["tenant_id"], r["customer_id"], r["snapshot_date"]): r for r in repeats.to_pylist()}
    reference = _reference(events, offline.select(["tenant_id", "customer_id", "snapshot_date"]))
    by_key = {(r["tenant_id"], r["customer_id"], r["snapshot_date"]): r for r in offline.to_pylist()}
    life_by_key = {(r["tenant_id"], r["customer_id"], r["snapshot_date"]): r for r in lifecycle.to_pylist()}
    assert set(life_by_key) == set(by_key)
    assert len(reference) == len(by_key)
    for ref in reference:
        key = (ref["tenant_id"], ref["customer_id"], ref["snapshot_date"])
        spark_row, life_row = by_key[key], life_by_key[key]
        for name in activity.feature_names:
            if name == "avg_purchase_90d":
                expected = ref["spend_90d"] / ref["purchases_90d"] if ref["purchases_90d"] else None
                assert spark_row[name] == pytest.approx(expected, rel=1e-12) if expected else spark_row[name] is None
            elif name.startswith("spend"):
                assert spark_row[name] == pytest.approx(ref[name], rel=1e-12, abs=1e-9), (key, name)
            else:
                assert spark_row[name] == ref[name], (key, name)
        for name in ("days_since_last_event", "tenure_days", "lifetime_events"):
            assert life_row[name] == ref[name], (key, name)
        for name in ("repeat_purchase_days", "purchase_span_days", "days_since_first_purchase"):
            expected = None if ref["repeat_purchase_days"] < 0 else ref[name]  # never bought: no BG/NBD summary
            assert repeat_by_key[key][name] == expected, (key, name)

    # incremental: a rerun writes nothing; new days of bronze add only the new snapshots
    again = build_features(cadence="weekly")
    assert again.total_rows == 0
    later = bronze_events([shop, school, free], customers=5, days=14, seed=9, start=START + dt.timedelta(days=50))
    write_bronze(settings, later)
    more = build_features(["customer_activity"], cadence="weekly")
    grown = read_feature_table(activity, [shop.tenant_id, school.tenant_id])
    new_dates = set(grown.column("snapshot_date").to_pylist()) - set(offline.column("snapshot_date").to_pylist())
    assert new_dates and min(new_dates) > max(offline.column("snapshot_date").to_pylist())
    assert more.rows["customer_activity"] == grown.num_rows - offline.num_rows
    keys = list(zip(*(grown.column(c).to_pylist() for c in ("tenant_id", "customer_id", "snapshot_date")),
                    strict=True))
    assert len(keys) == len(set(keys)), "an incremental run duplicated snapshots"
    untouched = pc.sum(pc.is_in(grown.column("snapshot_date"), pa.array(sorted(new_dates)))).as_py()
    assert untouched == more.rows["customer_activity"]

    # an explicit tenant list still honours the module gate
    gated = build_features(["customer_friction"], tenant_ids=[free.tenant_id], cadence="daily")
    assert gated.tenants == [] and gated.skipped_tenants == [free.tenant_id] and gated.total_rows == 0


def test_a_bad_view_definition_writes_nothing(settings: Settings) -> None:
    from feature_store.offline import snapshot_table
    from feature_store.views import BASE_VIEWS
    from transformations.jobs.snapshot_sql import SqlOutput, run_snapshot_sql
    from transformations.spark import get_spark

    (shop,) = provision(settings, [("bad-shop", "ecommerce", "standard")])
    write_bronze(settings, bronze_events([shop], customers=2, days=10))
    target = table_uri(settings.resolved_lake_uri, layer="features", table="broken_v1", region="eu-west")
    wrong = SqlOutput("broken", "SELECT tenant_id, customer_id FROM customer_windows", target,
                      ("tenant_id", "customer_id", "snapshot_date"))
    with pytest.raises(TransformationError, match="expected"):
        run_snapshot_sql(get_spark(settings), bronze_uris=[bronze_uri(settings)], tenant_ids=[shop.tenant_id],
                         snapshots=snapshot_table({shop.tenant_id: [START + dt.timedelta(days=6)]}),
                         base_views=BASE_VIEWS, outputs=[wrong])
    assert not table_exists(target)


def test_snapshot_grid_is_stable_across_runs() -> None:
    sundays = snapshot_dates(dt.date(2024, 1, 3), dt.date(2024, 2, 1), cadence="weekly")
    assert sundays == [dt.date(2024, 1, 7), dt.date(2024, 1, 14), dt.date(2024, 1, 21), dt.date(2024, 1, 28)]
    assert snapshot_dates(dt.date(2024, 1, 3), dt.date(2024, 2, 1), cadence="weekly",
                          after=dt.date(2024, 1, 14)) == sundays[2:]
    assert snapshot_dates(dt.date(2024, 1, 1), dt.date(2024, 1, 3), cadence="daily") == [
        dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    with pytest.raises(InvalidInputError):
        snapshot_dates(dt.date(2024, 1, 1), dt.date(2024, 1, 3), cadence="hourly")  # type: ignore[arg-type]
