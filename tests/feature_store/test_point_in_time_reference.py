"""The vectorised point-in-time join against an independent DuckDB ASOF JOIN reference, on random data.

The data is built to hit the edges: customer ids that collide across tenants, entity rows stamped exactly at
a feature timestamp or exactly at the TTL boundary, entities with no feature rows, feature rows of tenants
and customers nobody asked for, null feature values, null keys and timestamps in the feature rows, several
views sharing one entity encoding, and a tenant-level view beside the customer views.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from feature_store.definitions import FEATURE_TIMESTAMP
from feature_store.registry import get_feature_view
from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
from shironzi.lake import append, table_uri
from shironzi.settings import Settings
from tests.feature_store._fixtures import provision

DAY_US = 86_400_000_000
START_US = int(dt.datetime(2024, 1, 7, tzinfo=dt.UTC).timestamp() * 1_000_000)
VIEWS = ("customer_activity", "customer_lifecycle", "tenant_context")


def random_views(tenants: list[str], *, seed: int) -> dict[str, pa.Table]:
    """Weekly-ish feature rows with gaps, for tenants[:-1] only (the last tenant has none)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in VIEWS:
        view = get_feature_view(name)
        keys: dict[str, list] = {k: [] for k in view.join_keys}
        stamps: list[int] = []
        for tenant in tenants[:-1]:
            for customer in ([f"c{n}" for n in range(12)] if "customer_id" in view.join_keys else [None]):
                weeks = np.sort(rng.choice(30, size=int(rng.integers(1, 12)), replace=False))
                for week in weeks:
                    keys["tenant_id"].append(tenant)
                    if customer is not None:
                        keys["customer_id"].append(customer)
                    stamps.append(START_US + int(week) * 7 * DAY_US + int(rng.integers(0, DAY_US)))
        # noise the join must ignore: another tenant's rows, null keys, a real entity's row with no timestamp
        noise = [("stranger", START_US), (None, START_US + DAY_US), ("null-key", START_US + 2 * DAY_US),
                 (tenants[0], None)]
        for tenant, stamp in noise:
            keys["tenant_id"].append(tenant)
            if "customer_id" in keys:
                keys["customer_id"].append(None if tenant == "null-key" else "c0")
            stamps.append(stamp)
        columns: dict[str, pa.Array] = {k: pa.array(v, pa.string()) for k, v in keys.items()}
        columns[FEATURE_TIMESTAMP] = pa.array(stamps, pa.timestamp("us", tz="UTC"))
        n = len(stamps)
        for feature in view.features:
            values = rng.integers(0, 1000, n) if feature.dtype == "int64" else rng.random(n)
            columns[feature.name] = pa.array(values, mask=rng.random(n) < 0.1)
        out[name] = pa.table(columns)
    return out


