"""Appends, txn idempotency, merges, overwrites, deletes, reads and history on real Delta tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shironzi import lake
from shironzi.errors import InvalidInputError, InvalidStateError, TableNotFoundError
from shironzi.lake import tables
from tests.shironzi.lake._fixtures import MakeEvents

DAY1, DAY2, DAY3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["event_id"])


def test_append_then_read_with_partition_and_tenant_pushdown(
    events_uri: str, make_events: MakeEvents
) -> None:
    data = make_events(200, days=(1, 2, 3), tenants=5)
    result = lake.append(events_uri, data, partition_by=["event_date"])

    assert result.rows == 200 and not result.skipped
    assert result.version == lake.table_version(events_uri)
    assert lake.table_exists(events_uri)

    got = lake.read_arrow(events_uri, filters=[("event_date", ">=", DAY2)], tenant_id="tenant_001")
    expected = [r for r in data.to_pylist() if r["event_date"] >= DAY2 and r["tenant_id"] == "tenant_001"]
    assert expected and _sorted_rows(got) == sorted(expected, key=lambda r: r["event_id"])

    projected = lake.read_arrow(events_uri, columns=["tenant_id", "amount"], tenant_id="tenant_002")
    assert projected.column_names == ["tenant_id", "amount"]
    assert set(projected.column("tenant_id").to_pylist()) == {"tenant_002"}

    # DNF: an OR of two AND-branches, and the tenant filter joins every branch.
    dnf = [[("event_date", "=", DAY1)], [("event_date", "=", DAY3), ("event_type", "=", "login")]]
    got = lake.read_arrow(events_uri, filters=dnf, tenant_id="tenant_003")
    expected_ids = {
        r["event_id"]
        for r in data.to_pylist()
        if r["tenant_id"] == "tenant_003"
        and (r["event_date"] == DAY1 or (r["event_date"] == DAY3 and r["event_type"] == "login"))
    }
    assert set(got.column("event_id").to_pylist()) == expected_ids

    as_json_lists = lake.read_arrow(events_uri, filters=[["event_date", "=", DAY2]])  # as decoded from JSON
    assert as_json_lists.num_rows == sum(r["event_date"] == DAY2 for r in data.to_pylist())

    frame = lake.read_polars(events_uri, columns=["event_id"], filters=[("event_date", "=", DAY2)])
    assert isinstance(frame, pl.DataFrame)
    assert set(frame["event_id"]) == {r["event_id"] for r in data.to_pylist() if r["event_date"] == DAY2}
    lazy = lake.scan_polars(events_uri, tenant_id="tenant_004")
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.select(pl.len()).collect().item() == sum(
        r["tenant_id"] == "tenant_004" for r in data.to_pylist()
    )


def test_append_clusters_rows_by_tenant_within_files(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(300, tenants=7, seed=3))
    files = DeltaTable(events_uri).file_uris()
    assert len(files) == 1
    tenants = pq.read_table(files[0]).column("tenant_id").to_pylist()
    assert tenants == sorted(tenants) and len(set(tenants)) == 7


def test_append_accepts_polars_and_keeps_string_types(events_uri: str, make_events: MakeEvents) -> None:
    frame = pl.from_arrow(make_events(20))
    assert isinstance(frame, pl.DataFrame)
    result = lake.append(events_uri, frame)
    assert result.rows == 20
    schema = {f.name: f.type for f in DeltaTable(events_uri).schema().fields}
    assert str(schema["tenant_id"]) == 'PrimitiveType("string")'
    assert lake.read_arrow(events_uri).num_rows == 20


def test_new_tables_checkpoint_at_least_every_100_commits(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(5))
    interval = int(DeltaTable(events_uri).metadata().configuration["delta.checkpointInterval"])
    assert 0 < interval <= 100


def test_checkpoint_interval_drives_automatic_checkpoints(
    events_uri: str, make_events: MakeEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "CHECKPOINT_INTERVAL", 4)
    for seed in range(5):  # create + 5 appends = 6 commits: one checkpoint every 4 commits
        lake.append(events_uri, make_events(3, seed=seed))
    log = Path(events_uri) / "_delta_log"
    checkpoints = sorted(log.glob("*.checkpoint.parquet"))
    assert len(checkpoints) == 1 and int(checkpoints[0].name.split(".")[0]) < 5
    assert (log / "_last_checkpoint").exists()
    assert lake.read_arrow(events_uri).num_rows == 15


def test_same_txn_twice_writes_one_copy(events_uri: str, make_events: MakeEvents) -> None:
    data = make_events(50)
    first = lake.append(events_uri, data, txn=lake.Txn("ingest:events:p0", 7))
    again = lake.append(events_uri, data, txn=lake.Txn("ingest:events:p0", 7))

    assert not first.skipped and first.rows == 50
    assert again.skipped and again.rows == 0 and again.version == first.version
    assert lake.read_arrow(events_uri).num_rows == 50


def test_lower_txn_version_is_skipped_and_higher_is_written(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(10, seed=1), txn=lake.Txn("app", 5))
    lower = lake.append(events_uri, make_events(10, seed=2), txn=lake.Txn("app", 3))
    higher = lake.append(events_uri, make_events(10, seed=3), txn=lake.Txn("app", 6))

    assert lower.skipped and not higher.skipped
    assert lake.read_arrow(events_uri).num_rows == 20
    assert lake.txn_version(events_uri, "app") == 6


def test_txn_version_survives_reopening(events_uri: str, make_events: MakeEvents) -> None:
    assert lake.txn_version(events_uri, "app") is None  # no table yet: start from scratch
    lake.append(events_uri, make_events(5), txn=lake.Txn("app", 41), metadata={"run_id": "r-1"})
    lake.append(events_uri, make_events(5, seed=1), txn=lake.Txn("other", 2))

    # A fresh handle (as after a crash) reads the offsets back from the Delta log.
    reopened = DeltaTable(events_uri)
    assert reopened.transaction_version("app") == 41
    assert lake.txn_version(events_uri, "app") == 41
    assert lake.txn_version(events_uri, "other") == 2
    assert lake.txn_version(events_uri, "never") is None


def test_one_commit_carries_several_txns(events_uri: str, make_events: MakeEvents) -> None:
    txns = [lake.Txn("stream:p0", 100), lake.Txn("stream:p1", 250)]
    result = lake.append(events_uri, make_events(30), txns=txns)
    version = result.version

    assert lake.txn_version(events_uri, "stream:p0") == 100
    assert lake.txn_version(events_uri, "stream:p1") == 250
    log = (Path(events_uri) / "_delta_log" / f"{version:020d}.json").read_text()
    assert log.count('"txn"') == 2

    replay = lake.append(events_uri, make_events(30), txns=txns)
    assert replay.skipped and lake.read_arrow(events_uri).num_rows == 30

    # p0 is already past 100 while p1 is not: writing would duplicate p0's rows, so it is refused.
    with pytest.raises(InvalidStateError, match="stream:p0"):
        lake.append(
            events_uri, make_events(30, seed=9), txns=[lake.Txn("stream:p0", 100), lake.Txn("stream:p1", 260)]
        )
    assert lake.table_version(events_uri) == version
    assert lake.txn_version(events_uri, "stream:p1") == 250


def test_bad_input_is_rejected_and_nothing_is_written(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(10))
    version = lake.table_version(events_uri)

    with pytest.raises(InvalidInputError):
        lake.append(events_uri, pa.table({"tenant_id": [1, 2]}))
    with pytest.raises(InvalidInputError):
        lake.append(events_uri, [{"tenant_id": "x"}])
    with pytest.raises(InvalidInputError, match="once"):
        lake.append(events_uri, make_events(3), txns=[lake.Txn("a", 1), lake.Txn("a", 2)])
    with pytest.raises(InvalidInputError):
        lake.Txn("", 1)
    with pytest.raises(InvalidInputError):
        lake.Txn("app", -1)
    with pytest.raises(InvalidInputError, match="partition"):
        lake.append(events_uri, make_events(3), partition_by=["no_such_column"])
    with pytest.raises(InvalidInputError, match="no_such_column"):
        lake.read_arrow(events_uri, filters=[("no_such_column", "=", 1)])
    with pytest.raises(InvalidInputError, match="operator"):
        lake.read_arrow(events_uri, filters=[("tenant_id", "like", "x%")])

    assert lake.table_version(events_uri) == version
    assert lake.read_arrow(events_uri).num_rows == 10


def test_missing_table_raises_table_not_found_with_the_uri(events_uri: str) -> None:
    assert not lake.table_exists(events_uri)
    for read in (
        lambda: lake.read_arrow(events_uri),
        lambda: lake.read_polars(events_uri),
        lambda: lake.scan_polars(events_uri),
        lambda: lake.history(events_uri),
        lambda: lake.table_version(events_uri),
        lambda: lake.delete(events_uri, "tenant_id = 'x'"),
        lambda: lake.files_touched(events_uri, tenant_id="x"),
    ):
        with pytest.raises(TableNotFoundError) as caught:
            read()
        assert events_uri in caught.value.message and caught.value.details["uri"] == events_uri
        assert caught.value.status == 404


def test_read_an_older_version(events_uri: str, make_events: MakeEvents) -> None:
    first = lake.append(events_uri, make_events(10, seed=1))
    lake.append(events_uri, make_events(15, seed=2))
    assert lake.read_arrow(events_uri, version=first.version).num_rows == 10
    assert lake.read_polars(events_uri, version=first.version).height == 10
    assert lake.read_arrow(events_uri).num_rows == 25
    with pytest.raises(TableNotFoundError, match="version"):
        lake.read_arrow(events_uri, version=99)


def test_merge_inserts_new_keys_and_updates_matched_ones(events_uri: str, make_events: MakeEvents) -> None:
    base = make_events(20, seed=1)
    created = lake.merge(events_uri, base, keys=["tenant_id", "event_id"], partition_by=["event_date"])
    assert created.inserted == 20 and created.updated == 0

    changed = base.slice(0, 5).set_column(4, "amount", pa.array([-1.0] * 5))
    fresh = make_events(3, seed=2)
    result = lake.merge(events_uri, pa.concat_tables([changed, fresh]), keys=["tenant_id", "event_id"])

    assert (result.inserted, result.updated) == (3, 5)
    assert result.version == lake.table_version(events_uri)
    table = lake.read_arrow(events_uri)
    assert table.num_rows == 23
    updated_ids = set(changed.column("event_id").to_pylist())
    amounts = {r["event_id"]: r["amount"] for r in table.to_pylist()}
    assert all(amounts[i] == -1.0 for i in updated_ids)
    assert sum(v == -1.0 for v in amounts.values()) == 5


def test_merge_ignore_is_insert_only_dedup(events_uri: str, make_events: MakeEvents) -> None:
    keys = ["tenant_id", "event_id"]
    base = make_events(10, seed=1)
    lake.merge(events_uri, base, keys=keys, when_matched="ignore")

    # Replayed rows with different amounts, plus one new event that appears twice in the source.
    replay = base.set_column(4, "amount", pa.array([999.0] * 10))
    new = make_events(1, seed=5)
    result = lake.merge(events_uri, pa.concat_tables([replay, new, new]), keys=keys, when_matched="ignore")

    assert (result.inserted, result.updated) == (1, 0)
    table = lake.read_arrow(events_uri)
    assert table.num_rows == 11
    assert 999.0 not in table.column("amount").to_pylist()
    assert len(set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))) == 11


def test_merge_rejects_null_keys_and_writes_nothing(events_uri: str, make_events: MakeEvents) -> None:
    lake.merge(events_uri, make_events(5), keys=["event_id"])
    version = lake.table_version(events_uri)
    bad = make_events(2, seed=3).set_column(1, "event_id", pa.array([None, "x"], pa.string()))
    with pytest.raises(InvalidInputError, match="null"):
        lake.merge(events_uri, bad, keys=["event_id"])
    with pytest.raises(InvalidInputError):
        lake.merge(events_uri, make_events(2), keys=["missing_key"])
    with pytest.raises(InvalidInputError):
        lake.merge(events_uri, make_events(2), keys=["event_id"], when_matched="delete")  # type: ignore[arg-type]
    assert lake.table_version(events_uri) == version


def _files_by_partition(uri: str) -> dict[dt.date, set[str]]:
    actions = lake.add_actions(uri).to_pylist()
    out: dict[dt.date, set[str]] = {}
    for action in actions:
        out.setdefault(action["partition.event_date"], set()).add(action["path"])
    return out


def test_merge_scoped_to_partitions_rewrites_only_touched_partitions(
    events_uri: str, make_events: MakeEvents
) -> None:
    keys = ["tenant_id", "event_id"]
    for seed in range(2):
        lake.append(events_uri, make_events(60, seed=seed, days=(1, 2, 3)), partition_by=["event_date"])
    before = _files_by_partition(events_uri)
    total_files = sum(len(v) for v in before.values())

    existing = lake.read_arrow(events_uri, filters=[("event_date", "=", DAY2)]).slice(0, 4)
    source = existing.set_column(existing.schema.get_field_index("amount"), "amount", pa.array([0.5] * 4))
    result = lake.merge(events_uri, source, keys=keys, partition_by=["event_date"])

    assert result.updated == 4
    after = _files_by_partition(events_uri)
    assert after[DAY1] == before[DAY1] and after[DAY3] == before[DAY3]  # untouched partitions: same files
    assert after[DAY2] != before[DAY2]

    commit = lake.history(events_uri, limit=1)[0]
    metrics = commit["operationMetrics"]
    assert commit["operation"] == "MERGE"
    assert metrics["num_target_files_scanned"] <= len(before[DAY2])
    assert metrics["num_target_files_skipped_during_scan"] >= total_files - len(before[DAY2])
    assert 1 <= metrics["num_target_files_removed"] <= len(before[DAY2])
    assert "2024-01-02" in commit["operationParameters"]["mergePredicate"]

    # Without scoping the same merge has to scan every partition's files.
    unscoped = lake.merge(events_uri, source, keys=keys, scope_to_partitions=False)
    assert unscoped.metrics["num_target_files_scanned"] == sum(len(v) for v in after.values())


def test_merge_records_its_txn_even_when_nothing_changes(events_uri: str, make_events: MakeEvents) -> None:
    data = make_events(8)
    keys = ["tenant_id", "event_id"]
    lake.merge(events_uri, data, keys=keys, when_matched="ignore", txn=lake.Txn("dedupe", 1))
    again = lake.merge(events_uri, data, keys=keys, when_matched="ignore", txn=lake.Txn("dedupe", 2))
    assert (again.inserted, again.updated, again.skipped) == (0, 0, False)
    assert lake.txn_version(events_uri, "dedupe") == 2
    replay = lake.merge(events_uri, data, keys=keys, when_matched="ignore", txn=lake.Txn("dedupe", 2))
    assert replay.skipped
    assert lake.read_arrow(events_uri).num_rows == 8


def test_overwrite_whole_table_and_one_partition(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(30, days=(1, 2)), partition_by=["event_date"])
    day2_before = lake.read_arrow(events_uri, filters=[("event_date", "=", DAY2)]).num_rows

    replacement = make_events(4, seed=7, days=(1,))
    result = lake.overwrite(events_uri, replacement, predicate=[("event_date", "=", DAY1)])
    assert result.rows == 4
    assert lake.read_arrow(events_uri, filters=[("event_date", "=", DAY1)]).num_rows == 4
    assert lake.read_arrow(events_uri, filters=[("event_date", "=", DAY2)]).num_rows == day2_before

    # Rows outside the predicate are refused and nothing changes.
    version = lake.table_version(events_uri)
    with pytest.raises(InvalidInputError):
        lake.overwrite(events_uri, make_events(3, days=(3,)), predicate="event_date = DATE '2024-01-01'")
    assert lake.table_version(events_uri) == version

    lake.overwrite(events_uri, make_events(2, seed=8, days=(3,)))
    assert lake.read_arrow(events_uri).num_rows == 2


def test_delete_by_sql_or_filters_returns_rows_deleted(events_uri: str, make_events: MakeEvents) -> None:
    data = make_events(100, tenants=4)
    lake.append(events_uri, data)
    counts = pc.value_counts(data.column("tenant_id")).to_pylist()
    per_tenant = {c["values"]: c["counts"] for c in counts}

    assert lake.delete(events_uri, "tenant_id = 'tenant_000'") == per_tenant["tenant_000"]
    assert lake.delete(events_uri, [("tenant_id", "in", ["tenant_001", "tenant_002"])]) == (
        per_tenant["tenant_001"] + per_tenant["tenant_002"]
    )
    assert lake.delete(events_uri, [("tenant_id", "=", "nobody")]) == 0
    assert set(lake.read_arrow(events_uri).column("tenant_id").to_pylist()) == {"tenant_003"}

    with pytest.raises(InvalidInputError):
        lake.delete(events_uri, "no_such_column = 1")
    with pytest.raises(InvalidInputError):
        lake.delete(events_uri, "")


def test_history_lists_operations_metrics_and_custom_metadata(
    events_uri: str, make_events: MakeEvents
) -> None:
    lake.append(events_uri, make_events(10), metadata={"run_id": "run-42", "actor": "ingestor"})
    lake.merge(events_uri, make_events(3, seed=1), keys=["event_id"], metadata={"run_id": "run-43"})
    assert lake.delete(events_uri, "amount >= 0", metadata={"run_id": "run-44"}) == 13
    lake.overwrite(events_uri, make_events(2), metadata={"run_id": "run-45"})

    entries = lake.history(events_uri)
    assert [e["version"] for e in entries] == sorted((e["version"] for e in entries), reverse=True)
    operations = [e["operation"] for e in entries]
    assert operations[-1] == "CREATE TABLE"
    assert {"WRITE", "MERGE"} <= set(operations)
    by_run = {e["userMetadata"].get("run_id"): e for e in entries}
    assert by_run["run-42"]["userMetadata"] == {"run_id": "run-42", "actor": "ingestor"}
    assert by_run["run-42"]["operationMetrics"]["num_added_rows"] == 10
    assert by_run["run-43"]["operation"] == "MERGE"
    # a delete is one replace-where without rows: a WRITE with its predicate, named a delete in its metadata
    assert by_run["run-44"]["operation"] == "WRITE"
    assert by_run["run-44"]["operationParameters"]["predicate"]
    assert by_run["run-44"]["userMetadata"] == {"shironzi.operation": "delete", "run_id": "run-44"}
    assert by_run["run-45"]["operationParameters"]["mode"] == "Overwrite"
    newest = entries[0]
    assert isinstance(newest["timestamp"], dt.datetime) and newest["timestamp"].tzinfo is not None
    assert newest["engineInfo"].startswith("delta-rs") or newest["clientVersion"].startswith("delta-rs")
    assert len(lake.history(events_uri, limit=2)) == 2


def test_filters_render_as_sql_literals() -> None:
    sql = lake.filters_to_sql(
        [("tenant_id", "=", "o'brien"), ("event_date", "in", [DAY1, DAY2]), ("x", "=", None)]
    )
    assert sql == (
        "(\"tenant_id\" = 'o''brien' AND \"event_date\" IN (DATE '2024-01-01', DATE '2024-01-02')"
        ' AND "x" IS NULL)'
    )


_LONG_PREDICATE_SCRIPT = """
import datetime as dt, sys
import pyarrow as pa
from shironzi import lake
uri, values = sys.argv[1], int(sys.argv[2])
ids = [f"tenant-{n:08d}" for n in range(values)]
day = dt.date(2024, 1, 1)
rows = pa.table({"tenant_id": ids[:100], "day": pa.array([day] * 100, pa.date32()), "n": list(range(100))})
lake.append(uri, rows, partition_by="day")
slice_ = [("day", "=", day), ("tenant_id", "in", ids)]
print(lake.overwrite(uri, rows.slice(0, 60), partition_by="day", predicate=slice_).rows)
print(lake.delete(uri, slice_[1:]))
"""


def test_a_predicate_listing_30000_tenants_overwrites_and_deletes(tmp_path: Path) -> None:
    """A scoring chunk of 25,000 tenants replaced its slice with one IN list; delta-rs parses it recursively on the
    calling thread, overflowed the 8 MiB main-thread stack and killed the process (SIGSEGV). Long predicates now run
    on a thread whose stack fits them. In a child process: a regression must fail this test, not the whole suite."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _LONG_PREDICATE_SCRIPT, str(tmp_path / "t"), "30000"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["60", "60"]


def test_short_predicates_stay_on_the_callers_thread(events_uri: str, make_events: MakeEvents,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from shironzi.lake import writes

    lake.append(events_uri, make_events(50, days=(1,), tenants=3))
    started: list[str] = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name) or real_start(self))
    assert lake.delete(events_uri, [("tenant_id", "in", ["tenant_001", *(f"x{n}" for n in range(4_000))])]) > 0
    assert "delta-long-predicate" not in started
    monkeypatch.setattr(writes, "LONG_PREDICATE_VALUES", 10)
    assert lake.delete(events_uri, [("tenant_id", "in", ["tenant_002", *(f"x{n}" for n in range(20))])]) > 0
    assert "delta-long-predicate" in started
