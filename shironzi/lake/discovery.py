"""Find every Delta table under the lake (by its `_delta_log` directory) and list, read and delete its files
directly, on the local filesystem or an object store reached with `SHIRONZI_STORAGE_OPTIONS`.

Object-store paths go through an Arrow filesystem built from the same delta-rs `storage_options` the lake
writers use (`lake_filesystem`): S3 and S3-compatible stores (endpoint, region, credentials, plain HTTP),
with other schemes left to Arrow's own resolution from the URI and the environment.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shironzi.errors import ConfigurationError
from shironzi.lake.paths import LAYERS
from shironzi.settings import get_settings

if TYPE_CHECKING:
    import pyarrow.fs as pafs


@dataclass(frozen=True)
class LakeTable:
    """One discovered Delta table and where it sits in the lake layout."""

    uri: str
    relative: str
    region: str | None
    layer: str | None
    name: str
    tenant_id: str | None  # set for a dedicated tenant's table
    platform: bool  # under `_platform/` (audit, the PII table, manifests)

    @property
    def is_audit(self) -> bool:
        return self.platform and self.relative.startswith("_platform/audit/")


def _classify(root: str, relative: str) -> LakeTable:
    parts = relative.split("/")
    uri = f"{root}/{relative}"
    if parts[0] == "_platform":
        return LakeTable(uri, relative, None, parts[1] if len(parts) > 1 else None, parts[-1], None, True)
    if len(parts) == 5 and parts[1] == "tenants" and parts[3] in LAYERS:
        return LakeTable(uri, relative, parts[0], parts[3], parts[4], parts[2], False)
    if len(parts) == 3 and parts[1] in LAYERS:
        return LakeTable(uri, relative, parts[0], parts[1], parts[2], None, False)
    return LakeTable(uri, relative, parts[0] if len(parts) > 1 else None, None, parts[-1], None, False)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _option(options: Mapping[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in options.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, ""):
            return value
    return None


@functools.lru_cache(maxsize=8)
def _s3_filesystem(options: tuple[tuple[str, str], ...]) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    opts = dict(options)
    kwargs: dict[str, Any] = {
        "access_key": _option(opts, "aws_access_key_id", "access_key_id"),
        "secret_key": _option(opts, "aws_secret_access_key", "secret_access_key"),
        "session_token": _option(opts, "aws_session_token", "session_token", "aws_token", "token"),
        "region": _option(opts, "aws_region", "region", "aws_default_region"),
    }
    endpoint = _option(opts, "aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs["endpoint_override"], kwargs["scheme"] = (host, scheme) if host else (endpoint, "https")
    if (_option(opts, "aws_virtual_hosted_style_request", "virtual_hosted_style_request") or "").lower() == "true":
        kwargs["force_virtual_addressing"] = True
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def lake_filesystem(
    uri: str, *, storage_options: Mapping[str, str] | None = None
) -> tuple[pafs.FileSystem, str]:
    """An Arrow filesystem for `uri` and the path within it: local files, or the object store configured
    by `storage_options` (default: `SHIRONZI_STORAGE_OPTIONS`)."""
    import pyarrow.fs as pafs

    if is_local(uri):
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    options = get_settings().storage_options if storage_options is None else storage_options
    scheme, _, path = uri.partition("://")
    if scheme in ("s3", "s3a"):
        return _s3_filesystem(tuple(sorted(options.items()))), path.rstrip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot list {scheme}:// lake files: {exc}") from exc


def table_filesystem(uri: str, *, storage_options: Mapping[str, str] | None = None) -> pafs.FileSystem | None:
    """Arrow's own filesystem rooted at the table at `uri`, for `DeltaTable.to_pyarrow_dataset(filesystem=...)`;
    None for other stores (GCS, Azure: their credentials may be only in the storage options, which Arrow's
    resolution from the URI would not see), which delta-rs's own handler then reads.

    delta-rs's default is a filesystem written in Python (`PyFileSystem(DeltaStorageHandler)`), and two things go
    wrong with it. Arrow's I/O threads need the GIL for every file they open. DuckDB starts a scan of a registered
    dataset while holding the GIL, and pyarrow's `to_reader` waits on the scan's merge lock without releasing it;
    an I/O thread that holds that lock and waits for the GIL deadlocks the scan for good (dbt builds, seen in CI).
    And the handler sits in a reference cycle: if the cycle is still alive at interpreter exit, Arrow's I/O
    threads abort the process. A native filesystem has neither problem. (A dbt build on a GCS or Azure lake still
    reads through delta-rs's handler, so the deadlock stays possible there.)"""
    import pyarrow.fs as pafs

    if not is_local(uri) and uri.split("://", 1)[0] not in ("s3", "s3a"):
        return None
    try:
        filesystem, path = lake_filesystem(uri, storage_options=storage_options)
    except Exception:  # noqa: BLE001 - no native filesystem for this store
        return None
    if isinstance(filesystem, pafs.LocalFileSystem):
        path = str(Path(path).resolve())
    return pafs.SubTreeFileSystem(path, filesystem)


def _scheme_prefix(uri: str) -> str:
    return "" if is_local(uri) else uri.split("://", 1)[0] + "://"


def _infos(uri: str, *, recursive: bool) -> list[pafs.FileInfo]:
    import pyarrow.fs as pafs

    fs, base = lake_filesystem(uri)
    return fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))  # type: ignore[no-any-return]


