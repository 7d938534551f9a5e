"""File layout (tenant clustering and file skipping) and concurrent writers on real Delta tables."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from shironzi import lake
from tests.shironzi.lake._fixtures import MakeEvents

TENANTS = [f"tenant_{i:03d}" for i in range(20)]


def _pruned_by_delta_rs(uri: str, tenant: str) -> int:
    return len(DeltaTable(uri).file_uris(file_pruning_predicate=[("tenant_id", "=", tenant)]))


def test_tenant_clustering_lets_readers_skip_other_tenants_files(
    lake_root: str, make_events: MakeEvents
) -> None:
    data = make_events(6000, tenants=20, seed=11)  # rows arrive in random tenant order
    clustered, unclustered = f"{lake_root}/clustered", f"{lake_root}/unclustered"

    assert lake.append(clustered, data, target_file_size=16 * 1024).rows == 6000
    write_deltalake(unclustered, data, mode="append", target_file_size=16 * 1024)  # as delivered

    touched, total = lake.files_touched(clustered, tenant_id="tenant_007")
    assert total >= 4, "the write should be split into several files for this test to mean anything"
    assert touched <= 2 and touched < total
    assert touched == _pruned_by_delta_rs(clustered, "tenant_007")  # agrees with delta-rs's own pruning

    raw_touched, raw_total = lake.files_touched(unclustered, tenant_id="tenant_007")
    assert raw_total >= 4 and raw_touched == raw_total  # every unsorted file spans all tenants

    # Isolation: a tenant read returns exactly that tenant's rows, from either layout.
    expected = Counter(data.column("tenant_id").to_pylist())["tenant_007"]
    for uri in (clustered, unclustered):
        rows = lake.read_arrow(uri, tenant_id="tenant_007")
        assert rows.num_rows == expected and set(rows.column("tenant_id").to_pylist()) == {"tenant_007"}


def test_files_touched_uses_partition_values_and_statistics(events_uri: str, make_events: MakeEvents) -> None:
    import datetime as dt

    for day in (1, 2, 3):
        # One tenant group per commit and day: each file covers a known tenant range.
        lake.append(
            events_uri,
            make_events(50, days=(day,), tenant_ids=TENANTS[:10], seed=day),
            partition_by=["event_date"],
        )
        lake.append(events_uri, make_events(50, days=(day,), tenant_ids=TENANTS[10:], seed=10 + day))
    assert lake.files_touched(events_uri) == (6, 6)
    assert lake.files_touched(events_uri, [("event_date", "=", dt.date(2024, 1, 2))]) == (2, 6)
    assert lake.files_touched(events_uri, [("event_date", "=", "2024-01-02")]) == (2, 6)
    assert lake.files_touched(events_uri, tenant_id="tenant_015") == (3, 6)
    assert lake.files_touched(
        events_uri, [("event_date", ">=", dt.date(2024, 1, 2))], tenant_id="tenant_001"
    ) == (
        2,
        6,
    )
    assert lake.files_touched(events_uri, [("tenant_id", "in", ["tenant_001", "tenant_019"])]) == (6, 6)
    assert lake.files_touched(events_uri, [("tenant_id", ">", "tenant_999")]) == (0, 6)
    dnf = [[("event_date", "=", dt.date(2024, 1, 1))], [("tenant_id", "=", "tenant_012")]]
    assert lake.files_touched(events_uri, dnf) == (4, 6)
    for tenant in ("tenant_000", "tenant_012", "zzz"):
        assert lake.files_touched(events_uri, tenant_id=tenant)[0] == _pruned_by_delta_rs(events_uri, tenant)


def _append_many(uri: str, app_id: str, tenant: str, batches: int, barrier: threading.Barrier | None) -> None:
    if barrier is not None:
        barrier.wait()
    for version in range(batches):
        ids = [f"{app_id}-{version}-{i}" for i in range(10)]
        data = pa.table({"tenant_id": [tenant] * 10, "event_id": ids, "amount": [1.0] * 10})
        lake.append(uri, data, txn=lake.Txn(app_id, version))


def test_two_writer_threads_append_concurrently_without_losing_rows(events_uri: str) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(app_id: str, tenant: str) -> None:
        try:
            _append_many(events_uri, app_id, tenant, 12, barrier)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"ingest:p{i}", f"tenant_{i}")) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    table = lake.read_arrow(events_uri)
    assert table.num_rows == 2 * 12 * 10
    assert len(set(table.column("event_id").to_pylist())) == 240
    assert lake.txn_version(events_uri, "ingest:p0") == 11 and lake.txn_version(events_uri, "ingest:p1") == 11


def _process_writer(uri: str, app_id: str, tenant: str, home: str) -> None:
    import os

    os.environ["SHIRONZI_HOME"] = home
    _append_many(uri, app_id, tenant, 8, None)


@pytest.mark.slow
def test_two_writer_processes_append_concurrently_without_losing_rows(events_uri: str, home: Path) -> None:
    lake.append(events_uri, pa.table({"tenant_id": ["seed"], "event_id": ["seed"], "amount": [0.0]}))
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_process_writer, args=(events_uri, f"proc:p{i}", f"t{i}", str(home)))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    table = lake.read_arrow(events_uri)
    assert table.num_rows == 1 + 2 * 8 * 10
    assert lake.txn_version(events_uri, "proc:p0") == 7 and lake.txn_version(events_uri, "proc:p1") == 7
    retries = [e["operationMetrics"].get("num_retries", 0) for e in lake.history(events_uri)]
    assert len(retries) == 1 + 1 + 16  # create, seed, and one commit per batch: no lost or doubled commits


def test_racing_writers_with_the_same_txn_commit_it_once(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(1, seed=99))
    data = make_events(25, seed=1)
    barrier = threading.Barrier(3)
    results: list[lake.CommitResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(lake.append(events_uri, data, txn=lake.Txn("replayed", 3)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(r.skipped for r in results) == [False, True, True]
    assert lake.read_arrow(events_uri).num_rows == 26
