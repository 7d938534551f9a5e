"""Delta Lake I/O for every layer: idempotent appends, merges, scoped overwrites, deletes and
pushed-down reads over local paths or object-store URIs (delta-rs `storage_options`).

Writers cluster rows by `tenant_id` so per-file min/max statistics let readers skip other
tenants' files, and new tables checkpoint their log at least every `CHECKPOINT_INTERVAL` commits.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import gc
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError, SchemaMismatchError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from shironzi.errors import (
    CommitConflictError,
    InvalidInputError,
    InvalidStateError,
    LakeError,
    ShironziError,
    TableNotFoundError,
)

if TYPE_CHECKING:
    import polars as pl

logger = logging.getLogger("shironzi.lake")

CHECKPOINT_INTERVAL = 100
"""New tables write a log checkpoint at least this often (commits)."""
MAX_COMMIT_ATTEMPTS = 8
TENANT_COLUMN = "tenant_id"

FilterOp = Literal["=", "==", "!=", "<", "<=", ">", ">=", "in", "not in"]
Filter = tuple[str, str, Any]
Filters = Sequence[Filter] | Sequence[Sequence[Filter]]
"""deltalake/pyarrow DNF: a flat list is an AND; a list of lists is an OR of ANDs."""
TableData = Any  # pyarrow.Table | pyarrow.RecordBatch | polars.DataFrame
Predicate = str | Filters

_OPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in"})
_T = TypeVar("_T")


@dataclass(frozen=True)
class Txn:
    """One idempotency marker: an app id (e.g. `ingest:bronze.events:p3`) and its monotonic version."""

    app_id: str
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.app_id, str) or not self.app_id.strip():
            raise InvalidInputError("a txn needs a non-empty app_id")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidInputError(f"txn version must be a non-negative int, got {self.version!r}")


@dataclass(frozen=True)
class CommitResult:
    """What a write committed. `skipped` means the txn was already recorded and nothing was written."""

    version: int
    rows: int
    skipped: bool = False


@dataclass(frozen=True)
class MergeResult:
    """What a merge committed; `metrics` are delta-rs's operation metrics."""

    version: int
    inserted: int
    updated: int
    skipped: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _uri(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    if not text or not str(text).strip():
        raise InvalidInputError("a table URI is required")
    return str(text).rstrip("/") if "://" in text else str(Path(text).expanduser())


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    if storage_options is None:
        from shironzi.settings import get_settings

        storage_options = get_settings().storage_options
    return dict(storage_options) or None


def _not_found(uri: str) -> TableNotFoundError:
    return TableNotFoundError(f"no Delta table at {uri}", uri=uri)


def _lake_error(exc: Exception, uri: str, action: str) -> ShironziError:
    """Translate a delta-rs failure into the platform's error hierarchy."""
    if isinstance(exc, ShironziError):
        return exc
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, DeltaTableNotFoundError):
        return _not_found(uri)
    if isinstance(exc, CommitFailedError):
        return CommitConflictError(f"{action} on {uri} lost a commit race: {message}", uri=uri)
    if isinstance(exc, SchemaMismatchError | TypeError | ValueError):
        return InvalidInputError(f"{action} on {uri} rejected: {message}", uri=uri)
    if isinstance(exc, DeltaProtocolError):
        return InvalidStateError(f"{action} on {uri}: {message}", uri=uri)
    text = str(exc)
    if any(
        s in text
        for s in (
            "Schema error",
            "parser error",
            "No field named",
            "Invalid data",
            "Cast error",
            "Arrow error",
            "Invalid retention",
            "Invalid table",
            "does not match",
        )
    ):
        return InvalidInputError(f"{action} on {uri} rejected: {message}", uri=uri)
    return LakeError(f"{action} on {uri} failed: {message}", uri=uri)


def _try_open(uri: str, opts: dict[str, str] | None, version: int | None = None) -> DeltaTable | None:
    try:
        return DeltaTable(uri, version=version, storage_options=opts)
    except DeltaTableNotFoundError:
        return None
    except DeltaError as exc:
        raise _lake_error(exc, uri, "open") from exc


