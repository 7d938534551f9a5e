"""The dbt plugin's Arrow datasets read the lake through Arrow's own filesystems, never delta-rs's Python one.

DuckDB starts a scan of a registered dataset holding the GIL; with delta-rs's default filesystem (a Python
`PyFileSystem`) Arrow's I/O threads need the GIL for every file they open, and a scan's merge lock held by one
of them while it waits for the GIL deadlocked two fresh-clone CI runs (idle, no CPU, until the job was killed).
The deadlock is a rare interleaving, so these tests check the cause: which filesystem the datasets use, on the
local lake and on an S3-protocol server, and that DuckDB reads them right."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable, write_deltalake

from tests._services import S3Server
from transformations.dbt_runner import PLUGINS_DIR

pytestmark = [pytest.mark.integration]


@pytest.fixture()
def plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(PLUGINS_DIR))
    return importlib.import_module("shironzi_delta")


def _write(uri: str, options: dict[str, str] | None) -> None:
    for day in range(6):  # six commits over three partitions: a dataset of several files
        rows = pa.table({"tenant_id": [f"t{i % 4}" for i in range(50)], "customer_id": [f"c{i}" for i in range(50)],
                         "day": pa.array([day % 3] * 50, pa.int32())})
        write_deltalake(uri, rows, mode="append", partition_by=["day"], storage_options=options)


def _check(plugin: Any, uri: str, options: dict[str, str], native: type) -> None:
    table = DeltaTable(uri, storage_options=options or None)
    dataset = plugin._dataset(table, uri, options)
    assert isinstance(dataset.filesystem, pafs.SubTreeFileSystem)
    assert isinstance(dataset.filesystem.base_fs, native) and not isinstance(dataset.filesystem.base_fs,
                                                                              pafs.PyFileSystem)
    con = duckdb.connect()
    con.execute("SET threads = 4")
    con.register("v", dataset)
    # three scans of the one view in one query, as the data tests and fct_churn_labels make
    got = con.execute("select (select count(*) from v), (select count(distinct tenant_id) from v where day = 1), "
                      "(select count(*) from v a join v b using (tenant_id, customer_id, day))").fetchone()
    assert got == (300, 4, 600)  # each (tenant, customer, day) is in two commits: 2 x 2 joined rows per pair


def test_local_tables_are_read_through_arrows_local_filesystem(plugin: Any, tmp_path: Path) -> None:
    uri = str(tmp_path / "lake" / "t")
    _write(uri, None)
    _check(plugin, uri, {}, pafs.LocalFileSystem)
    relative = Path(plugin._native_filesystem(uri, {}).base_path)
    assert relative.is_absolute() and relative == Path(uri).resolve()


def test_s3_tables_are_read_through_arrows_s3_filesystem(plugin: Any, s3: S3Server) -> None:
    uri = s3.create_bucket("plugin-fs") + "/lake/t"
    _write(uri, s3.storage_options())
    _check(plugin, uri, s3.storage_options(), pafs.S3FileSystem)
