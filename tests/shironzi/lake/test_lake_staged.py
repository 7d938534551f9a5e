"""Staged writes (files first, one commit later) on a local lake and on an S3-protocol server, and safe
concurrent commits on S3 without unsafe renames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shironzi import lake
from shironzi.errors import InvalidInputError
from tests._services import S3Server
from tests.shironzi.lake._fixtures import MakeEvents


def test_staged_files_are_invisible_until_committed_once_under_their_txn(
    events_uri: str, make_events: MakeEvents
) -> None:
    lake.append(events_uri, make_events(10, seed=1, days=(1,)), partition_by="event_date")
    staged = lake.stage_files(events_uri, make_events(30, seed=2, days=(1, 2, 3)), partition_by="event_date")
    assert len(staged.actions) == 3 and staged.rows == 30
    before = lake.table_version(events_uri)
    assert lake.read_arrow(events_uri).num_rows == 10
    committed = lake.commit_staged(staged, txn=lake.Txn("stream-p0", 7), metadata={"stage": "test"})
    assert (committed.version, committed.rows, committed.skipped) == (before + 1, 30, False)
    assert lake.read_arrow(events_uri).num_rows == 40
    assert lake.txn_version(events_uri, "stream-p0") == 7
    again = lake.commit_staged(staged, txn=lake.Txn("stream-p0", 7))
    assert again.skipped and lake.read_arrow(events_uri).num_rows == 40
    assert lake.table_version(events_uri) == before + 1
    # Partition values and per-file statistics let a pushed-down read skip files.
    day = make_events(1, days=(2,))["event_date"][0].as_py()
    assert lake.files_touched(events_uri, filters=[("amount", ">", 1000.0)])[0] == 0  # min/max stats
    day_rows = lake.read_arrow(events_uri, filters=[("event_date", "=", day)])
    assert set(day_rows.column("event_date").to_pylist()) == {day}


def test_commit_of_files_staged_for_another_layout_is_refused(events_uri: str, make_events: MakeEvents) -> None:
    lake.append(events_uri, make_events(5, seed=1), partition_by="event_date")
    staged = lake.stage_files(events_uri, make_events(5, seed=2))
    with pytest.raises(InvalidInputError, match="partitioned by"):
        lake.commit_staged(staged)
    other_types = make_events(5, seed=3).set_column(4, "amount", pa.array(["1.5"] * 5))
    staged = lake.stage_files(events_uri, other_types, partition_by="event_date")
    with pytest.raises(InvalidInputError, match="amount is string, not double"):
        lake.commit_staged(staged)
    assert lake.read_arrow(events_uri).num_rows == 5


@pytest.mark.integration
def test_staged_commit_on_s3_creates_the_table_and_records_the_txn(s3: S3Server, make_events: MakeEvents) -> None:
    uri = s3.create_bucket(f"lake-{uuid.uuid4().hex[:8]}") + "/eu-west/bronze/events"
    options = s3.storage_options()
    staged = lake.stage_files(uri, make_events(20, seed=3, days=(1, 2)), partition_by="event_date",
                              storage_options=options)
    assert not lake.table_exists(uri, storage_options=options)  # files written, nothing committed
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=uri[5:].split("/")[0]).get("Contents", [])]
    assert len([k for k in keys if k.endswith(".parquet")]) == 2
    result = lake.commit_staged(staged, txns=[lake.Txn("p0", 3), lake.Txn("p1", 9)], storage_options=options)
    assert result.rows == 20 and lake.read_arrow(uri, storage_options=options).num_rows == 20
    assert lake.txn_version(uri, "p1", storage_options=options) == 9


_WRITER = """
import sys
import time
import pyarrow as pa
from shironzi import lake
uri, writer, commits, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # both writers begin together
for n in range(commits):
    rows = pa.table({"writer": [writer] * 3, "n": [n] * 3, "part": [n % 2] * 3})
    staged = lake.stage_files(uri, rows, partition_by="part")
    lake.commit_staged(staged, txn=lake.Txn(f"writer-{writer}", n))
"""


@pytest.mark.integration
def test_two_processes_committing_to_one_s3_table_lose_no_commit(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writer processes commit N times each to the same S3 table at once. delta-rs puts each log entry
    with a conditional put (If-None-Match), so a lost race is retried, never overwritten: no unsafe rename."""
    import time

    commits = 10
    options = s3.storage_options()
    assert not any("UNSAFE" in key.upper() for key in options)
    uri = s3.create_bucket(f"race-{uuid.uuid4().hex[:8]}") + "/t"
    lake.append(uri, pa.table({"writer": [0], "n": [0], "part": [0]}), partition_by="part",
                storage_options=options)
    env = {**os.environ, "SHIRONZI_STORAGE_OPTIONS": json.dumps(options), "PYTHONPATH": os.getcwd()}
    start = time.time() + 4.0
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, uri, str(w), str(commits), str(start)], env=env,
                         stderr=subprocess.PIPE)
        for w in (1, 2)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
    table = lake.read_arrow(uri, storage_options=options)
    assert table.num_rows == 1 + 2 * commits * 3
    first = lake.history(uri, storage_options=options)[-1]["version"]
    assert lake.table_version(uri, storage_options=options) == 1 + 2 * commits  # create, first append, 2N
    assert len(lake.history(uri, storage_options=options)) == 2 + 2 * commits and first == 0
    for writer in (1, 2):
        assert lake.txn_version(uri, f"writer-{writer}", storage_options=options) == commits - 1
        mine = table.filter(pc.equal(table.column("writer"), writer))
        assert sorted(set(mine.column("n").to_pylist())) == list(range(commits))


def test_no_deployment_file_turns_off_safe_s3_commits() -> None:
    """docker-compose.yml, deploy/ and the docs never set the unsafe-rename switch of delta-rs."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    switch = re.compile(r"ALLOW_UNSAFE_RENAME\W{0,3}\s*[:=]", re.IGNORECASE)
    files = [root / "docker-compose.yml", *root.glob("deploy/**/*.y*ml"), *root.glob("docs/**/*.md"),
             root / "README.md"]
    offenders = [str(f.relative_to(root)) for f in files if f.is_file() and switch.search(f.read_text())]
    assert offenders == []