def _open(uri: str, opts: dict[str, str] | None, version: int | None = None) -> DeltaTable:
    try:
        table = _try_open(uri, opts, version)
    except LakeError:
        if version is None or _try_open(uri, opts) is None:
            raise
        table = None
    if table is None:
        if version is not None and _try_open(uri, opts) is not None:
            raise TableNotFoundError(f"Delta table {uri} has no version {version}", uri=uri, version=version)
        raise _not_found(uri)
    return table


def _to_arrow(data: TableData) -> pa.Table:
    """Accept a pyarrow Table/RecordBatch or a polars DataFrame (anything exporting an Arrow stream)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    to_arrow = getattr(data, "to_arrow", None)
    if callable(to_arrow):  # polars DataFrame
        table = to_arrow()
        if isinstance(table, pa.Table):
            return table
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise InvalidInputError(f"expected a pyarrow Table or polars DataFrame, got {type(data).__name__}")


def cluster_by_tenant(table: pa.Table) -> pa.Table:
    """Sort rows by `tenant_id` (when present) so each file covers a narrow tenant range."""
    if TENANT_COLUMN in table.column_names and table.num_rows > 1:
        return table.sort_by([(TENANT_COLUMN, "ascending")])
    return table


def _txn_list(txn: Txn | None, txns: Iterable[Txn] | None) -> list[Txn]:
    found = ([txn] if txn is not None else []) + list(txns or [])
    for item in found:
        if not isinstance(item, Txn):
            raise InvalidInputError(f"expected Txn, got {type(item).__name__}")
    app_ids = [t.app_id for t in found]
    if len(app_ids) != len(set(app_ids)):
        raise InvalidInputError(f"one commit may carry each txn app id once, got {app_ids}")
    return found


def _already_committed(table: DeltaTable, txns: list[Txn], uri: str) -> bool:
    """True when every txn is already recorded at >= its version; raises when only some are."""
    if not txns:
        return False
    done = []
    for item in txns:
        recorded = table.transaction_version(item.app_id)
        done.append(recorded is not None and recorded >= item.version)
    if all(done):
        return True
    if any(done):
        stale = [t.app_id for t, d in zip(txns, done, strict=True) if d]
        raise InvalidStateError(
            f"txn app ids {stale} are already committed on {uri} at or beyond the requested versions while "
            "others are not; drop their rows and txns (see txn_version) and commit the rest",
            uri=uri,
            app_ids=stale,
        )
    return False


def _commit_properties(metadata: Mapping[str, Any] | None, txns: list[Txn]) -> CommitProperties:
    custom = {str(k): str(v) for k, v in (metadata or {}).items()}
    return CommitProperties(
        custom_metadata=custom or None,
        app_transactions=[Transaction(t.app_id, t.version) for t in txns] or None,
    )


def _new_table_config() -> dict[str, str | None]:
    return {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}


def _partition_list(partition_by: str | Sequence[str] | None) -> list[str] | None:
    if partition_by is None:
        return None
    return [partition_by] if isinstance(partition_by, str) else list(partition_by)


def _check_columns(table: pa.Table, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"{what} {missing} not in the data's columns {table.column_names}")


def _create(
    uri: str, schema: pa.Schema, partition_by: list[str] | None, opts: dict[str, str] | None
) -> DeltaTable:
    """Create an empty table (or open the one a concurrent writer just created)."""
    try:
        return DeltaTable.create(
            uri,
            schema,
            partition_by=partition_by,
            mode="ignore",
            configuration=_new_table_config(),
            storage_options=opts,
        )
    except (DeltaError, ValueError, TypeError) as exc:
        existing = _try_open(uri, opts)
        if existing is not None:
            return existing
        raise _lake_error(exc, uri, "create table") from exc


def _retrying(uri: str, action: str, attempt_commit: Callable[[], _T]) -> _T:
    """Run one commit attempt, re-running it on a delta-rs commit conflict with jittered backoff."""
    last: Exception | None = None
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        try:
            return attempt_commit()
        except CommitFailedError as exc:
            last = exc
            logger.debug("commit conflict on %s (%s), attempt %d", uri, action, attempt + 1)
            time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
        except ShironziError:
            raise
        except (DeltaError, ValueError, TypeError, pa.ArrowException) as exc:
            raise _lake_error(exc, uri, action) from exc
    assert last is not None
    raise CommitConflictError(
        f"{action} on {uri} kept conflicting after {MAX_COMMIT_ATTEMPTS} attempts: {last}", uri=uri
    ) from last


# --------------------------------------------------------------------------- predicates


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """Render a Python value as a delta-rs (DataFusion) SQL literal."""
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float | Decimal):
        return repr(value) if not isinstance(value, Decimal) else str(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, _dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise InvalidInputError(f"cannot use a {type(value).__name__} value in a predicate")


def _looks_like_filter(item: Any) -> bool:
    return isinstance(item, tuple | list) and len(item) == 3 and isinstance(item[0], str)


def normalize_filters(filters: Filters | None, tenant_id: str | None = None) -> list[list[Filter]]:
    """Filters in DNF (an OR of AND-lists), with `tenant_id = t` added to every branch when given."""
    dnf: list[list[Filter]] = []
    if filters:
        if isinstance(filters, str):
            raise InvalidInputError("filters are (column, op, value) tuples, not a SQL string")
        flat = _looks_like_filter(filters[0])
        groups = [list(filters)] if flat else [list(g) for g in filters]  # type: ignore[arg-type]
        for group in groups:
            clean: list[Filter] = []
            for item in group:
                if not isinstance(item, tuple | list) or len(item) != 3:
                    raise InvalidInputError(f"a filter is a (column, op, value) tuple, got {item!r}")
                column, op, value = item
                op = str(op).lower()
                if op not in _OPS:
                    raise InvalidInputError(f"unsupported filter operator {op!r}; use one of {sorted(_OPS)}")
                if op in ("in", "not in"):
                    if isinstance(value, str) or not isinstance(value, Iterable):
                        raise InvalidInputError(f"filter {column!r} {op} needs a list of values")
                    value = list(value)
                clean.append((str(column), "=" if op == "==" else op, value))
            dnf.append(clean)
    if tenant_id is not None:
        if not tenant_id:
            raise InvalidInputError("tenant_id must not be empty")
        tenant_filter: Filter = (TENANT_COLUMN, "=", tenant_id)
        dnf = [group + [tenant_filter] for group in dnf] if dnf else [[tenant_filter]]
    return [g for g in dnf if g] if any(dnf) else []


def filters_to_sql(filters: Filters) -> str:
    """Render DNF filters as a SQL predicate (for delete and overwrite)."""
    branches = []
    for group in normalize_filters(filters):
        terms = []
        for column, op, value in group:
            if op in ("in", "not in"):
                items = ", ".join(sql_literal(v) for v in value) or "NULL"
                terms.append(f"{_sql_ident(column)} {op.upper()} ({items})")
            elif value is None and op in ("=", "!="):
                terms.append(f"{_sql_ident(column)} IS {'NOT ' if op == '!=' else ''}NULL")
            else:
                terms.append(f"{_sql_ident(column)} {op} {sql_literal(value)}")
        branches.append("(" + " AND ".join(terms) + ")")
    if not branches:
        raise InvalidInputError("an empty filter list matches nothing specific; pass a predicate")
    return " OR ".join(branches)


def _predicate_sql(predicate: Predicate) -> str:
    if isinstance(predicate, str):
        if not predicate.strip():
            raise InvalidInputError("the predicate must not be empty")
        return predicate
    return filters_to_sql(predicate)


def _check_filter_columns(dnf: list[list[Filter]], schema_names: Sequence[str], uri: str) -> None:
    missing = sorted({c for g in dnf for c, _, _ in g if c not in schema_names})
    if missing:
        raise InvalidInputError(
            f"filter columns {missing} are not in table {uri} ({list(schema_names)})", uri=uri
        )


def _table_column_names(table: DeltaTable) -> list[str]:
    return [f.name for f in table.schema().fields]


# --------------------------------------------------------------------------- writes


def append(
    uri: str | os.PathLike[str],
    data: TableData,
    *,
    partition_by: str | Sequence[str] | None = None,
    txn: Txn | None = None,
    txns: Iterable[Txn] | None = None,
    schema_mode: Literal["merge", "overwrite"] | None = None,
    metadata: Mapping[str, str] | None = None,
    target_file_size: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> CommitResult:
    """Append rows (clustered by tenant), creating the table if needed; exactly-once under `txn`/`txns`.

    When every txn is already recorded at >= its version nothing is written (`skipped=True`).
    """
    location = _uri(uri)
    opts = _options(storage_options)
    table = cluster_by_tenant(_to_arrow(data))
    parts = _partition_list(partition_by)
    if parts:
        _check_columns(table, parts, "partition columns")
    txn_items = _txn_list(txn, txns)
    props = _commit_properties(metadata, txn_items)

    def attempt() -> CommitResult:
        target = _try_open(location, opts)
        if target is not None and _already_committed(target, txn_items, location):
            return CommitResult(version=target.version(), rows=0, skipped=True)
        if target is None:
            target = _create(location, table.schema, parts, opts)
            if _already_committed(target, txn_items, location):  # a concurrent creator got there first
                return CommitResult(version=target.version(), rows=0, skipped=True)
        write_deltalake(
            target,
            table,
            mode="append",
            partition_by=parts,
            schema_mode=schema_mode,
            target_file_size=target_file_size,
            commit_properties=props,
        )
        return CommitResult(version=target.version(), rows=table.num_rows)

    return _retrying(location, "append", attempt)


def overwrite(
    uri: str | os.PathLike[str],
    data: TableData,
    *,
    partition_by: str | Sequence[str] | None = None,
    predicate: Predicate | None = None,
    schema_mode: Literal["merge", "overwrite"] | None = None,
    metadata: Mapping[str, str] | None = None,
    txn: Txn | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> CommitResult:
    """Replace the whole table, or only the rows matching `predicate` (every new row must match it)."""
    location = _uri(uri)
    opts = _options(storage_options)
    table = cluster_by_tenant(_to_arrow(data))
    parts = _partition_list(partition_by)
    if parts:
        _check_columns(table, parts, "partition columns")
    where = _predicate_sql(predicate) if predicate is not None else None
    txn_items = _txn_list(txn, None)
    props = _commit_properties(metadata, txn_items)

    def attempt() -> CommitResult:
        target = _try_open(location, opts)
        if target is not None and _already_committed(target, txn_items, location):
            return CommitResult(version=target.version(), rows=0, skipped=True)
        if target is None:
            target = _create(location, table.schema, parts, opts)
        write_deltalake(
            target,
            table,
            mode="overwrite",
            partition_by=parts,
            predicate=where,
            schema_mode=schema_mode,
            commit_properties=props,
        )
        return CommitResult(version=target.version(), rows=table.num_rows)

    return _retrying(location, "overwrite", attempt)


def delete(
    uri: str | os.PathLike[str],
    predicate: Predicate,
    *,
    metadata: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Delete the rows matching a SQL predicate or DNF filters; returns how many rows were deleted."""
    location = _uri(uri)
    opts = _options(storage_options)
    where = _predicate_sql(predicate)
    props = _commit_properties(metadata, [])

    def attempt() -> tuple[int, int]:
        target = _open(location, opts)
        before = target.version()
        metrics = target.delete(where, commit_properties=props)
        return int(metrics.get("num_deleted_rows", 0) or 0), before

    deleted, before = _retrying(location, "delete", attempt)
    if deleted:
        _rewrite_view_files(location, opts, since_version=before, metadata=metadata)
    return deleted


