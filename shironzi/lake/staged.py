"""Staged writes: data files written first, committed later in one Delta transaction.

`stage_files` writes rows as Parquet data files under the table's root (a local path or an object store,
through the same delta-rs storage handler and `storage_options` as every other lake function) and commits
nothing: until `commit_staged` records them, readers never see the files and a vacuum may remove them as
orphans. `commit_staged` commits them in ONE transaction carrying the idempotency markers (`Txn`: app id,
version), creating the table on first use, and re-runs the commit on a conflict with a concurrent writer.
"Files written, not committed" is thereby a real state that a writer (bronze landing) can stop in and
recover from: the next attempt reads the txn versions back and writes again.

Local tables and object stores take this same path; on S3 the commit itself is made safe by delta-rs's
conditional put (see `shironzi.lake.tables`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.transaction import AddAction

from shironzi.errors import InvalidInputError
from shironzi.lake.tables import (
    TENANT_COLUMN,
    CommitResult,
    TableData,
    Txn,
    _check_columns,
    _commit_properties,
    _open_for_write,
    _options,
    _partition_list,
    _retrying,
    _to_arrow,
    _try_open,
    _txn_list,
    _uri,
)

ROW_GROUP_ROWS = 1 << 20
HANDLE_CACHE_SIZE = 256
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True)
class StagedFiles:
    """Data files written under `uri` and not yet committed: what `commit_staged` records."""

    uri: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    actions: tuple[AddAction, ...]
    rows: int


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


class _TableFiles:
    """Writes whole files under a table's root: Arrow's local filesystem, or delta-rs's object-store handler
    (the same `storage_options` as every commit) for `s3://`, `abfss://`, `gs://` tables."""

    def __init__(self, location: str, opts: dict[str, str] | None) -> None:
        self.local = _is_local(location)
        if self.local:
            root = Path(location.removeprefix("file://")).resolve()
            root.mkdir(parents=True, exist_ok=True)
            self._fs = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())
        else:
            from deltalake._internal import DeltaFileSystemHandler

            self._store = DeltaFileSystemHandler(table_uri=location, options=opts)

    def put(self, relative: str, payload: pa.Buffer) -> None:
        if self.local:
            folder = relative.rpartition("/")[0]
            if folder:
                self._fs.create_dir(folder, recursive=True)
            with self._fs.open_output_stream(relative) as out:
                out.write(payload)
            return
        stream = self._store.open_output_stream(relative, None)  # object stores have no directories
        try:
            stream.write(payload.to_pybytes())
        finally:
            stream.close()  # type: ignore[attr-defined]  # present at runtime, missing from the stub


class _Handles:
    """Open tables and file writers kept per (table, storage options) across staged writes in a process.

    A writer commits to the same few tables again and again: refreshing a kept handle reads only the log
    entries that are new since the last commit (one LIST and a GET each on S3), where opening the table
    again re-reads every entry since the last checkpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        self._files: dict[tuple[str, str], _TableFiles] = {}

    @staticmethod
    def _key(location: str, opts: dict[str, str] | None) -> tuple[str, str]:
        return location, json.dumps(opts or {}, sort_keys=True)

    def files(self, location: str, opts: dict[str, str] | None) -> _TableFiles:
        key = self._key(location, opts)
        with self._lock:
            found = self._files.get(key)
        if found is None:
            found = _TableFiles(location, opts)
            with self._lock:
                self._keep(self._files, key, found)
        return found

    def table(self, location: str, opts: dict[str, str] | None) -> DeltaTable | None:
        """The table at its latest version (None while it does not exist)."""
        key = self._key(location, opts)
        with self._lock:
            kept = self._tables.get(key)
        if kept is not None:
            try:
                kept.update_incremental()
                return kept
            except Exception:  # noqa: BLE001 - replaced or removed underneath us: open it afresh
                self.forget(location, opts)
        opened = _try_open(location, opts)
        if opened is not None:
            self.remember(location, opts, opened)
        return opened

    def remember(self, location: str, opts: dict[str, str] | None, table: DeltaTable) -> None:
        with self._lock:
            self._keep(self._tables, self._key(location, opts), table)

    def forget(self, location: str, opts: dict[str, str] | None) -> None:
        with self._lock:
            self._tables.pop(self._key(location, opts), None)

    @staticmethod
    def _keep(store: dict[tuple[str, str], Any], key: tuple[str, str], value: Any) -> None:
        store[key] = value
        while len(store) > HANDLE_CACHE_SIZE:
            store.pop(next(iter(store)))


_handles = _Handles()


# ------------------------------------------------------------------------------------ statistics


