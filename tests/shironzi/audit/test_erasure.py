"""Subject and tenant erasure: exact matching, vacuum under a lease, direct-file verification, receipts."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from shironzi.audit.erasure import (
    Receipt,
    erase_subject,
    erase_tenant,
    register_erasure_target,
    unregister_erasure_target,
    verify_receipt,
)
from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log, read_audit_events, record_training_run, reset_audit_logs
from shironzi.errors import InvalidStateError, PermissionDeniedError
from shironzi.lake.delta import append, delete, history, read_arrow, table_version
from shironzi.lake.discovery import discover_tables, list_parquet_files
from shironzi.lake.leases import normalise_uri, table_lease
from shironzi.privacy.tokens import pseudonym
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore
from tests.shironzi.audit._fixtures import SqliteOnlineStore, build_lake, events, tenant_customers, uri

ADMIN = TenantContext.admin(actor="dpo@platform", purpose="gdpr_erasure")


def _all_rows(column_pairs: bool = True) -> list[tuple[str | None, str | None, str]]:
    """Every (tenant, customer, file) in every Parquet file of the lake, read independently of the code."""
    found = []
    for table in discover_tables():
        for path in list_parquet_files(table.uri):
            data = pq.read_table(path)
            if "customer_id" in data.column_names:
                for t, c in zip(
                    data.column("tenant_id").to_pylist(), data.column("customer_id").to_pylist(), strict=True
                ):
                    found.append((t, c, path))
    return found


@pytest.fixture
def online(audit_home: Path):  # type: ignore[no-untyped-def]
    store = SqliteOnlineStore(audit_home / "online.db")
    register_erasure_target(store)
    yield store
    unregister_erasure_target(store.name)


def test_erase_subject_everywhere_but_not_look_alikes(audit_home: Path, online: SqliteOnlineStore) -> None:
    token = pseudonym(get_keystore().get_or_create_key("t_a"), "c_1")
    tables = build_lake(token=token)
    for tenant, customer in (("t_a", "c_1"), ("t_a", "c_12"), ("t_b", "c_1"), ("t_a", token)):
        online.put(tenant, customer, {"score": 0.5})
    features_version = 0
    record_training_run(
        "trainer",
        run_id="run-7",
        model_name="churn",
        model_version=3,
        inputs=[(tables["features"], features_version)],
    )
    record_training_run(
        "trainer",
        run_id="run-8",
        model_name="trend",
        model_version=1,
        inputs=[(tables["bronze"] + "_other", 0)],
    )

    receipt = erase_subject(ADMIN, "t_a", "c_1")

    # Nothing of t_a/c_1 (raw or pseudonymised) is left in ANY file on disk; everything else is.
    rows = _all_rows()
    assert not [r for r in rows if r[0] == "t_a" and r[1] in ("c_1", token)]
    assert [r for r in rows if r[0] == "t_b" and r[1] == "c_1"]  # other tenant, same id: kept
    assert [r for r in rows if r[0] == "t_d" and r[1] == "c_1"]  # other tenant's dedicated table: kept
    for name in ("bronze", "silver", "gold", "features", "predictions"):
        assert tenant_customers(tables[name], "t_a") == ["c_10", "c_12", "c_2"], name
    payloads = read_arrow(tables["quarantine"]).column("raw_payload").to_pylist()
    assert len(payloads) == 3
    assert any('"c_12"' in p for p in payloads) and any("c_10" in p for p in payloads)
    assert any('"t_b"' in p and '"c_1"' in p for p in payloads)
    assert online.customers("t_a") == ["c_12"] and online.customers("t_b") == ["c_1"]

    # The receipt: every touched table, before/after versions, rows and files, a passing verification.
    assert receipt.verification["ok"] and receipt.verification["files_scanned"] > 0
    touched = {t["table"]: t for t in receipt.tables}
    assert set(touched) == {
        "eu-west/bronze/events",
        "eu-west/silver/stg_events",
        "eu-west/gold/dim_customers",
        "eu-west/features/customer_features",
        "eu-west/predictions/churn_scores",
        "eu-west/quarantine/events",
    }
    assert touched["eu-west/bronze/events"]["rows_deleted"] == 3
    assert touched["eu-west/quarantine/events"]["rows_deleted"] == 3
    assert all(t["after_version"] > t["before_version"] and t["files_removed"] >= 1 for t in touched.values())
    assert touched["eu-west/bronze/events"]["log_files_dropped"] > 0  # a file's stats were min=max=c_1
    assert receipt.targets == {"online_store": 2}
    assert "c_1" not in receipt.to_json()
    assert [r["run_id"] for r in receipt.training_runs] == ["run-7"]
    assert receipt.models_flagged == [{"model": "churn", "model_version": "3", "run_id": "run-7"}]
    audit_rows = read_audit_events()
    flagged = audit_rows.filter(pc.equal(audit_rows.column("action"), "model_flagged_for_retraining"))
    assert json.loads(flagged.column("details")[0].as_py())["model"] == "churn"
    assert "subject_erased" in audit_rows.column("action").to_pylist()

    # Re-verification: by request id (from the receipts table) and from a file.
    check = verify_receipt(receipt.request_id)
    assert check.ok and check.signature_ok
    path = audit_home / "receipt.json"
    path.write_text(receipt.to_json())
    assert verify_receipt(str(path)).ok


def test_forged_or_stale_receipt_fails_verification(audit_home: Path) -> None:
    tables = build_lake()
    receipt = erase_subject(ADMIN, "t_a", "c_1")
    forged = json.loads(receipt.to_json())
    forged["tables"][0]["rows_deleted"] += 5
    check = verify_receipt(Receipt.from_json(forged))
    assert not check.signature_ok and not check.ok
    # A genuine receipt stops verifying once the subject's data reappears.
    append(tables["gold"], _gold_row())
    again = verify_receipt(receipt.request_id)
    assert again.signature_ok and not again.ok
    assert again.verification.matching_rows == {"eu-west/gold/dim_customers": 1}


def _gold_row():  # type: ignore[no-untyped-def]
    from tests.shironzi.audit._fixtures import customers

    return customers([("t_a", "c_1")])


def test_tenant_context_cannot_erase_another_tenants_subject(audit_home: Path) -> None:
    build_lake()
    with pytest.raises(PermissionDeniedError):
        erase_subject(TenantContext.for_tenant("t_b", actor="x", purpose="dsar"), "t_a", "c_1")


def test_erasure_under_concurrent_ingestion(audit_home: Path) -> None:
    tables = build_lake()
    bronze = tables["bronze"]
    stop = threading.Event()
    appended: list[int] = []
    errors: list[BaseException] = []

    def ingest() -> None:
        batch = 0
        while not stop.is_set() or batch < 3:
            rows = events([("t_a", f"c_new{batch}_{i}") for i in range(5)], start=1000 + batch * 10)
            try:
                with table_lease(bronze):  # what bronze landing does around each commit
                    append(bronze, rows, partition_by="event_date")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            appended.append(rows.num_rows)
            batch += 1

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        receipt = erase_subject(ADMIN, "t_a", "c_1")
    finally:
        stop.set()
        writer.join(timeout=120)
    assert not errors
    assert receipt.verification["ok"]
    left = tenant_customers(bronze, "t_a")
    assert "c_1" not in left
    assert sum(1 for c in left if c.startswith("c_new")) == sum(appended)
    assert {"c_10", "c_12", "c_2"} <= set(left)
    assert verify_receipt(receipt.request_id).ok


def test_erase_tenant_requires_offboarding_and_shreds_its_key(audit_home: Path) -> None:
    from shironzi.tenancy.registry import get_registry

    registry = get_registry()
    tenant, _ = registry.provision_tenant(
        ADMIN, slug="acme", name="Acme", industry="ecommerce", plan="standard"
    )
    tid = tenant.id
    build_lake()
    append(
        f"{get_settings().resolved_lake_uri}/eu-west/tenants/{tid}/bronze/events",
        events([(tid, "c_9")], start=900),
        partition_by="event_date",
    )
    append(f"{get_settings().resolved_lake_uri}/eu-west/gold/dim_customers", _tenant_rows(tid))
    get_keystore().get_or_create_key(tid)
    with pytest.raises(InvalidStateError):
        erase_tenant(ADMIN, tid)
    registry.offboard(ADMIN, tid, reason="contract ended")
    receipt = erase_tenant(ADMIN, tid)
    assert receipt.kind == "tenant" and receipt.verification["ok"]
    assert not [r for r in _all_rows() if r[0] == tid]
    assert not (Path(get_settings().resolved_lake_uri) / "eu-west" / "tenants" / tid).exists()
    assert [r for r in _all_rows() if r[0] == "t_a"]  # other tenants untouched
    from shironzi.errors import KeyDestroyedError

    with pytest.raises(KeyDestroyedError):
        get_keystore().get_key(tid)
    assert verify_receipt(receipt.request_id).ok


def _tenant_rows(tid: str):  # type: ignore[no-untyped-def]
    from tests.shironzi.audit._fixtures import customers

    return customers([(tid, "c_9"), (tid, "c_8")])


def test_exclusive_lease_waits_for_writers_and_blocks_new_ones(audit_home: Path) -> None:
    import time

    from shironzi.errors import LeaseBusyError

    table = "/lake/eu-west/bronze/events"
    order: list[str] = []
    writer_in = threading.Event()

    def writer() -> None:
        with table_lease(table):
            writer_in.set()
            time.sleep(0.3)
            order.append("writer done")

    thread = threading.Thread(target=writer)
    thread.start()
    writer_in.wait(5)
    refused: list[BaseException] = []

    def new_writer() -> None:  # another thread: the eraser's own thread re-enters its lease
        try:
            with table_lease(table, timeout=0.2):
                pass
        except LeaseBusyError as exc:
            refused.append(exc)

    with table_lease(table, mode="exclusive", timeout=5):
        order.append("erasure in")
        late = threading.Thread(target=new_writer)
        late.start()
        late.join()
        with table_lease(table):  # re-entrant: the holder's own writes (delete, vacuum) pass through
            order.append("erasure writes")
    thread.join()
    assert order == ["writer done", "erasure in", "erasure writes"]
    assert len(refused) == 1 and "shared lease of table" in str(refused[0])  # a new writer must wait


def test_erasure_finds_the_models_trained_on_the_subject_after_the_home_moves(
    audit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shironzi.tenancy.registry import reset_registries

    tables = build_lake()
    record_training_run("trainer", run_id="run-new", model_name="churn", model_version=4,
                        inputs=[(tables["features"], 0)])
    # An event written before identities were lake-relative: the absolute path of the old home.
    get_audit_log().record(AuditEvent(
        action="training_run", actor="trainer", resource="model:trend", request_id="run-old",
        details={"run_id": "run-old", "model": "trend", "model_version": "2",
                 "inputs": [{"table": normalise_uri(tables["gold"]), "version": 0}]}))
    recorded = read_audit_events(filters=[("action", "=", "training_run"), ("request_id", "=", "run-new")])
    assert json.loads(recorded.column("details")[0].as_py())["inputs"] == [
        {"table": "eu-west/features/customer_features", "version": 0}
    ]
    reset_audit_logs()
    reset_registries()

    restored = tmp_path / "restored-elsewhere" / "home"
    restored.parent.mkdir()
    shutil.move(audit_home, restored)  # the old path no longer exists
    monkeypatch.setenv("SHIRONZI_HOME", str(restored))
    get_settings.cache_clear()
    try:
        receipt = erase_subject(ADMIN, "t_a", "c_1")
    finally:
        reset_audit_logs()
        reset_registries()

    assert receipt.verification["ok"]
    assert {r["run_id"] for r in receipt.training_runs} == {"run-new", "run-old"}
    assert sorted((m["model"], m["model_version"]) for m in receipt.models_flagged) == [("churn", "4"), ("trend", "2")]
    assert all(str(audit_home) not in t["uri"] for t in receipt.tables)


def test_a_receipt_from_before_the_artifact_fields_still_verifies(audit_home: Path) -> None:
    build_lake()
    receipt = erase_subject(ADMIN, "t_a", "c_1")
    assert receipt.artifacts == [] and receipt.retraining_queued == []  # no MLflow store in this home
    older = json.loads(receipt.to_json())
    del older["artifacts"], older["retraining_queued"]  # as written before the fields existed
    check = verify_receipt(Receipt.from_json(older))
    assert check.signature_ok and check.ok
    older["artifacts"] = [{"artifact": "runs/x/holdout.parquet", "action": "rewritten", "rows_removed": 1}]
    assert not verify_receipt(Receipt.from_json(older)).signature_ok  # the new fields are signed when set


def test_erasure_reads_only_the_files_that_can_hold_the_tenant(audit_home: Path) -> None:
    bronze = uri("bronze", "events")
    for i in range(24):  # one file per tenant, as clustering by tenant_id lays them out
        tenant = f"t_{i:02d}"
        append(bronze, events([(tenant, "c_0"), (tenant, "c_1"), (tenant, "c_2")], start=i * 10))
    before = table_version(bronze)

    receipt = erase_subject(ADMIN, "t_07", "c_1")

    assert receipt.verification["ok"]
    assert receipt.verification["files_scanned"] <= 2  # t_07's rewritten file (+ nothing else of 25)
    assert receipt.verification["files_skipped"] >= 23
    delete_commit = next(h for h in history(bronze) if h["version"] == before + 1)
    assert int(delete_commit["operationMetrics"]["num_removed_files"]) == 1  # only t_07's file was rewritten
    assert tenant_customers(bronze, "t_07") == ["c_0", "c_2"] and tenant_customers(bronze, "t_08") == [
        "c_0", "c_1", "c_2"
    ]


def test_erasure_keeps_other_tenants_time_travel_and_removes_the_subjects_files(audit_home: Path) -> None:
    bronze = uri("bronze", "events")
    append(bronze, events([("t_b", "c_x"), ("t_b", "c_y")]))
    t_b_version = table_version(bronze)
    delete(bronze, "tenant_id = 't_b' AND customer_id = 'c_y'")  # t_b's first file is now history
    append(bronze, events([("t_a", "c_0"), ("t_a", "c_1"), ("t_a", "c_2")], start=10))
    subject_files = set(list_parquet_files(bronze)) - {
        p for p in list_parquet_files(bronze) if pq.read_table(p).column("tenant_id")[0].as_py() == "t_b"
    }

    receipt = erase_subject(ADMIN, "t_a", "c_1")

    assert receipt.verification["ok"] and receipt.tables[0]["files_removed"] == 1
    old = read_arrow(bronze, version=t_b_version, filters=[("tenant_id", "=", "t_b")])
    assert sorted(old.column("customer_id").to_pylist()) == ["c_x", "c_y"]  # time travel still works for t_b
    assert not any(Path(p).exists() for p in subject_files)  # the file that held the subject is gone
    assert tenant_customers(bronze, "t_a") == ["c_0", "c_2"]


def test_tables_are_erased_at_once_and_reported_in_order(audit_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.audit import erasure

    build_lake(token=pseudonym(get_keystore().get_or_create_key("t_a"), "c_1"))
    active, most, lock = [0], [0], threading.Lock()
    real = erasure._erase_table

    def overlapping(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.3)  # long enough that tables erased at once overlap here
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(erasure, "_erase_table", overlapping)
    receipt = erase_subject(TenantContext.admin(actor="dpo", purpose="gdpr"), "t_a", "c_1")
    assert most[0] >= 2  # one at a time would be 1
    order = [t.relative for t in discover_tables()]
    assert [t["table"] for t in receipt.tables] == sorted((t["table"] for t in receipt.tables), key=order.index)
    assert len(receipt.tables) >= 3 and receipt.verification["ok"]