def _has_view_columns(path: str) -> bool:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    return any(pa.types.is_string_view(f.type) or pa.types.is_binary_view(f.type) for f in schema)


def _rewrite_view_files(
    location: str, opts: dict[str, str] | None, *, since_version: int, metadata: Mapping[str, str] | None
) -> None:
    """delta-rs delete rewrites files with string_view columns (delta-rs #4579), which PyArrow cannot filter
    and so breaks later pushed-down reads (dbt sources, features). Rewrite the partitions holding such new
    files with plain string types. Local lakes only: object stores keep the delta-rs files as written."""
    if "://" in location and not location.startswith("file://"):
        return
    current = _open(location, opts)
    previous = set(_open(location, opts, since_version).file_uris())
    new_files = [f for f in current.file_uris() if f not in previous]
    suspicious = [f for f in new_files if _has_view_columns(f.removeprefix("file://"))]
    if not suspicious:
        return
    partition_by = current.metadata().partition_columns
    if not partition_by:
        overwrite(location, read_arrow(location, storage_options=opts), metadata=metadata, storage_options=opts)
        return
    actions = pa.table(current.get_add_actions(flatten=True)).to_pylist()
    by_path = {a["path"]: a for a in actions}
    partitions: set[tuple[Any, ...]] = set()
    for uri in suspicious:
        action = next((a for path, a in by_path.items() if uri.endswith(path)), None)
        if action is not None:
            partitions.add(tuple(action.get(f"partition.{col}") for col in partition_by))
    for values in sorted(partitions, key=repr):
        selector = [(col, "=", value) for col, value in zip(partition_by, values, strict=True)]
        rows = read_arrow(location, filters=selector, storage_options=opts)
        overwrite(location, rows, partition_by=partition_by, predicate=selector, metadata=metadata,
                  storage_options=opts)


