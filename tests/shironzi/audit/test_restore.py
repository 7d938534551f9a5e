"""Per-tenant point-in-time restore: a pooled tenant's bad import undone next to other tenants, erasures kept."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.audit.erasure import erase_subject
from shironzi.audit.evidence import Window, backup_drills
from shironzi.audit.log import get_audit_log, read_audit_events
from shironzi.audit.restore import restore_tenant, restores_table_uri
from shironzi.errors import InvalidInputError, InvalidStateError, TenantNotFoundError
from shironzi.lake.delta import append, history, overwrite, read_arrow, table_version
from shironzi.lake.maintenance import vacuum
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.moves import move_tenant
from shironzi.tenancy.registry import get_registry
from tests.shironzi.audit._fixtures import uri

ADMIN = TenantContext.admin(actor="ops@platform", purpose="tenant_restore")
DAY = dt.date(2026, 11, 1)


def _rows(tenant: str, customers: list[str], *, start: int, amount: float = 10.0) -> pa.Table:
    return pa.table({
        "tenant_id": [tenant] * len(customers),
        "event_id": [f"e{start + i:04d}" for i in range(len(customers))],
        "customer_id": customers,
        "amount": [amount] * len(customers),
        "event_date": pa.array([DAY] * len(customers), pa.date32()),
    })


def _hashes(table_uri: str, tenant: str) -> list[str]:
    """Each of the tenant's rows as a hash of its values, sorted (order-free, byte-for-byte content)."""
    rows = read_arrow(table_uri, tenant_id=tenant).to_pylist()
    return sorted(hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()).hexdigest() for r in rows)


def _moment() -> dt.datetime:
    time.sleep(0.02)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    return moment


@pytest.fixture
def world(audit_home: Path) -> dict[str, str]:
    registry = get_registry()
    a, _ = registry.provision_tenant(ADMIN, slug="acme-shop", name="Acme", industry="ecommerce", placement="pooled")
    b, _ = registry.provision_tenant(ADMIN, slug="beta-shop", name="Beta", industry="ecommerce", placement="pooled")
    bronze, gold = uri("bronze", "events"), uri("gold", "dim_customers")
    # c_3 is never a file's min or max customer id, so its erasure keeps the log (and time travel) whole
    append(bronze, pa.concat_tables([_rows(a.id, ["c_1", "c_2", "c_3", "c_4", "c_5"], start=0),
                                     _rows(b.id, ["c_1", "c_2", "c_4"], start=100)]), partition_by="event_date")
    append(gold, pa.concat_tables([_rows(a.id, ["c_1", "c_2", "c_5"], start=200),
                                   _rows(b.id, ["c_2", "c_4"], start=300)]))
    return {"a": a.id, "b": b.id, "bronze": bronze, "gold": gold}


def test_restore_undoes_a_bad_import_and_keeps_other_tenants_and_erasures(world: dict[str, str]) -> None:
    a, b, bronze, gold = world["a"], world["b"], world["bronze"], world["gold"]
    good_bronze, good_gold = _hashes(bronze, a), _hashes(gold, a)
    restore_point = _moment()

    # after the restore point: A's bad import corrupts both tables; B keeps writing legitimately
    append(bronze, _rows(a, ["c_1", "c_9", "c_8"], start=500, amount=-1.0), partition_by="event_date")
    overwrite(gold, _rows(a, ["c_1", "c_9"], start=600, amount=-1.0), predicate=[("tenant_id", "=", a)])
    append(bronze, _rows(b, ["c_6"], start=700), partition_by="event_date")
    erase_subject(ADMIN, a, "c_3")  # erased after the restore point: must not come back
    others = {t: _hashes(t, b) for t in (bronze, gold)}
    versions = {t: table_version(t) for t in (bronze, gold)}

    receipt = restore_tenant(ADMIN, "acme-shop", to=restore_point)

    without_c3 = {t: [r for r in read_arrow(t, tenant_id=a).to_pylist()] for t in (bronze, gold)}
    assert sorted(r["customer_id"] for r in without_c3[bronze]) == ["c_1", "c_2", "c_4", "c_5"]
    assert sorted(r["customer_id"] for r in without_c3[gold]) == ["c_1", "c_2", "c_5"]
    assert all(r["amount"] == 10.0 for t in without_c3.values() for r in t)
    assert len(_hashes(bronze, a)) == len(good_bronze) - 1 and set(_hashes(bronze, a)) < set(good_bronze)
    assert _hashes(gold, a) == good_gold  # the overwritten rows are back
    assert {t: _hashes(t, b) for t in (bronze, gold)} == others  # other tenants byte for byte
    for t in (bronze, gold):  # one commit per table
        assert table_version(t) == versions[t] + 1
        assert history(t, 1)[0]["userMetadata"]["shironzi_purpose"] == "tenant_restore"

    by_table = {r["table"].split("/", 1)[1]: r for r in receipt.tables}
    assert by_table["bronze/events"]["rows_before"] == 7 and by_table["bronze/events"]["rows_after"] == 4
    assert by_table["bronze/events"]["files_replayed"] >= 1  # read through the erasure's rewritten files
    assert receipt.erasures_reapplied == 1 and receipt.signature == receipt.sign()
    assert read_arrow(restores_table_uri()).column("request_id").to_pylist() == [receipt.request_id]
    get_audit_log().flush()
    (event,) = read_audit_events(filters=[("action", "=", "tenant_restored")]).to_pylist()
    assert event["tenant_id"] == a and json.loads(event["details"])["tables"][0]["rows_after"] >= 2
    now = dt.datetime.now(dt.UTC)
    drills = backup_drills(Window(now - dt.timedelta(days=1), now + dt.timedelta(hours=1)))
    assert drills["latest"]["action"] == "tenant_restored" and drills["note"] == ""