def random_entities(tenants: list[str], views: dict[str, pa.Table], *, rows: int, seed: int) -> pa.Table:
    """Label rows: random instants, plus instants exactly on feature timestamps and on TTL boundaries."""
    rng = np.random.default_rng(seed)
    tenant = rng.choice(tenants, rows)
    customer = np.array([f"c{n}" for n in rng.integers(0, 14, rows)])  # c12, c13 have no features
    stamps = START_US + rng.integers(-7 * DAY_US, 40 * 7 * DAY_US, rows)
    activity = views["customer_activity"]
    activity = activity.filter(pc.and_(pc.is_in(activity["tenant_id"], pa.array(tenants)),
                                               pc.is_valid(activity[FEATURE_TIMESTAMP])))
    exact = activity.slice(0, min(rows // 4, activity.num_rows))
    ttl_us = int(get_feature_view("customer_activity").ttl.total_seconds() * 1_000_000)
    exact_stamps = exact[FEATURE_TIMESTAMP].cast(pa.int64()).to_numpy(zero_copy_only=False)
    edges = np.concatenate([exact_stamps, exact_stamps + ttl_us, exact_stamps + ttl_us + 1])
    keys_t = np.concatenate([tenant, *[exact["tenant_id"].to_numpy(zero_copy_only=False)] * 3])
    keys_c = np.concatenate([customer, *[exact["customer_id"].to_numpy(zero_copy_only=False)] * 3])
    return pa.table({
        "tenant_id": pa.array(keys_t, pa.string()),
        "customer_id": pa.array(keys_c, pa.string()),
        ENTITY_TIMESTAMP: pa.array(np.concatenate([stamps, edges]), pa.timestamp("us", tz="UTC")),
        "label": pa.array(np.arange(len(keys_t)) % 2),
    })


def duckdb_reference(entities: pa.Table, views: dict[str, pa.Table]) -> pa.Table:
    """The textbook as-of join, one view at a time: latest row at or before, null past the TTL."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("e", entities.append_column("__row", pa.array(np.arange(entities.num_rows))))
    result = entities
    for name in VIEWS:
        view = get_feature_view(name)
        con.register("f", views[name])
        ttl = int(view.ttl.total_seconds() * 1_000_000)
        on = " AND ".join(f"e.{k} = f.{k}" for k in view.join_keys)
        picks = ", ".join(f"CASE WHEN f.{FEATURE_TIMESTAMP} >= e.{ENTITY_TIMESTAMP} - to_microseconds({ttl}) "
                          f"THEN f.{f.name} END AS {f.name}" for f in view.features)
        joined = con.sql(f"SELECT {picks} FROM e ASOF LEFT JOIN f ON {on} "
                         f"AND e.{ENTITY_TIMESTAMP} >= f.{FEATURE_TIMESTAMP} ORDER BY e.__row").to_arrow_table()
        for column in joined.column_names:
            result = result.append_column(column, joined.column(column))
        con.unregister("f")
    con.close()
    return result


@pytest.mark.parametrize(("seed", "extreme"), [(1, False), (2, False), (3, True)])
def test_join_matches_a_duckdb_asof_reference(seed: int, extreme: bool) -> None:
    tenants = ["tenant-a", "tenant-b", "tenant-c"]  # customer ids c0..c11 collide across a and b
    views = random_views(tenants, seed=seed)
    entities = random_entities(tenants, views, rows=3000, seed=seed)
    if extreme:  # labels from year 1 to year 9999: (entity, timestamp) no longer packs into one int64
        far = pa.array([dt.datetime(1, 1, 2, tzinfo=dt.UTC), dt.datetime(9999, 12, 30, tzinfo=dt.UTC)] * 20,
                       pa.timestamp("us", tz="UTC"))
        stamps = pa.concat_arrays([far, entities[ENTITY_TIMESTAMP].combine_chunks().slice(len(far))])
        entities = entities.set_column(2, ENTITY_TIMESTAMP, stamps)
    expected = duckdb_reference(entities, views)
    got = get_training_set(entities, list(VIEWS), feature_tables=views)
    assert got.column_names == expected.column_names
    for column in got.column_names:
        assert got.column(column).to_pylist() == expected.column(column).to_pylist(), column
    # the data really exercised the edges: matches, TTL nulls, and entities with nothing at all
    events = got.column("events_30d")
    assert 0 < events.null_count < got.num_rows
    assert got.filter(pc.equal(got["customer_id"], "c13")).column("tenure_days").null_count > 0


def test_delta_reads_give_the_same_rows_as_in_memory_tables(settings: Settings) -> None:
    """Through Delta (tenant pruning, only the needed columns, one registry look-up for all views)."""
    a, b = (t.tenant_id for t in provision(settings, [("ref-shop", "ecommerce", "standard"),
                                                       ("ref-clinic", "healthcare", "standard")]))
    views = random_views([a, b, "nobody"], seed=7)  # tenant ids are unique: no collisions here
    clean = {}
    for name, table in views.items():
        view = get_feature_view(name)
        keep = pc.is_valid(table[FEATURE_TIMESTAMP])
        for key in view.join_keys:
            keep = pc.and_(keep, pc.is_valid(table[key]))
        table = table.filter(keep)  # Delta rows always have keys and timestamps; "stranger" rows stay
        table = table.append_column("snapshot_date", pc.cast(table[FEATURE_TIMESTAMP], pa.date32()))
        clean[name] = table.select(view.columns)
        append(table_uri(settings.resolved_lake_uri, layer="features", table=view.table,
                         region=settings.default_region), clean[name])
    entities = random_entities([a, b], clean, rows=600, seed=7)
    # labels only in the first half of the history: the newer half of the rows must never join
    cutoff = pa.scalar(START_US + 12 * 7 * DAY_US, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    entities = entities.filter(pc.less(entities[ENTITY_TIMESTAMP], cutoff))
    from_delta = get_training_set(entities, list(VIEWS), settings=settings)
    in_memory = get_training_set(entities, list(VIEWS), feature_tables=clean)
    assert from_delta.equals(in_memory)
    assert from_delta.equals(duckdb_reference(entities, clean))
    assert from_delta.column("events_30d").null_count < from_delta.num_rows