def _dedupe_source(table: pa.Table, keys: list[str], keep: Literal["first", "last"]) -> pa.Table:
    """One source row per key (the last one wins for updates, the first one for insert-only)."""
    if table.num_rows < 2:
        return table
    import pyarrow.compute as pc

    index = "__shironzi_row__"
    how = "max" if keep == "last" else "min"
    numbered = table.append_column(index, pa.array(range(table.num_rows), pa.int64()))
    picked = numbered.group_by(keys, use_threads=False).aggregate([(index, how)]).column(f"{index}_{how}")
    if len(picked) == table.num_rows:
        return table
    return table.take(pc.take(picked, pc.sort_indices(picked)))


def _merge_predicate(source: pa.Table, keys: list[str], scope: list[str]) -> str:
    import pyarrow.compute as pc

    terms = [f"t.{_sql_ident(k)} = s.{_sql_ident(k)}" for k in keys]
    for column in scope:
        values = pc.unique(source.column(column)).to_pylist()
        present = [v for v in values if v is not None]
        clauses = []
        if present:
            clauses.append(f"t.{_sql_ident(column)} IN ({', '.join(sql_literal(v) for v in present)})")
        if len(present) != len(values):
            clauses.append(f"t.{_sql_ident(column)} IS NULL")
        if clauses:
            terms.append("(" + " OR ".join(clauses) + ")")
    return " AND ".join(terms)


