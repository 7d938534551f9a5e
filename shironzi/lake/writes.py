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
from shironzi.lake.reads import read_arrow
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

    with optional_lease(location, take=lease):
        deleted, before = _with_stack_for(where, lambda: _retrying(location, "delete", attempt))
        if deleted:
            _rewrite_view_files(location, opts, since_version=before, metadata=metadata)
    return deleted


def _has_view_columns(path: str) -> bool:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    return any(pa.types.is_string_view(f.type) or pa.types.is_binary_view(f.type) for f in schema)


def _tenant_bounds(action: Mapping[str, Any]) -> tuple[str, str] | None:
    """A file's tenant_id range from its add action's statistics, when they bound every row (no nulls)."""
    low, high = action.get("min.tenant_id"), action.get("max.tenant_id")
    if isinstance(low, str) and isinstance(high, str) and action.get("null_count.tenant_id") == 0:
        return low, high
    return None


def _tenant_span(rewritten: Sequence[Mapping[str, Any]], peers: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The tenant_id range [low, high] that covers the rewritten files and every peer file it overlaps, widened
    until no peer straddles it: a replace-where over it then drops whole files and rewrites none. None when some
    file's statistics do not bound its tenants."""
    spans = [_tenant_bounds(a) for a in rewritten]
    peer_spans = [_tenant_bounds(a) for a in peers]
    if any(s is None for s in spans) or any(s is None for s in peer_spans):
        return None
    low = min(s[0] for s in spans if s)
    high = max(s[1] for s in spans if s)
    grown = True
    while grown:
        grown = False
        for peer_low, peer_high in (s for s in peer_spans if s):
            if peer_low <= high and peer_high >= low and (peer_low < low or peer_high > high):
                low, high, grown = min(low, peer_low), max(high, peer_high), True
    return low, high


def _rows_where(table: Any, selector: list[tuple[str, str, Any]]) -> pa.Table:
    """The table's rows matching `selector`, read by delta-rs itself (its scan filters string_view columns, which
    PyArrow cannot), in the table's own schema with plain string types."""
    from deltalake import QueryBuilder

    where = _predicate_sql(selector)
    rows = pa.table(QueryBuilder().register("t", table).execute(f"SELECT * FROM t WHERE {where}").read_all())
    schema = pa.schema(table.schema().to_arrow())
    return rows.select(schema.names).cast(schema)


def _rewrite_view_files(
    location: str,
    opts: dict[str, str] | None,
    *,
    since_version: int,
    metadata: Mapping[str, str] | None,
    by_tenant_span: bool = True,
) -> None:
    """delta-rs delete rewrites files with string_view columns (delta-rs #4579), which PyArrow cannot filter
    and so breaks later pushed-down reads (dbt sources, features). Rewrite them with plain string types:
    within each partition, only the tenant_id span of those files, widened to whole files (so an erasure
    rewrites the files around the subject's tenant, not the table or the day); where statistics cannot bound it,
    the whole partition (or the unpartitioned table). Local lakes only: object stores keep the delta-rs files
    as written."""
    if "://" in location and not location.startswith("file://"):
        return
    current = _open(location, opts)
    previous = set(_open(location, opts, since_version).file_uris())
    new_files = [f for f in current.file_uris() if f not in previous]
    suspicious = [f for f in new_files if _has_view_columns(f.removeprefix("file://"))]
    if not suspicious:
        return
    partition_by = current.metadata().partition_columns
    if not partition_by and not by_tenant_span:
        overwrite(location, read_arrow(location, storage_options=opts), metadata=metadata, storage_options=opts,
                  lease=False)
        return
    actions = pa.table(current.get_add_actions(flatten=True)).to_pylist()
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for uri in suspicious:
        action = next((a for a in actions if uri.endswith(a["path"])), None)
        if action is not None:
            groups.setdefault(tuple(action.get(f"partition.{c}") for c in partition_by), []).append(action)
    before = current.version()
    for values, rewritten in sorted(groups.items(), key=lambda item: repr(item[0])):
        selector = [(col, "=", value) for col, value in zip(partition_by, values, strict=True)]
        peers = [a for a in actions if tuple(a.get(f"partition.{c}") for c in partition_by) == values]
        span = _tenant_span(rewritten, peers) if by_tenant_span else None
        if span is not None:
            selector += [("tenant_id", ">=", span[0]), ("tenant_id", "<=", span[1])]
            rows = _rows_where(current, selector)
        elif partition_by:
            rows = read_arrow(location, filters=selector, storage_options=opts)
        else:
            rows = read_arrow(location, storage_options=opts)
        overwrite(location, rows, partition_by=partition_by or None, predicate=selector or None, metadata=metadata,
                  storage_options=opts, lease=False)
    if by_tenant_span:  # a span the statistics got wrong (a truncated maximum) left a rewritten file behind
        _rewrite_view_files(location, opts, since_version=before, metadata=metadata, by_tenant_span=False)


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