def _ms_floor(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ms_ceil(value: datetime) -> str:
    if value.microsecond % 1000:
        value = value + timedelta(microseconds=1000 - value.microsecond % 1000)
    return _ms_floor(value)


def file_stats(table: pa.Table) -> str:
    """Delta add-action statistics (numRecords, min/max, null counts) for one data file's rows."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in table.column_names:
        column = table.column(name)
        nulls[name] = column.null_count
        kind = column.type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_timestamp(kind)
            or pa.types.is_date(kind)
        ):
            continue
        if column.null_count == len(column):
            continue
        bounds = pc.min_max(column).as_py()
        lo, hi = bounds["min"], bounds["max"]
        if pa.types.is_timestamp(kind):
            mins[name], maxs[name] = _ms_floor(lo), _ms_ceil(hi)
        elif pa.types.is_date(kind):
            mins[name], maxs[name] = lo.isoformat(), hi.isoformat()
        elif pa.types.is_floating(kind) and (lo != lo or hi != hi):  # NaN: no usable bounds
            continue
        elif pa.types.is_string(kind) and (len(lo) > 32 or len(hi) > 32):
            continue  # long strings: no bounds rather than truncated ones
        else:
            mins[name], maxs[name] = lo, hi
    return json.dumps({"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


# ------------------------------------------------------------------------------------ partitions


def _partition_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _directory(column: str, text: str | None) -> str:
    """The Hive-style directory of a partition value (a digest for values unsafe in an object key)."""
    if text is None:
        return f"{column}={_NULL_PARTITION}"
    if _SAFE_VALUE.match(text):
        return f"{column}={text}"
    return f"{column}=v{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _check_partition_types(table: pa.Table, parts: Sequence[str]) -> None:
    for name in parts:
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
                or pa.types.is_date(kind) or pa.types.is_boolean(kind)):
            raise InvalidInputError(f"partition column {name!r} has type {kind}; use a string, integer, date or bool")


def _segments(table: pa.Table, parts: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) row ranges of equal partition values in a table sorted by the partition columns."""
    if not parts or table.num_rows == 0:
        return [(0, table.num_rows)] if table.num_rows else []
    ends: set[int] = set()
    for name in parts:
        runs = pc.run_end_encode(table.column(name).combine_chunks())
        ends.update(runs.run_ends.to_pylist())
    bounds = sorted(ends)
    return list(zip([0, *bounds[:-1]], bounds, strict=True))


# ------------------------------------------------------------------------------------ the API


def stage_files(
    uri: str | os.PathLike[str],
    data: TableData,
    *,
    partition_by: str | Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> StagedFiles:
    """Write `data` as Parquet files (one per partition, rows clustered by tenant) without committing them."""
    location = _uri(uri)
    opts = _options(storage_options)
    table = _to_arrow(data)
    parts = _partition_list(partition_by) or []
    if parts:
        _check_columns(table, parts, "partition columns")
        _check_partition_types(table, parts)
    order = [(name, "ascending") for name in parts]
    if TENANT_COLUMN in table.column_names:
        order.append((TENANT_COLUMN, "ascending"))
    ordered = table.sort_by(order) if order and table.num_rows > 1 else table
    body = ordered.drop_columns(parts) if parts else ordered
    files = _handles.files(location, opts) if ordered.num_rows else None
    actions: list[AddAction] = []
    for start, end in _segments(ordered, parts):
        values = {name: _partition_text(ordered.column(name)[start].as_py()) for name in parts}
        folder = "/".join(_directory(name, values[name]) for name in parts)
        relative = f"{folder + '/' if folder else ''}part-{uuid.uuid4()}-c000.snappy.parquet"
        rows = body.slice(start, end - start)
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink, compression="snappy", row_group_size=ROW_GROUP_ROWS)
        payload = sink.getvalue()
        assert files is not None
        files.put(relative, payload)
        actions.append(
            AddAction(
                path=relative,
                size=payload.size,
                partition_values=values,
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=file_stats(rows),
            )
        )
    return StagedFiles(location, table.schema, tuple(parts), tuple(actions), table.num_rows)


def _type_name(kind: Any) -> str:
    name = getattr(kind, "type", None)  # a primitive type's name, e.g. "string"; nested types print whole
    return name if isinstance(name, str) else str(kind)


def _check_layout(target: DeltaTable, staged: StagedFiles) -> None:
    table_parts = list(target.metadata().partition_columns)
    if table_parts != list(staged.partition_by):
        raise InvalidInputError(
            f"table {staged.uri} is partitioned by {table_parts}, the staged files by {list(staged.partition_by)}",
            uri=staged.uri,
        )
    table_types = {f.name: _type_name(f.type) for f in target.schema().fields}
    staged_types = {f.name: _type_name(f.type) for f in DeltaSchema.from_arrow(staged.schema).fields}
    if set(table_types) != set(staged_types):
        raise InvalidInputError(
            f"staged columns {sorted(set(staged_types) ^ set(table_types))} differ from table {staged.uri}",
            uri=staged.uri,
        )
    changed = sorted(name for name, kind in staged_types.items() if table_types[name] != kind)
    if changed:
        raise InvalidInputError(
            f"staged column types differ from table {staged.uri}: "
            + ", ".join(f"{name} is {staged_types[name]}, not {table_types[name]}" for name in changed),
            uri=staged.uri,
        )


def commit_staged(
    staged: StagedFiles,
    *,
    txn: Txn | None = None,
    txns: Iterable[Txn] | None = None,
    metadata: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> CommitResult:
    """Commit staged files in one transaction (creating the table if needed); exactly once under `txn`/`txns`.

    When every txn is already recorded at >= its version nothing is committed (`skipped=True`): the
    staged files stay orphans for vacuum.
    """
    location = staged.uri
    opts = _options(storage_options)
    txn_items = _txn_list(txn, txns)
    props = _commit_properties(metadata, txn_items)
    parts = list(staged.partition_by) or None

    def attempt() -> CommitResult:
        target, done = _open_for_write(location, _handles.table(location, opts), staged.schema, parts, opts, txn_items)
        _handles.remember(location, opts, target)
        if done:
            return CommitResult(version=target.version(), rows=0, skipped=True)
        _check_layout(target, staged)
        if not staged.actions and not txn_items:
            return CommitResult(version=target.version(), rows=0)
        target.create_write_transaction(
            list(staged.actions), "append", staged.schema, partition_by=parts, commit_properties=props
        )
        target.update_incremental()
        return CommitResult(version=target.version(), rows=staged.rows)

    return _retrying(location, "commit", attempt)
