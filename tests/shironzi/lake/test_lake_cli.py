"""`shironzi lake ...` against real tables: in-process through typer's runner, and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shironzi import lake
from shironzi.cli.lake import app as lake_app
from tests.shironzi.lake._fixtures import MakeEvents

runner = CliRunner()


def _cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(lake_app, name="lake")
    return root


@pytest.fixture
def table(events_uri: str, make_events: MakeEvents) -> str:
    lake.append(
        events_uri, make_events(40, days=(1, 2)), partition_by=["event_date"], metadata={"run_id": "cli-1"}
    )
    lake.append(events_uri, make_events(10, seed=1, days=(2,)))
    return events_uri


def test_history_as_table_and_json(table: str) -> None:
    human = runner.invoke(_cli(), ["lake", "history", table])
    assert human.exit_code == 0, human.output
    assert "WRITE" in human.output and "CREATE TABLE" in human.output and "cli-1" in human.output

    result = runner.invoke(_cli(), ["lake", "history", table, "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["version"] for e in entries] == [2, 1]
    assert entries[1]["userMetadata"] == {"run_id": "cli-1"}


def test_files_counts_files_rows_and_bytes(table: str) -> None:
    result = runner.invoke(_cli(), ["lake", "files", table, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    actions = lake.add_actions(table).to_pylist()
    assert summary["files"] == len(actions) == 3
    assert summary["rows"] == 50
    assert summary["bytes"] == sum(a["size_bytes"] for a in actions)
    assert summary["partitions"]["event_date=2024-01-02"]["files"] == 2

    human = runner.invoke(_cli(), ["lake", "files", table])
    assert human.exit_code == 0 and "event_date=2024-01-01" in human.output and "total" in human.output


def test_optimize_checkpoint_and_vacuum_commands(table: str) -> None:
    optimized = runner.invoke(_cli(), ["lake", "optimize", table, "--compact", "--json"])
    assert optimized.exit_code == 0, optimized.output
    report = json.loads(optimized.stdout)
    assert report["files_removed"] == 2 and report["zorder_by"] == []  # 2024-01-02's two files became one

    checkpointed = runner.invoke(_cli(), ["lake", "checkpoint", table])
    assert checkpointed.exit_code == 0, checkpointed.output
    version = lake.table_version(table)
    assert f"version {version}" in checkpointed.output
    assert (Path(table) / "_delta_log" / f"{version:020d}.checkpoint.parquet").exists()

    dry = runner.invoke(
        _cli(), ["lake", "vacuum", table, "--retention-hours", "0", "--dry-run", "--force", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["count"] == 2 and planned["dry_run"] is True
    assert all((Path(table) / f).exists() for f in planned["files"])

    vacuumed = runner.invoke(_cli(), ["lake", "vacuum", table, "--retention-hours", "0", "--force"])
    assert vacuumed.exit_code == 0 and "removed 2 files" in vacuumed.output
    assert not any((Path(table) / f).exists() for f in planned["files"])


def test_errors_are_shironzi_errors(events_uri: str) -> None:
    result = runner.invoke(_cli(), ["lake", "history", events_uri])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "TableNotFoundError"


@pytest.mark.slow
def test_the_installed_console_script(table: str) -> None:
    script = Path(sys.executable).parent / "shironzi"
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    ok = subprocess.run(
        [str(script), "lake", "files", table, "--json"], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows"] == 50

    missing = subprocess.run(
        [str(script), "lake", "history", table + "-missing"], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: table_not_found: no Delta table at {table}-missing"