def _walk_tables(root: str, storage_options: Mapping[str, str] | None = None) -> Iterator[str]:
    """Lake-relative paths of the directories holding a `_delta_log`, one directory listing per level
    (a table's partitions are not descended into: tables hold no nested tables)."""
    import pyarrow.fs as pafs

    fs, base = lake_filesystem(root, storage_options=storage_options)
    base = base.rstrip("/")
    pending = [base]
    while pending:
        current = pending.pop()
        infos = fs.get_file_info(pafs.FileSelector(current, allow_not_found=True))
        dirs = sorted(
            (i for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")),
            key=lambda i: i.path,
        )
        if any(i.base_name == "_delta_log" for i in dirs):
            yield current[len(base) + 1 :]
            continue
        pending.extend(i.path for i in reversed(dirs))


def discover_tables(
    lake_uri: str | None = None,
    *,
    include_platform: bool = True,
    include_audit: bool = False,
    storage_options: Mapping[str, str] | None = None,
) -> list[LakeTable]:
    """Every Delta table under the lake, pooled and dedicated (and, by default, platform tables
    except the audit trail itself)."""
    root = (lake_uri or get_settings().resolved_lake_uri).rstrip("/")
    tables = [_classify(root, rel) for rel in sorted(_walk_tables(root, storage_options)) if rel not in ("", ".")]
    return [t for t in tables if (include_platform or not t.platform) and (include_audit or not t.is_audit)]


def list_parquet_files(table_uri: str) -> list[str]:
    """Every Parquet file under the table directory, referenced by the log or not (for erasure scans)."""
    prefix = _scheme_prefix(table_uri)
    return sorted(
        prefix + i.path
        for i in _infos(table_uri, recursive=True)
        if i.path.endswith(".parquet") and "/_delta_log/" not in i.path
    )


def list_log_files(table_uri: str, *, suffixes: tuple[str, ...] = (".json", ".parquet")) -> list[str]:
    """The table's `_delta_log` commit JSON and checkpoint files (or the files ending in `suffixes`)."""
    prefix = _scheme_prefix(table_uri)
    log = table_uri.rstrip("/") + "/_delta_log"
    return sorted(prefix + i.path for i in _infos(log, recursive=False) if i.path.endswith(suffixes))


def read_bytes(uri: str) -> bytes:
    """One lake file's content (a log entry, for scans)."""
    fs, path = lake_filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()  # type: ignore[no-any-return]


def read_parquet(uri: str) -> Any:
    """One Parquet file of the lake read directly into Arrow (not through the Delta log)."""
    import pyarrow.parquet as pq

    fs, path = lake_filesystem(uri)
    return pq.read_table(path, filesystem=fs)


@contextlib.contextmanager
def parquet_file(uri: str) -> Iterator[Any]:
    """One Parquet file of the lake opened as a `pyarrow.parquet.ParquetFile`: its footer (row count, row group
    statistics) without the data, and only the row groups and columns a caller asks for."""
    import pyarrow.parquet as pq

    fs, path = lake_filesystem(uri)
    with fs.open_input_file(path) as handle:
        yield pq.ParquetFile(handle)


def delete_files(uris: list[str]) -> None:
    """Delete lake files (log entries an erasure drops)."""
    for uri in uris:
        fs, path = lake_filesystem(uri)
        fs.delete_file(path)


def delete_tree(uri: str) -> None:
    """Delete a directory of the lake and everything under it (a dedicated tenant's root)."""
    fs, path = lake_filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)
