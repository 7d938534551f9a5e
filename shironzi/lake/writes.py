"""Delta writes: idempotent appends, scoped overwrites, deletes and merges, each one commit clustered by
`tenant_id`, each holding the table's shared lease (`shironzi.lake.leases`) unless the caller passes
`lease=False` because it already holds the lease."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import pyarrow as pa
from deltalake import write_deltalake

from shironzi.errors import (
    InvalidInputError,
)
from shironzi.lake.leases import optional_lease
from shironzi.lake.predicates import Predicate, _predicate_sql, _sql_ident, sql_literal
from shironzi.lake.tables import (
    CommitResult,
    MergeResult,
    TableData,
    Txn,
    _check_columns,
    _commit_properties,
    _open,
    _open_for_write,
    _options,
    _partition_list,
    _retrying,
    _to_arrow,
    _try_open,
    _txn_list,
    _uri,
    cluster_by_tenant,
)

_T = TypeVar("_T")
DELETE_OPERATION_KEY = "shironzi.operation"  # a delete's commit metadata names it: its Delta operation is a WRITE

# delta-rs parses a predicate recursively on the calling thread, about 335 bytes of stack per listed value: an IN
# list of ~25,000 tenant ids overflows the main thread's 8 MiB stack and kills the process (SIGSEGV). A predicate
# with more values than LONG_PREDICATE_VALUES runs on a thread with STACK_PER_VALUE bytes of stack per value.
LONG_PREDICATE_VALUES = 5_000
STACK_PER_VALUE = 2_048
MIN_DEEP_STACK, MAX_DEEP_STACK = 64 << 20, 1 << 30
_STACK_SIZE_LOCK = threading.Lock()  # threading.stack_size is process-wide: set, start the thread, restore


def _with_stack_for(where: str | None, call: Callable[[], _T]) -> _T:
    """`call()`, on a thread whose stack fits delta-rs's parse of `where` when it lists many values."""
    values = where.count(",") + 1 if where else 0  # >= the values listed (commas inside literals only add)
    if values <= LONG_PREDICATE_VALUES:
        return call()
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = exc

    with _STACK_SIZE_LOCK:
        previous = threading.stack_size(min(MAX_DEEP_STACK, max(MIN_DEEP_STACK, values * STACK_PER_VALUE)))
        try:
            worker = threading.Thread(target=run, name="delta-long-predicate")
            worker.start()
        finally:
            threading.stack_size(previous)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


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
    lease: bool = True,
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
        target, done = _open_for_write(location, _try_open(location, opts), table.schema, parts, opts, txn_items)
        if done:
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

    with optional_lease(location, take=lease):
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
    lease: bool = True,
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
        target, done = _open_for_write(location, _try_open(location, opts), table.schema, parts, opts, txn_items)
        if done:
            return CommitResult(version=target.version(), rows=0, skipped=True)
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

    with optional_lease(location, take=lease):
        return _with_stack_for(where, lambda: _retrying(location, "overwrite", attempt))


def delete(
    uri: str | os.PathLike[str],
    predicate: Predicate,
    *,
    metadata: Mapping[str, str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    lease: bool = True,
) -> int:
    """Delete the rows matching a SQL predicate or DNF filters; returns how many rows were deleted.

    One commit, written as a replace-where with no rows: it rewrites only the files holding matching rows, and
    with plain string types. (delta-rs's own delete writes `string_view` columns, delta-rs #4579, which PyArrow
    cannot filter; repairing them cost a second rewrite.) The matching rows are counted first, by delta-rs's
    scan; when there are none, nothing is committed. The commit is a WRITE (mode Overwrite) with the predicate,
    recorded as `shironzi.operation: delete` in its metadata."""
    location = _uri(uri)
    opts = _options(storage_options)
    where = _predicate_sql(predicate)
    props = _commit_properties({DELETE_OPERATION_KEY: "delete", **(metadata or {})}, [])

    def attempt() -> int:
        target = _open(location, opts)
        matching = _count_where(target, where)
        if matching:
            write_deltalake(target, pa.schema(target.schema().to_arrow()).empty_table(), mode="overwrite",
                            predicate=where, commit_properties=props)
        return matching

    with optional_lease(location, take=lease):
        return _with_stack_for(where, lambda: _retrying(location, "delete", attempt))


def _count_where(table: Any, where: str) -> int:
    """How many of the table's rows match `where`, counted by delta-rs's own scan (files and row groups whose
    statistics exclude the predicate are skipped)."""
    from deltalake import QueryBuilder

    counted = QueryBuilder().register("t", table).execute(f"SELECT count(*) AS n FROM t WHERE {where}").read_all()
    return int(pa.table(counted).column("n")[0].as_py() or 0)


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
    lease: bool = True,
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
        target, done = _open_for_write(location, _try_open(location, opts), source.schema, parts, opts, txn_items)
        if done:
            return MergeResult(version=target.version(), inserted=0, updated=0, skipped=True)
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

    with optional_lease(location, take=lease):
        return _retrying(location, "merge", attempt)