def test_erasure_ledger_is_reapplied_when_old_files_come_back(world: dict[str, str], tmp_path: Path) -> None:
    """Files brought back from a backup (or a replica) still hold an erased subject: the restore drops it."""
    a, bronze = world["a"], world["bronze"]
    restore_point = _moment()
    backup = tmp_path / "backup"
    shutil.copytree(bronze, backup)
    erase_subject(ADMIN, a, "c_3")
    for path in backup.rglob("*.parquet"):  # the erased files return; the log is the current one
        target = Path(bronze) / path.relative_to(backup)
        if not target.exists():
            shutil.copy2(path, target)

    receipt = restore_tenant(ADMIN, a, to=restore_point)

    (bronze_result,) = [r for r in receipt.tables if r["table"].endswith("bronze/events")]
    assert bronze_result["erased_rows_dropped"] == 1 and bronze_result["files_replayed"] == 0
    assert sorted(read_arrow(bronze, tenant_id=a).column("customer_id").to_pylist()) == ["c_1", "c_2", "c_4", "c_5"]


def test_dry_run_changes_nothing_and_is_recorded_as_a_drill(world: dict[str, str]) -> None:
    a, bronze = world["a"], world["bronze"]
    restore_point = _moment()
    append(bronze, _rows(a, ["c_9"], start=900), partition_by="event_date")
    before, version = _hashes(bronze, a), table_version(bronze)

    receipt = restore_tenant(ADMIN, a, to=restore_point, dry_run=True)

    assert _hashes(bronze, a) == before and table_version(bronze) == version
    assert {r["table"].split("/", 1)[1]: r["rows_after"] for r in receipt.tables}["bronze/events"] == 5
    get_audit_log().flush()
    assert read_audit_events(filters=[("action", "=", "restore_drill")]).num_rows == 1


def test_bad_restores_are_refused_and_change_nothing(world: dict[str, str]) -> None:
    a, bronze = world["a"], world["bronze"]
    created = get_registry().get_tenant(a).created_at
    with pytest.raises(InvalidInputError, match="did not exist"):
        restore_tenant(ADMIN, a, to=created.replace(tzinfo=dt.UTC) - dt.timedelta(days=1))
    with pytest.raises(InvalidInputError, match="future"):
        restore_tenant(ADMIN, a, to=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with pytest.raises(TenantNotFoundError):
        restore_tenant(ADMIN, "no-such-tenant", to=dt.datetime.now(dt.UTC))
    get_registry().offboard(ADMIN, world["b"])
    with pytest.raises(InvalidStateError, match="offboarding"):
        restore_tenant(ADMIN, world["b"], to=dt.datetime.now(dt.UTC))

    restore_point = _moment()  # then a rewrite, and a vacuum that removes the version's files
    overwrite(bronze, _rows(a, ["c_7"], start=800), predicate=[("tenant_id", "=", a)])
    vacuum(bronze, retention_hours=0, enforce_retention_duration=False)
    version = table_version(bronze)
    with pytest.raises(InvalidStateError, match="older than the retained history"):
        restore_tenant(ADMIN, a, to=restore_point)
    assert table_version(bronze) == version and read_arrow(bronze, tenant_id=a).num_rows == 1
    assert not Path(restores_table_uri()).exists()


def test_dedicated_tables_are_restored_and_other_dedicated_roots_left_alone(world: dict[str, str]) -> None:
    a = world["a"]
    d, _ = get_registry().provision_tenant(ADMIN, slug="big-clinic", name="Clinic", industry="ecommerce",
                                           placement="dedicated")
    own, others = uri("bronze", "events", tenant_id=d.id), uri("bronze", "events", tenant_id=a)
    append(own, _rows(d.id, ["p_1", "p_2"], start=0))
    append(others, _rows(a, ["c_1"], start=0))  # another tenant's root (a restore of `d` must not read it)
    restore_point = _moment()
    append(own, _rows(d.id, ["junk"], start=10, amount=-1.0))
    append(others, _rows(a, ["c_2"], start=10))
    kept = table_version(others)

    receipt = restore_tenant(ADMIN, d.id, to=restore_point)

    assert sorted(read_arrow(own).column("customer_id").to_pylist()) == ["p_1", "p_2"]
    assert table_version(others) == kept and read_arrow(others).num_rows == 2
    assert not any(r["table"].startswith(f"eu-west/tenants/{a}/") for r in receipt.tables)
    assert any(r["table"] == f"eu-west/tenants/{d.id}/bronze/events" for r in receipt.tables)


def test_restore_to_before_a_placement_move_is_refused(world: dict[str, str]) -> None:
    a, bronze = world["a"], world["bronze"]
    restore_point = _moment()
    move_tenant(ADMIN, a, placement="dedicated")
    version = table_version(bronze)
    with pytest.raises(InvalidStateError, match="restore to a moment after the move"):
        restore_tenant(ADMIN, a, to=restore_point)
    assert table_version(bronze) == version