def merge(
    uri: str | os.PathLike[str],
    data: TableData,
    *,
    keys: Sequence[str],
    partition_by: str | Sequence[str] | None = None,
    when_matched: Literal["update", "ignore"] = "update",
    scope_to_partitions: bool = True,
    txn: Txn | None = None,
    txns: Iterable[Txn] | None = None,
    metadata: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> MergeResult:
    """Upsert on `keys` (or insert-only dedup with `when_matched="ignore"`), creating the table if missing.

    With `scope_to_partitions`, the match is limited to the source's partition values so only
    those partitions are read and rewritten. Duplicate keys in the source collapse to one row.
    """
    if when_matched not in ("update", "ignore"):
        raise InvalidInputError(f"when_matched must be 'update' or 'ignore', got {when_matched!r}")
    key_list = [keys] if isinstance(keys, str) else list(keys)
    if not key_list:
        raise InvalidInputError("merge needs at least one key column")
    location = _uri(uri)
    opts = _options(storage_options)
    source = _to_arrow(data)
    parts = _partition_list(partition_by)
    _check_columns(source, key_list, "key columns")
    if parts:
        _check_columns(source, parts, "partition columns")
    for key in key_list:
        if source.column(key).null_count:
            raise InvalidInputError(
                f"key column {key!r} has null values; merge keys must be set", uri=location
            )
    source = cluster_by_tenant(
        _dedupe_source(source, key_list, "last" if when_matched == "update" else "first")
    )
    txn_items = _txn_list(txn, txns)
    props = _commit_properties(metadata, txn_items)

    def attempt() -> MergeResult:
        target = _try_open(location, opts)
        if target is not None and _already_committed(target, txn_items, location):
            return MergeResult(version=target.version(), inserted=0, updated=0, skipped=True)
        if target is None:
            target = _create(location, source.schema, parts, opts)
        table_parts = list(target.metadata().partition_columns)
        if parts and parts != table_parts:
            raise InvalidInputError(
                f"table {location} is partitioned by {table_parts}, not {parts}", uri=location
            )
        scope = [c for c in table_parts if c in source.column_names] if scope_to_partitions else []
        if source.num_rows == 0 and not txn_items:
            return MergeResult(version=target.version(), inserted=0, updated=0)
        merger = target.merge(
            source,
            predicate=_merge_predicate(source, key_list, scope),
            source_alias="s",
            target_alias="t",
            commit_properties=props,
        )
        if when_matched == "update":
            merger = merger.when_matched_update_all()
        before = target.version()
        metrics = merger.when_not_matched_insert_all().execute()
        if txn_items and target.version() == before:
            # Nothing changed, so delta-rs committed nothing: record the txns with an empty commit.
            empty = pa.schema(target.schema().to_arrow()).empty_table()
            write_deltalake(target, empty, mode="append", commit_properties=props)
        return MergeResult(
            version=target.version(),
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            metrics=dict(metrics),
        )

    return _retrying(location, "merge", attempt)


# --------------------------------------------------------------------------- reads


def table_exists(uri: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None) -> bool:
    """Whether a Delta table lives at `uri`."""
    return DeltaTable.is_deltatable(_uri(uri), storage_options=_options(storage_options))


def open_table(
    uri: str | os.PathLike[str],
    *,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> DeltaTable:
    """The delta-rs handle for advanced callers; raises TableNotFoundError when missing."""
    return _open(_uri(uri), _options(storage_options), version)


def table_version(uri: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None) -> int:
    """The latest committed version; raises TableNotFoundError when missing."""
    return _open(_uri(uri), _options(storage_options)).version()


def txn_version(
    uri: str | os.PathLike[str], app_id: str, *, storage_options: Mapping[str, str] | None = None
) -> int | None:
    """The last committed txn version for `app_id` (None if never committed or no table yet).

    Stream ingestors call this after a restart to find where to resume.
    """
    target = _try_open(_uri(uri), _options(storage_options))
    return None if target is None else target.transaction_version(app_id)


def _native_filesystem(uri: str) -> Any:
    """Arrow's own filesystem for local tables (None: delta-rs's handler, which carries storage_options).

    deltalake's default is a Python-implemented filesystem in a reference cycle; if that cycle is
    still alive at interpreter exit, Arrow's IO threads abort the process ("terminate called without
    an active exception"). Local reads avoid it altogether; the `atexit` collection below clears any
    cycle left by object-store reads (or by other code's `DeltaTable.to_pyarrow_dataset`).
    """
    if "://" in uri and not uri.startswith("file://"):
        return None
    import pyarrow.fs as pafs

    root = uri.removeprefix("file://")
    return pafs.SubTreeFileSystem(str(Path(root).resolve()), pafs.LocalFileSystem())


atexit.register(gc.collect)


def read_arrow(
    uri: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    tenant_id: str | None = None,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pa.Table:
    """Read a table (or one version) into Arrow, pruning files by partition values and min/max stats."""
    from pyarrow.parquet import filters_to_expression

    location = _uri(uri)
    target = _open(location, _options(storage_options), version)
    dnf = normalize_filters(filters, tenant_id)
    names = _table_column_names(target)
    _check_filter_columns(dnf, names, location)
    if columns is not None:
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise InvalidInputError(f"columns {unknown} are not in table {location}", uri=location)
    try:
        dataset = target.to_pyarrow_dataset(
            file_pruning_predicate=dnf or None,  # type: ignore[arg-type]
            filesystem=_native_filesystem(location),
        )
        selected = list(columns) if columns is not None else None
        expression = filters_to_expression(dnf) if dnf else None
        try:
            return _without_views(dataset.to_table(columns=selected, filter=expression))
        except pa.ArrowNotImplementedError:
            # Files rewritten by delta-rs merge/delete may hold string_view columns, which Arrow's
            # filter kernels do not support: prune files by stats, then filter the plain-string table.
            table = _without_views(dataset.to_table(columns=None if selected is None else sorted(
                set(selected) | {f[0] for group in dnf for f in group})))
            if expression is not None:
                table = table.filter(expression)
            return table.select(selected) if selected is not None else table
    except (DeltaError, pa.ArrowException, ValueError, TypeError) as exc:
        raise _lake_error(exc, location, "read") from exc


def _without_views(table: pa.Table) -> pa.Table:
    """Cast string_view/binary_view columns (written by some delta-rs operations) to plain types."""
    fields = []
    changed = False
    for column in table.schema:
        if pa.types.is_string_view(column.type):
            fields.append(column.with_type(pa.string()))
            changed = True
        elif pa.types.is_binary_view(column.type):
            fields.append(column.with_type(pa.binary()))
            changed = True
        else:
            fields.append(column)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata)) if changed else table


def _polars_expr(dnf: list[list[Filter]]) -> pl.Expr:
    import polars as pl

    ops: dict[str, Callable[[pl.Expr, Any], pl.Expr]] = {
        "=": lambda c, v: c.is_null() if v is None else c == v,
        "!=": lambda c, v: c.is_not_null() if v is None else c != v,
        "<": lambda c, v: c < v,
        "<=": lambda c, v: c <= v,
        ">": lambda c, v: c > v,
        ">=": lambda c, v: c >= v,
        "in": lambda c, v: c.is_in(list(v)),
        "not in": lambda c, v: ~c.is_in(list(v)),
    }
    branches = []
    for group in dnf:
        terms = [ops[op](pl.col(column), value) for column, op, value in group]
        branches.append(pl.all_horizontal(terms) if len(terms) > 1 else terms[0])
    return pl.any_horizontal(branches) if len(branches) > 1 else branches[0]


def scan_polars(
    uri: str | os.PathLike[str],
    *,
    filters: Filters | None = None,
    tenant_id: str | None = None,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy polars scan; the filters (and any later ones) are pushed into the Delta scan."""
    import polars as pl

    location = _uri(uri)
    target = _open(location, _options(storage_options), version)
    dnf = normalize_filters(filters, tenant_id)
    _check_filter_columns(dnf, _table_column_names(target), location)
    frame = pl.scan_delta(target)
    return frame.filter(_polars_expr(dnf)) if dnf else frame


def read_polars(
    uri: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    tenant_id: str | None = None,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read into a polars DataFrame with partition, statistics and projection pushdown."""
    frame = scan_polars(
        uri, filters=filters, tenant_id=tenant_id, version=version, storage_options=storage_options
    )
    if columns is not None:
        frame = frame.select(list(columns))
    try:
        return frame.collect()
    except Exception as exc:  # polars raises its own ComputeError/ColumnNotFoundError hierarchy
        raise InvalidInputError(f"read of {_uri(uri)} failed: {exc}", uri=_uri(uri)) from exc


# --------------------------------------------------------------------------- log and layout


_STANDARD_COMMIT_KEYS = frozenset(
    {
        "version",
        "timestamp",
        "operation",
        "operationParameters",
        "operationMetrics",
        "engineInfo",
        "clientVersion",
        "readVersion",
        "isBlindAppend",
        "isolationLevel",
        "userMetadata",
        "userId",
        "userName",
        "job",
        "notebook",
        "clusterId",
        "txnId",
        "inCommitTimestamp",
    }
)


def history(
    uri: str | os.PathLike[str], limit: int | None = None, *, storage_options: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Commits newest first: version, timestamp (UTC datetime), operation, its parameters and metrics,
    engine/client version, and `userMetadata` (the custom metadata the writer attached, e.g. a run id)."""
    location = _uri(uri)
    target = _open(location, _options(storage_options))
    entries = []
    for raw in target.history(limit):
        custom = {k: v for k, v in raw.items() if k not in _STANDARD_COMMIT_KEYS}
        if isinstance(raw.get("userMetadata"), dict):
            custom = {**raw["userMetadata"], **custom}
        elif raw.get("userMetadata") is not None:
            custom = {"userMetadata": raw["userMetadata"], **custom}
        entry = {k: v for k, v in raw.items() if k in _STANDARD_COMMIT_KEYS}
        millis = raw.get("timestamp")
        entry["timestamp"] = (
            _dt.datetime.fromtimestamp(millis / 1000, tz=_dt.UTC) if isinstance(millis, int | float) else None
        )
        entry.setdefault("operationParameters", {})
        entry.setdefault("operationMetrics", {})
        entry["userMetadata"] = custom
        entries.append(entry)
    return entries


def add_actions(uri: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None) -> pa.Table:
    """One row per live data file: path, size_bytes, num_records, `partition.*`, `min.*`, `max.*`."""
    target = _open(_uri(uri), _options(storage_options))
    return pa.table(target.get_add_actions(flatten=True))


def _coerce_like(value: Any, sample: Any) -> Any:
    """Bring a filter value to a statistic's type (e.g. '2024-01-01' against a date)."""
    if value is None or sample is None or type(value) is type(sample):
        return value
    try:
        if isinstance(sample, _dt.datetime) and isinstance(value, str):
            return _dt.datetime.fromisoformat(value)
        if isinstance(sample, _dt.date) and not isinstance(sample, _dt.datetime):
            if isinstance(value, str):
                return _dt.date.fromisoformat(value)
            if isinstance(value, _dt.datetime):
                return value.date()
        if (
            isinstance(sample, _dt.datetime)
            and isinstance(value, _dt.datetime)
            and (sample.tzinfo is None) != (value.tzinfo is None)
        ):
            return value.replace(tzinfo=sample.tzinfo)
        if isinstance(sample, bool | int | float | Decimal) and isinstance(value, str):
            return type(sample)(value)
    except (TypeError, ValueError):
        return value
    return value


def _may_match(op: str, value: Any, lo: Any, hi: Any) -> bool:
    """Could a file whose column spans [lo, hi] hold a row where `column op value`?"""
    values = value if op in ("in", "not in") else [value]
    sample = lo if lo is not None else hi
    values = [_coerce_like(v, sample) for v in values]
    try:
        if op == "=":
            return any(v is not None and (lo is None or lo <= v) and (hi is None or v <= hi) for v in values)
        if op == "in":
            return any(v is not None and (lo is None or lo <= v) and (hi is None or v <= hi) for v in values)
        if op == "!=":
            return not (lo is not None and lo == hi and lo == values[0]) if values[0] is not None else True
        if op == "not in":
            return not (lo is not None and lo == hi and lo in values)
        v = values[0]
        if v is None:
            return False
        if op == "<":
            return lo is None or lo < v
        if op == "<=":
            return lo is None or lo <= v
        if op == ">":
            return hi is None or hi > v
        if op == ">=":
            return hi is None or hi >= v
    except TypeError:
        return True
    return True


def files_touched(
    uri: str | os.PathLike[str],
    filters: Filters | None = None,
    *,
    tenant_id: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """(files a reader of `filters` must open, total files), judged from the add actions' partition
    values and min/max statistics. This is how benchmarks show tenant clustering skipping files."""
    location = _uri(uri)
    target = _open(location, _options(storage_options))
    dnf = normalize_filters(filters, tenant_id)
    _check_filter_columns(dnf, _table_column_names(target), location)
    actions = pa.table(target.get_add_actions(flatten=True)).to_pylist()
    partitions = set(target.metadata().partition_columns)
    touched = 0
    for action in actions:
        if not dnf or any(_file_may_match(action, group, partitions) for group in dnf):
            touched += 1
    return touched, len(actions)


def _file_may_match(action: dict[str, Any], group: list[Filter], partitions: set[str]) -> bool:
    for column, op, value in group:
        if column in partitions:
            part = action.get(f"partition.{column}")
            if part is None:  # a null partition only matches IS NULL
                if op == "=" and value is None:
                    continue
                return False
            if not _may_match(op, value, part, part):
                return False
            continue
        lo, hi = action.get(f"min.{column}"), action.get(f"max.{column}")
        records, nulls = action.get("num_records"), action.get(f"null_count.{column}")
        if value is None and op == "=":
            if nulls == 0:
                return False
            continue
        if records is not None and nulls is not None and records == nulls and records > 0:
            return False  # the column is all null here: no comparison can be true
        if isinstance(hi, str) and len(hi) >= 32:
            hi = None  # delta-rs may truncate long string statistics; don't trust the bound
        if not _may_match(op, value, lo, hi):
            return False
    return True
