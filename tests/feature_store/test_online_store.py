"""Online store (SQLite and real Redis): tenant isolation, erasure, scans, and online == offline latest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import feature_store.materialize as materialize_module
from feature_store.materialize import get_online_features, materialize
from feature_store.offline import read_feature_table
from feature_store.online import OnlineRow, OnlineStore, open_online_store
from feature_store.registry import get_feature_view
from shironzi.errors import ConfigurationError, InvalidInputError
from shironzi.settings import Settings
from tests.feature_store._fixtures import provision, write_view_rows

UTC = dt.UTC
T0 = dt.datetime(2024, 2, 4, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'online.db'}"
    else:
        base = request.getfixturevalue("redis_url")
        url = base.rsplit("/", 1)[0] + "/3?key_prefix=t" + tmp_path.name.replace("-", "")
    opened = open_online_store(url)
    yield opened
    opened.delete_tenant("tenant-a")
    opened.delete_tenant("tenant-b")
    opened.close()


def _row(tenant: str, customer: str, value: int, view: str = "customer_activity") -> OnlineRow:
    return OnlineRow(tenant, view, customer, T0, {"events_30d": value, "spend_30d": value * 1.5})


def test_colliding_customer_ids_stay_with_their_tenant(store: OnlineStore) -> None:
    store.write_rows([_row("tenant-a", "c1", 1), _row("tenant-b", "c1", 2), _row("tenant-a", "c:2", 3)])
    a = get_online_features("tenant-a", ["c1", "c:2", "c9"], ["customer_activity:events_30d"], store=store)
    b = get_online_features("tenant-b", ["c1", "c:2"], ["customer_activity:events_30d"], store=store)
    assert [r["events_30d"] for r in a] == [1, 3, None]
    assert [r["events_30d"] for r in b] == [2, None]
    # a crafted id cannot reach into another tenant's key space
    assert store.read("tenant-a", ["c1:tenant-b"], ["customer_activity"]) == {}
    assert store.read("tenant", ["a:c1"], ["customer_activity"]) == {}


def test_upsert_delete_subject_and_scan(store: OnlineStore) -> None:
    store.write_rows([_row("tenant-a", "c1", 1), _row("tenant-a", "c1", 1, view="customer_friction"),
                      _row("tenant-b", "c1", 5)])
    store.write_rows([_row("tenant-a", "c1", 7)])  # upsert
    assert store.read("tenant-a", ["c1"], ["customer_activity"])[("customer_activity", "c1")].values["events_30d"] == 7
    rows = list(store.iter_rows())
    assert {(r.tenant_id, r.view, r.entity_key) for r in rows} == {
        ("tenant-a", "customer_activity", "c1"), ("tenant-a", "customer_friction", "c1"),
        ("tenant-b", "customer_activity", "c1")}
    assert all(r.feature_timestamp == T0 for r in rows)
    assert store.delete_subject("tenant-a", "c1") == 2
    assert not [r for r in store.iter_rows() if r.tenant_id == "tenant-a"]
    assert [r.values["events_30d"] for r in store.iter_rows(tenant_id="tenant-b")] == [5]  # untouched
    with pytest.raises(InvalidInputError):
        store.delete_subject("tenant-a", "")


def test_bad_online_store_urls_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unsupported"):
        open_online_store("mongodb://localhost/x")
    with pytest.raises(ConfigurationError):
        open_online_store(f"sqlite:///{tmp_path}/x.db?no_such_option=1")
    with pytest.raises(ConfigurationError):
        open_online_store("sqlite://")


def test_materialized_online_values_equal_the_offline_latest(
    settings: Settings, store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop, clinic, free = provision(settings, [("on-shop", "ecommerce", "standard"),
                                              ("on-clinic", "healthcare", "standard"),
                                              ("on-free", "education", "free")])
    view = get_feature_view("customer_activity")
    rows = []
    for tenant_number, tenant in enumerate((shop, clinic, free)):
        for customer_number, customer in enumerate(("c1", "c2", "c3")):
            for week in range(4):
                day = dt.date(2024, 1, 7) + dt.timedelta(days=7 * week)
                if customer == "c3" and week > 0:
                    continue  # c3 went quiet after week 0: its last row is older than the TTL
                rows.append({"tenant_id": tenant.tenant_id, "customer_id": customer, "snapshot_date": day,
                             **{f.name: (tenant_number * 100 + customer_number * 10 + week) * (1.5 if f.dtype ==
                                "float64" else 1) for f in view.features}})
    write_view_rows(settings, "customer_activity", [{**r, "avg_purchase_90d": None} if r["customer_id"] == "c2"
                                                    else r for r in rows])
    write_view_rows(settings, "tenant_context", [
        {"tenant_id": shop.tenant_id, "snapshot_date": dt.date(2024, 1, 28), "tenant_active_customers_30d": 2}])

    sources: list[object] = []  # what the newest-row aggregate was given: streams, never the rows read whole
    real_latest = materialize_module.latest_rows
    monkeypatch.setattr(materialize_module, "latest_rows",
                        lambda view, given: sources.extend(given) or real_latest(view, given))
    result = materialize(["customer_activity", "tenant_context"], store=store)
    assert sources and all(isinstance(source, pa.RecordBatchReader) for source in sources)
    assert free.tenant_id not in result.tenants  # module off: nothing online
    assert result.rows == {"customer_activity": 4, "tenant_context": 1}

    offline = read_feature_table(view, [shop.tenant_id, clinic.tenant_id]).to_pylist()
    for tenant in (shop, clinic):
        online = get_online_features(tenant.tenant_id, ["c1", "c2", "c3"],
                                     ["customer_activity", "tenant_context:tenant_active_customers_30d"], store=store)
        for record in online:
            mine = [r for r in offline
                    if r["tenant_id"] == tenant.tenant_id and r["customer_id"] == record["customer_id"]]
            if record["customer_id"] == "c3":
                assert all(record[f] is None for f in view.feature_names)
                continue
            latest = max(mine, key=lambda r: r["feature_timestamp"])
            assert {f: record[f] for f in view.feature_names} == {f: latest[f] for f in view.feature_names}
        expected_context = 2 if tenant is shop else None
        assert online[0]["tenant_active_customers_30d"] == expected_context
    assert not list(store.iter_rows(tenant_id=free.tenant_id))


def test_iter_rows_mentioning_keeps_exactly_the_rows_naming_a_text(store: OnlineStore) -> None:
    """The erasure scan's pre-filter: in the key or anywhere in the stored JSON, on either backend (Redis keys
    are URL-quoted, so a key with ':', '@' or '+' is compared unquoted)."""
    store.write_rows([
        _row("tenant-a", "c1", 1), _row("tenant-a", "mail@x.io:+1", 2), _row("tenant-a", "c2", 3),
        OnlineRow("tenant-a", "customer_trends", "c3", T0, {"top_category": "c1", "events_30d": 4}),
        _row("tenant-b", "c1", 5),
    ])
    seen = {(r.entity_key, r.view) for r in store.iter_rows(tenant_id="tenant-a", mentioning=["c1"])}
    assert seen == {("c1", "customer_activity"), ("c3", "customer_trends")}  # c3's JSON names c1
    assert {r.entity_key for r in store.iter_rows(tenant_id="tenant-a", mentioning=["x.io:+1", "nope"])} == {
        "mail@x.io:+1"}
    assert list(store.iter_rows(tenant_id="tenant-a", mentioning=[])) == []
    assert len(list(store.iter_rows(tenant_id="tenant-a", mentioning=None))) == 4


def test_the_erasure_scan_counts_the_same_with_and_without_the_pre_filter(
        store: OnlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from feature_store.erasure import online_store_target

    monkeypatch.setattr("feature_store.erasure.open_online_store", lambda: store)
    monkeypatch.setattr(store, "close", lambda: None)
    store.write_rows([_row("tenant-a", "c1", 1), _row("tenant-a", "c2", 2), _row("tenant-b", "c1", 3),
                      OnlineRow("tenant-a", "customer_trends", "c2", T0, {"referrer": "c1"})])
    iter_rows, read = store.iter_rows, []

    def counted(**kwargs: object) -> Iterator[OnlineRow]:
        for row in iter_rows(**kwargs):  # type: ignore[arg-type]
            read.append((row.entity_key, row.view))
            yield row

    monkeypatch.setattr(store, "iter_rows", counted)
    target = online_store_target()
    assert target.scan("tenant-a", lambda v: v == "c1") == 2
    assert len(read) == 3
    read.clear()
    assert target.scan("tenant-a", lambda v: v == "c1", mentions=["c1"]) == 2
    assert sorted(read) == [("c1", "customer_activity"), ("c2", "customer_trends")]  # c2's activity row unread
