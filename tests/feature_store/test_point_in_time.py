"""Point-in-time training sets: no leakage, TTL, entity order, and clear errors."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest

from feature_store.offline import feature_timestamp_for
from feature_store.registry import get_feature_view
from feature_store.retrieval import get_training_set
from shironzi.errors import FeatureNotFoundError, InvalidInputError
from shironzi.settings import Settings
from tests.feature_store._fixtures import provision, write_view_rows

UTC = dt.UTC


@pytest.fixture
def two_tenants(settings: Settings) -> tuple[str, str]:
    a, b = provision(settings, [("pit-shop", "ecommerce", "standard"), ("pit-clinic", "healthcare", "standard")])
    return a.tenant_id, b.tenant_id


def test_training_set_never_sees_values_dated_after_the_label(settings: Settings, two_tenants) -> None:
    a, b = two_tenants
    days = [dt.date(2024, 3, 3) + dt.timedelta(days=7 * i) for i in range(8)]
    # value = the snapshot's ordinal, and a trap: every value planted AFTER a label is negative
    label_days = [dt.date(2024, 3, 12), dt.date(2024, 4, 2), dt.date(2024, 4, 20)]
    rows = []
    for tenant in (a, b):
        for customer in ("c1", "c2"):
            for day in days:
                planted_after_every_label = day > max(label_days)
                rows.append({"tenant_id": tenant, "customer_id": customer, "snapshot_date": day,
                             "events_30d": -1 if planted_after_every_label else day.toordinal(),
                             "spend_30d": float(day.toordinal() + (1000 if tenant == b else 0))})
    write_view_rows(settings, "customer_activity", rows)
    entity = pa.table({
        "tenant_id": [a, a, b, a, b],
        "customer_id": ["c1", "c2", "c1", "c1", "c2"],
        "event_timestamp": pa.array([dt.datetime.combine(d, dt.time(12), tzinfo=UTC)
                                     for d in (label_days[0], label_days[1], label_days[2], label_days[2],
                                               label_days[0])], pa.timestamp("us", tz="UTC")),
        "churned": [True, False, True, False, False],
    })
    out = get_training_set(entity, ["customer_activity:events_30d", "customer_activity:spend_30d"])
    assert out.column_names == ["tenant_id", "customer_id", "event_timestamp", "churned", "events_30d", "spend_30d"]
    assert out.column("churned").to_pylist() == [True, False, True, False, False]  # labels and order kept
    for stamp, value, spend, tenant in zip(out.column("event_timestamp").to_pylist(),
                                           out.column("events_30d").to_pylist(),
                                           out.column("spend_30d").to_pylist(),
                                           out.column("tenant_id").to_pylist(), strict=True):
        expected = max(d for d in days if feature_timestamp_for(d) <= stamp)
        assert value == expected.toordinal() and value > 0, "a value from after the label leaked in"
        assert spend == expected.toordinal() + (1000 if tenant == b else 0), "another tenant's row joined"


def test_snapshot_of_the_same_day_is_only_visible_at_its_end(settings: Settings, two_tenants) -> None:
    a, _ = two_tenants
    day = dt.date(2024, 5, 5)
    write_view_rows(settings, "customer_activity", [
        {"tenant_id": a, "customer_id": "c1", "snapshot_date": day - dt.timedelta(days=7), "events_7d": 1},
        {"tenant_id": a, "customer_id": "c1", "snapshot_date": day, "events_7d": 2},
    ])
    entity = pl.DataFrame({
        "tenant_id": [a, a, a],
        "customer_id": ["c1"] * 3,
        "event_timestamp": [dt.datetime(2024, 5, 5, 0, 0, tzinfo=UTC), dt.datetime(2024, 5, 5, 23, 0, tzinfo=UTC),
                            dt.datetime(2024, 5, 6, 0, 0, tzinfo=UTC)],
    })
    out = get_training_set(entity, ["customer_activity:events_7d"], output="polars")
    assert isinstance(out, pl.DataFrame)
    assert out["events_7d"].to_list() == [1, 1, 2]
    # a date means "as of the end of that day"
    by_date = get_training_set(pa.table({"tenant_id": [a], "customer_id": ["c1"],
                                         "event_timestamp": pa.array([day], pa.date32())}),
                               ["customer_activity:events_7d"])
    assert by_date.column("events_7d").to_pylist() == [2]


def test_feature_older_than_ttl_comes_back_null(settings: Settings, two_tenants) -> None:
    a, _ = two_tenants
    view = get_feature_view("customer_lifecycle")
    day = dt.date(2024, 6, 2)
    write_view_rows(settings, "customer_lifecycle", [
        {"tenant_id": a, "customer_id": "c1", "snapshot_date": day, "tenure_days": 40},
    ])
    write_view_rows(settings, "tenant_context", [
        {"tenant_id": a, "snapshot_date": day, "tenant_active_customers_30d": 12},
    ])
    end = feature_timestamp_for(day)
    stamps = [end, end + view.ttl - dt.timedelta(microseconds=1), end + view.ttl,
              end + view.ttl + dt.timedelta(seconds=1)]
    entity = pa.table({"tenant_id": [a] * 4, "customer_id": ["c1"] * 4,
                       "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC"))})
    out = get_training_set(entity, ["customer_lifecycle:tenure_days", "tenant_context"], full_feature_names=True)
    assert out.column("customer_lifecycle__tenure_days").to_pylist() == [40, 40, 40, None]
    assert out.column("tenant_context__tenant_active_customers_30d").to_pylist() == [12, 12, 12, None]
    assert "tenant_context__tenant_growth_30d" in out.column_names  # a whole view brings every feature


def test_missing_tables_and_unknown_entities_give_nulls_not_errors(settings: Settings, two_tenants) -> None:
    a, _ = two_tenants
    entity = pa.table({"tenant_id": [a], "customer_id": ["nobody"],
                       "event_timestamp": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC)])})
    out = get_training_set(entity, ["customer_friction"])
    assert out.num_rows == 1
    assert out.column("refunds_90d").to_pylist() == [None]


def test_bad_requests_raise_clear_errors(settings: Settings, two_tenants) -> None:
    a, _ = two_tenants
    entity = pa.table({"tenant_id": [a], "customer_id": ["c1"],
                       "event_timestamp": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC)])})
    with pytest.raises(FeatureNotFoundError):
        get_training_set(entity, ["no_such_view"])
    with pytest.raises(FeatureNotFoundError):
        get_training_set(entity, ["customer_activity:no_such_feature"])
    with pytest.raises(InvalidInputError, match="event_timestamp"):
        get_training_set(entity.drop(["event_timestamp"]), ["customer_activity"])
    with pytest.raises(InvalidInputError, match="timestamp or date"):
        get_training_set(entity.set_column(2, "event_timestamp", pa.array(["2024-01-01"])), ["customer_activity"])
    with pytest.raises(InvalidInputError):
        get_training_set(entity, [])
