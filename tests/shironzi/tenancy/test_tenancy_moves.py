"""Online tenant moves on real Delta tables and the real registry: copy, flip with a new epoch, catch up from
the Delta log, delete from the source, receipt and audit; and every bad input refused with nothing changed."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.errors import ConflictError, InvalidInputError, InvalidStateError, TenantNotFoundError
from shironzi.lake import append, read_arrow, table_exists, table_uri, table_version
from shironzi.lake.groups import lake_groups
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.moves import move_lock, move_tenant, moves_uri

ADMIN = TenantContext.admin(actor="ops@test", purpose="move tests")


def _rows(tenant_id: str, start: int, count: int) -> pa.Table:
    return pa.table({
        "tenant_id": [tenant_id] * count,
        "event_id": [f"e{i}" for i in range(start, start + count)],
        "event_date": [date(2026, 11, 1 + i % 3) for i in range(start, start + count)],
        "amount": [float(i) for i in range(start, start + count)],
    })


def _uri(layer: str, table: str, tenant_id: str | None = None) -> str:
    return table_uri(get_settings().resolved_lake_uri, layer=layer, table=table, region="eu-west",  # type: ignore[arg-type]
                     placement="dedicated" if tenant_id else "pooled", tenant_id=tenant_id)


def _ids(uri: str, tenant_id: str) -> list[str]:
    if not table_exists(uri):
        return []
    return sorted(read_arrow(uri, columns=["event_id"], tenant_id=tenant_id).column("event_id").to_pylist())


@pytest.fixture
def tenants(home: Path) -> dict[str, str]:
    registry = get_registry()
    out = {}
    for slug, industry, plan in [("big-shop", "ecommerce", "standard"), ("small-shop", "ecommerce", "free"),
                                 ("clinic", "healthcare", "enterprise")]:
        tenant, _ = registry.provision_tenant(ADMIN, slug=slug, name=slug, industry=industry, plan=plan)
        out[slug] = tenant.id
    return out


def test_move_to_dedicated_and_back_catches_up_and_leaves_others_alone(tenants: dict[str, str]) -> None:
    big, small = tenants["big-shop"], tenants["small-shop"]
    pooled_bronze, pooled_gold = _uri("bronze", "events"), _uri("gold", "fct_orders")
    append(pooled_bronze, pa.concat_tables([_rows(big, 0, 300), _rows(small, 0, 50)]), partition_by="event_date")
    append(pooled_gold, pa.concat_tables([_rows(big, 0, 10), _rows(small, 0, 5)]))
    landed_late: list[int] = []
    read_during_move: list[tuple[str, int, int]] = []

    def writer_between_copy_and_flip(step: str, done: int, total: int) -> None:
        if step == "copy" and done == total and not landed_late:  # a lander's commit after the copy read v0
            append(pooled_bronze, pa.concat_tables([_rows(big, 300, 40), _rows(small, 50, 5)]),
                   partition_by="event_date")
            landed_late.append(table_version(pooled_bronze))
        if step == "catch up" and done == total:  # after the flip: a reader resolving through the registry
            (group,) = lake_groups([big])
            read_during_move.append((group.placement, len(_ids(group.uri(get_settings(), layer="bronze",
                                                                           table="events"), big)),
                                     len(_ids(pooled_bronze, big))))

    receipt = move_tenant(ADMIN, "big-shop", placement="dedicated", progress=writer_between_copy_and_flip)

    moved = get_registry().get_tenant(big)
    assert (moved.placement, get_registry().placement_epoch(big)) == ("dedicated", 1)
    assert moved.lake_namespace.endswith(f"/eu-west/tenants/{big}")
    own_bronze, own_gold = _uri("bronze", "events", big), _uri("gold", "fct_orders", big)
    assert _ids(own_bronze, big) == sorted(f"e{i}" for i in range(340))  # copied 300 + caught up 40
    assert _ids(own_gold, big) == sorted(f"e{i}" for i in range(10))
    assert _ids(pooled_bronze, big) == [] and _ids(pooled_gold, big) == []
    assert len(_ids(pooled_bronze, small)) == 55 and len(_ids(pooled_gold, small)) == 5  # untouched
    assert read_during_move == [("dedicated", 340, 340)]  # the new table is whole; the old not yet emptied
    bronze = next(t for t in receipt.tables if t.layer == "bronze")
    assert (bronze.copied, bronze.caught_up, bronze.deleted) == (300, 40, 340)
    assert (bronze.source_rows_after, bronze.target_rows_after) == (0, 340)
    assert bronze.flip_version == landed_late[0] > bronze.copy_version  # type: ignore[operator]
    assert read_arrow(moves_uri()).column("move_id").to_pylist() == [receipt.move_id]

    back = move_tenant(ADMIN, big, placement="pooled")
    assert get_registry().get_tenant(big).placement == "pooled" and back.epoch == 2
    assert _ids(pooled_bronze, big) == sorted(f"e{i}" for i in range(340)) and _ids(own_bronze, big) == []
    assert len(_ids(pooled_bronze, small)) == 55
    types = [e.type for e in get_registry().events(big)]
    assert types.count("placement_changed") == 2
    from shironzi.audit.log import read_audit_events

    audit = read_audit_events(filters=[("tenant_id", "=", big)]).to_pylist()
    moves = [e for e in audit if e["action"] == "tenant_moved"]
    assert [m["request_id"] for m in moves] == [receipt.move_id, back.move_id]


def _state(tenant_id: str) -> tuple[str, int, int]:
    registry = get_registry()
    return registry.get_tenant(tenant_id).placement, registry.placement_epoch(tenant_id), len(registry.events())


def test_bad_moves_are_refused_with_nothing_changed(tenants: dict[str, str]) -> None:
    registry = get_registry()
    big, clinic = tenants["big-shop"], tenants["clinic"]
    before = {t: _state(t) for t in tenants.values()}
    with pytest.raises(TenantNotFoundError):
        move_tenant(ADMIN, "no-such-shop", placement="dedicated")
    with pytest.raises(InvalidInputError, match="unknown region"):
        move_tenant(ADMIN, big, placement="dedicated", region="mars-1")
    with pytest.raises(InvalidInputError, match="region moves need multi-region"):
        move_tenant(ADMIN, big, placement="dedicated", region="eu-west")
    with pytest.raises(InvalidInputError, match="placement"):
        move_tenant(ADMIN, big, placement="sideways")
    with pytest.raises(InvalidStateError, match="already pooled"):
        move_tenant(ADMIN, big, placement="pooled")
    with pytest.raises(InvalidStateError, match="requires dedicated placement"):
        move_tenant(ADMIN, clinic, placement="pooled")
    held, release = threading.Event(), threading.Event()

    def hold_the_move_lock() -> None:
        with move_lock(big):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_move_lock)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(ConflictError, match="already being moved"):
            move_tenant(ADMIN, big, placement="dedicated")
    finally:
        release.set()
        holder.join()
    assert {t: _state(t) for t in tenants.values()} == before
    registry.suspend(ADMIN, big)
    with pytest.raises(InvalidStateError, match="suspended"):
        move_tenant(ADMIN, big, placement="dedicated")
    registry.resume(ADMIN, big)
    registry.offboard(ADMIN, tenants["small-shop"])
    with pytest.raises(InvalidStateError, match="offboarding"):
        move_tenant(ADMIN, tenants["small-shop"], placement="dedicated")
    assert get_registry().placement_epoch(big) == 0
    assert not table_exists(moves_uri())
