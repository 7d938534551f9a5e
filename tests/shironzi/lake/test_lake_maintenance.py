"""Optimize (z-order), vacuum, checkpoint and the maintenance run on real Delta tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from shironzi import lake
from shironzi.errors import InvalidInputError, TableNotFoundError
from tests.shironzi.lake._fixtures import MakeEvents


class _StageLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fields: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.fields.append(dict(getattr(record, "fields", {})))


@pytest.fixture
def stage_lines() -> list[dict]:
    handler = _StageLines()
    stage_logger = logging.getLogger("shironzi.stage")
    previous = stage_logger.level
    stage_logger.addHandler(handler)
    stage_logger.setLevel(logging.INFO)
    yield handler.fields
    stage_logger.removeHandler(handler)
    stage_logger.setLevel(previous)


def _many_small_appends(uri: str, make_events: MakeEvents, commits: int = 12, rows: int = 150) -> pa.Table:
    batches = [make_events(rows, tenants=20, seed=seed) for seed in range(commits)]
    for batch in batches:
        lake.append(uri, batch)
    return pa.concat_tables(batches)


def test_optimize_zorders_by_tenant_with_fewer_files_and_better_skipping(
    events_uri: str, make_events: MakeEvents, stage_lines: list[dict]
) -> None:
    data = _many_small_appends(events_uri, make_events, rows=400)
    files_before, total_before = lake.files_touched(events_uri, tenant_id="tenant_005")
    assert files_before == total_before == 12  # every small file spans every tenant

    result = lake.optimize(events_uri, target_size=8 * 1024)

    assert result["zorder_by"] == ["tenant_id"] and result["files_removed"] == 12
    touched, total = lake.files_touched(events_uri, tenant_id="tenant_005")
    assert total == result["files_added"] and 1 < total < 12
    assert touched < total / 2  # z-ordered files cover narrow tenant ranges
    assert lake.history(events_uri, limit=1)[0]["operation"] == "OPTIMIZE"
    got = lake.read_arrow(events_uri)
    assert sorted(got.column("event_id").to_pylist()) == sorted(data.column("event_id").to_pylist())
    assert [f for f in stage_lines if f["stage"] == "lake.optimize"][0]["files_removed"] == 12


def test_compact_bin_packs_without_zorder(events_uri: str, make_events: MakeEvents) -> None:
    _many_small_appends(events_uri, make_events, commits=5)
    result = lake.compact(events_uri)
    assert result["zorder_by"] == [] and result["files_removed"] == 5 and result["files_added"] == 1
    assert lake.files_touched(events_uri) == (1, 1)


def test_optimize_rejects_unknown_or_partition_columns(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(10, days=(1, 2)), partition_by=["event_date"])
    with pytest.raises(InvalidInputError, match="nope"):
        lake.optimize(events_uri, zorder_by=["nope"])
    with pytest.raises(InvalidInputError, match="partition"):
        lake.optimize(events_uri, zorder_by=["event_date"])
    with pytest.raises(TableNotFoundError):
        lake.optimize(events_uri + "_missing")


def test_optimize_falls_back_to_compaction_without_tenant_column(lake_root: str) -> None:
    uri = f"{lake_root}/_platform/runs"
    for i in range(3):
        lake.append(uri, pa.table({"run_id": [f"r{i}"], "rows": [i]}))
    result = lake.optimize(uri)
    assert result["zorder_by"] == [] and result["files_removed"] == 3


def test_vacuum_removes_tombstoned_files_only(events_uri: str, make_events: MakeEvents) -> None:
    data = _many_small_appends(events_uri, make_events, commits=4)
    old_files = {Path(p).name for p in DeltaTable(events_uri).file_uris()}
    lake.compact(events_uri)
    live = {Path(p).name for p in DeltaTable(events_uri).file_uris()}

    # The default 7-day retention keeps fresh tombstones (readers of old versions need them).
    assert lake.vacuum(events_uri) == []
    with pytest.raises(InvalidInputError, match="retention"):
        lake.vacuum(events_uri, retention_hours=0)

    planned = lake.vacuum(events_uri, retention_hours=0, dry_run=True, enforce_retention_duration=False)
    assert {Path(p).name for p in planned} == old_files
    assert all((Path(events_uri) / p).exists() for p in planned)

    removed = lake.vacuum(events_uri, retention_hours=0, enforce_retention_duration=False)
    assert {Path(p).name for p in removed} == old_files
    on_disk = {p.name for p in Path(events_uri).rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == live
    assert lake.read_arrow(events_uri).num_rows == data.num_rows


def test_checkpoint_writes_a_checkpoint_file(events_uri: str, make_events: MakeEvents) -> None:
    for seed in range(3):
        lake.append(events_uri, make_events(5, seed=seed))
    version = lake.checkpoint(events_uri)
    log = Path(events_uri) / "_delta_log"
    assert version == lake.table_version(events_uri)
    assert (log / f"{version:020d}.checkpoint.parquet").exists()
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == version
    assert lake.cleanup_metadata(events_uri) == version  # nothing is old enough to expire
    assert lake.read_arrow(events_uri).num_rows == 15


def test_run_maintenance_optimizes_checkpoints_and_vacuums(
    events_uri: str, make_events: MakeEvents, stage_lines: list[dict]
) -> None:
    _many_small_appends(events_uri, make_events, commits=6)
    summary = lake.run_maintenance(events_uri, retention_hours=0, enforce_retention_duration=False)

    assert summary["optimize"]["files_removed"] == 6
    assert summary["vacuumed_files"] == 6
    assert summary["version"] == lake.table_version(events_uri)  # vacuum logs its own commits
    assert summary["optimize"]["version"] == summary["checkpoint_version"]
    checkpoint = Path(events_uri) / "_delta_log" / f"{summary['checkpoint_version']:020d}.checkpoint.parquet"
    assert checkpoint.exists()
    stages = [f["stage"] for f in stage_lines]
    assert stages == ["lake.optimize", "lake.checkpoint", "lake.vacuum", "lake.maintenance"]
    assert stage_lines[-1]["table_version"] == summary["version"]
