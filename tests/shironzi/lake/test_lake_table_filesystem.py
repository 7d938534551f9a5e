"""Lake reads go through Arrow's own filesystem for local and S3 tables (`table_filesystem`), never delta-rs's
Python one (a GIL deadlock under DuckDB scans, and aborts at interpreter exit); other stores keep delta-rs's
handler, which carries their storage options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import write_deltalake

from shironzi.lake import reads
from shironzi.lake.discovery import table_filesystem
from tests._services import S3Server


def test_local_tables_get_arrows_local_filesystem_rooted_at_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    filesystem = table_filesystem("lake/t")
    assert isinstance(filesystem, pafs.SubTreeFileSystem) and isinstance(filesystem.base_fs, pafs.LocalFileSystem)
    assert filesystem.base_path.rstrip("/") == str((tmp_path / "lake" / "t").resolve())
    assert table_filesystem(f"file://{tmp_path}/t").base_path.rstrip("/") == str(tmp_path / "t")


@pytest.mark.parametrize("uri", ["gs://bucket/lake/t", "az://container/lake/t", "abfss://c@account.dfs/lake/t"])
def test_other_stores_keep_delta_rs_handler(uri: str) -> None:
    assert table_filesystem(uri, storage_options={"google_service_account": "only-here"}) is None


@pytest.mark.integration
def test_read_arrow_on_s3_reads_through_arrows_s3_filesystem(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = s3.create_bucket("reads-fs") + "/lake/t"
    options = s3.storage_options()
    for day in range(3):
        write_deltalake(uri, pa.table({"tenant_id": ["a", "b"], "day": pa.array([day, day], pa.int32())}),
                        mode="append", partition_by=["day"], storage_options=options)
    used: list[Any] = []

    def spy(location: str, *, storage_options: Any = None) -> Any:
        used.append(table_filesystem(location, storage_options=storage_options))
        return used[-1]

    monkeypatch.setattr(reads, "table_filesystem", spy)
    got = reads.read_arrow(uri, storage_options=options, tenant_id="b")
    assert sorted(got.column("day").to_pylist()) == [0, 1, 2] and set(got.column("tenant_id").to_pylist()) == {"b"}
    assert isinstance(used[0], pafs.SubTreeFileSystem) and isinstance(used[0].base_fs, pafs.S3FileSystem)
