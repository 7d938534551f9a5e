"""Table leases across hosts: a writer's uncommitted files survive a vacuum run on another host.

Two processes act as two hosts (each with its own SHIRONZI_HOME, one lake, one registry database): the
child writes its Parquet file and pauses before committing it, holding the shared lease; the test process
then runs a zero-retention vacuum (what erasure does), which must wait for the exclusive lease.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.errors import InvalidStateError, LeaseBusyError
from shironzi.lake.delta import append, delete, merge, open_table, overwrite, read_arrow, table_version
from shironzi.lake.discovery import list_parquet_files
from shironzi.lake.leases import lease_key, table_lease
from shironzi.lake.maintenance import optimize, vacuum
from shironzi.settings import get_settings
from tests.shironzi.lake._fixtures import lease_held_elsewhere

REPO = Path(__file__).resolve().parents[3]


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the writer exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _use(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_vacuum_never_removes_files_a_writer_on_another_process_has_not_committed(
    backend: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    lake = tmp_path / "shared-lake"
    if backend == "postgresql":  # two hosts: their own homes, one PostgreSQL registry
        database_url = request.getfixturevalue("pg_database_url")
        writer_home, eraser_home = tmp_path / "host-a", tmp_path / "host-b"
    else:  # one host: one home, the embedded SQLite registry
        database_url = f"sqlite:///{home / 'registry.db'}"
        writer_home = eraser_home = home
    _use(monkeypatch, SHIRONZI_HOME=str(eraser_home), SHIRONZI_LAKE_URI=str(lake),
         SHIRONZI_DATABASE_URL=database_url, SHIRONZI_LEASE_TIMEOUT_SECONDS="0.5")
    table = f"{lake}/eu-west/bronze/events"
    append(table, pa.table({"tenant_id": ["tenant_a"] * 5, "event_id": [f"seed-{i}" for i in range(5)]}))

    flags = tmp_path / "flags"
    flags.mkdir()
    env = {**os.environ, "SHIRONZI_HOME": str(writer_home), "PYTHONPATH": str(REPO)}
    code = (f"from tests.shironzi.lake._fixtures import run_paused_writer; "
            f"run_paused_writer({table!r}, {str(flags)!r}, 3)")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        _wait_for(flags / "written", writer)
        committed = {u.removeprefix("file://") for u in open_table(table).file_uris()}
        pending = set(list_parquet_files(table)) - committed
        assert len(pending) == 1, pending  # the writer's file, on storage, in no commit yet

        with pytest.raises(LeaseBusyError, match="exclusive lease of table eu-west/bronze/events"):
            vacuum(table, retention_hours=0, enforce_retention_duration=False)
        assert pending <= set(list_parquet_files(table))

        _use(monkeypatch, SHIRONZI_LEASE_TIMEOUT_SECONDS="60")
        removed: list[list[str]] = []
        waiting = threading.Thread(
            target=lambda: removed.append(vacuum(table, retention_hours=0, enforce_retention_duration=False))
        )
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and not removed  # the vacuum waits for the writer's commit
        (flags / "commit").touch()
        waiting.join(60)
        assert writer.wait(60) == 0, writer.stderr.read().decode() if writer.stderr else ""
    finally:
        (flags / "commit").touch()
        if writer.poll() is None:
            writer.kill()
    assert (flags / "committed").exists() and removed == [[]]
    rows = read_arrow(table)
    assert rows.num_rows == 8
    assert sorted(rows.column("event_id").to_pylist())[:3] == ["paused-0", "paused-1", "paused-2"]


def test_lease_keys_are_lake_relative(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, SHIRONZI_LAKE_URI=str(tmp_path / "mount-a"))
    here = lease_key(f"{tmp_path}/mount-a/eu-west/bronze/events/")
    _use(monkeypatch, SHIRONZI_LAKE_URI="s3://bucket/lake")
    assert lease_key("s3://bucket/lake/eu-west/bronze/events") == here  # same table, another host's address
    assert lease_key("s3://bucket/lake/eu-west/bronze/quarantine") != here


def test_a_shared_lease_holder_cannot_upgrade_to_exclusive(home: Path) -> None:
    with (
        table_lease("/lake/t"),
        pytest.raises(InvalidStateError, match="exclusive"),
        table_lease("/lake/t", mode="exclusive", timeout=0.1),
    ):
        pass


ROWS = pa.table({"tenant_id": ["tenant_a", "tenant_b"], "event_id": ["w-1", "w-2"]})
KERNEL_WRITES: dict[str, Callable[[str], object]] = {
    "append": lambda uri: append(uri, ROWS),
    "overwrite": lambda uri: overwrite(uri, ROWS),
    "merge": lambda uri: merge(uri, ROWS, keys=["event_id"]),
    "delete": lambda uri: delete(uri, "tenant_id = 'tenant_a'"),
    "optimize": lambda uri: optimize(uri),
}


@pytest.mark.parametrize("write", sorted(KERNEL_WRITES))
def test_every_kernel_write_takes_the_shared_lease(write: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, SHIRONZI_LEASE_TIMEOUT_SECONDS="0.3")
    uri = f"{get_settings().resolved_lake_uri}/eu-west/bronze/events"
    seeded = append(uri, pa.table({"tenant_id": ["tenant_a"], "event_id": ["seed"]})).version
    with lease_held_elsewhere(uri, "exclusive"):
        with pytest.raises(LeaseBusyError, match="shared lease of table eu-west/bronze/events"):
            KERNEL_WRITES[write](uri)
        assert table_version(uri) == seeded
    KERNEL_WRITES[write](uri)  # once the exclusive holder is gone, the write goes through
    with lease_held_elsewhere(uri, "shared"):
        KERNEL_WRITES[write](uri)  # writers share the lease
        append(uri, ROWS, lease=False)  # a caller that holds the lease itself opts out


def test_vacuum_takes_the_exclusive_lease(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, SHIRONZI_LEASE_TIMEOUT_SECONDS="0.3")
    uri = f"{get_settings().resolved_lake_uri}/eu-west/bronze/events"
    append(uri, ROWS)
    with lease_held_elsewhere(uri, "shared"), pytest.raises(LeaseBusyError, match="exclusive lease"):
        vacuum(uri, retention_hours=0, enforce_retention_duration=False)


@pytest.mark.integration
def test_a_lease_dies_with_its_holders_session(
    home: Path, pg_database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL releases a crashed holder's lease; the holder finds out when it releases, and says so."""
    import sqlalchemy as sa

    _use(monkeypatch, SHIRONZI_DATABASE_URL=pg_database_url, SHIRONZI_LEASE_TIMEOUT_SECONDS="2")
    uri = f"{get_settings().resolved_lake_uri}/eu-west/bronze/events"
    admin = sa.create_engine(pg_database_url)
    try:
        with table_lease(uri):
            with admin.connect() as conn:  # the holder's session is killed (its host crashed, say)
                pids = conn.execute(sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'")).scalars().all()
                assert len(pids) == 1
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
            with lease_held_elsewhere(uri, "exclusive"):  # nobody holds it any more
                pass
    finally:
        admin.dispose()
    assert "shared lease of eu-west/bronze/events was lost" in caplog.text
