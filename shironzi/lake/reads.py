"""Delta reads: existence, versions and txn markers, and pushed-down reads into Arrow or polars."""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from shironzi.errors import (
    InvalidInputError,
)
from shironzi.lake.discovery import table_filesystem
from shironzi.lake.predicates import Filter, Filters, _check_filter_columns, _table_column_names, normalize_filters
from shironzi.lake.tables import _lake_error, _open, _options, _try_open, _uri

if TYPE_CHECKING:
    import polars as pl


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


atexit.register(gc.collect)  # clears a delta-rs filesystem cycle left by other code (see `table_filesystem`)


def _pruned_dataset(
    uri: str | os.PathLike[str],
    *,
    filters: Filters | None,
    tenant_id: str | None,
    version: int | None,
    storage_options: Mapping[str, str] | None,
    wanted: Sequence[Sequence[str] | None],
) -> tuple[str, list[list[Filter]], Any]:
    """(location, filters in DNF, the table's Arrow dataset with its files pruned by those filters' partition values
    and min/max stats), once the filters' columns and each of the `wanted` column lists are known to exist."""
    location = _uri(uri)
    options = _options(storage_options)
    target = _open(location, options, version)
    dnf = normalize_filters(filters, tenant_id)
    names = _table_column_names(target)
    _check_filter_columns(dnf, names, location)
    for columns in wanted:
        unknown = [c for c in columns or () if c not in names]
        if unknown:
            raise InvalidInputError(f"columns {unknown} are not in table {location}", uri=location)
    try:
        dataset = target.to_pyarrow_dataset(
            file_pruning_predicate=dnf or None,  # type: ignore[arg-type]
            filesystem=table_filesystem(location, storage_options=options),
        )
    except (DeltaError, OSError, pa.ArrowException, ValueError, TypeError) as exc:
        raise _lake_error(exc, location, "read") from exc
    return location, dnf, dataset


def read_arrow(
    uri: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    tenant_id: str | None = None,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
    among: pa.Table | None = None,
) -> pa.Table:
    """Read a table (or one version) into Arrow, pruning files by partition values and min/max stats.

    `among`: keep only the rows whose values of its columns are one of its rows (a semi join). It is applied batch
    by batch as the table is scanned, so memory follows the rows kept, not the rows read: training reads the
    sampled customers' feature rows out of tens of millions this way."""
    from pyarrow.parquet import filters_to_expression

    location, dnf, dataset = _pruned_dataset(uri, filters=filters, tenant_id=tenant_id, version=version,
                                             storage_options=storage_options,
                                             wanted=(columns, among.column_names if among is not None else None))
    try:
        selected = list(columns) if columns is not None else None
        expression = filters_to_expression(dnf) if dnf else None
        if among is not None:
            return _read_among(dataset, selected, dnf, expression, among)
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
    except (DeltaError, OSError, pa.ArrowException, ValueError, TypeError) as exc:
        raise _lake_error(exc, location, "read") from exc


# A streamed scan reads one file at a time, a couple of batches ahead (pyarrow's defaults, 4 files and 16 batches
# ahead, hold a good part of a large table in memory before its consumer has seen it).
_STREAMING = {"fragment_readahead": 1, "batch_readahead": 2}


def read_batches(
    uri: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    version: int | None = None,
    storage_options: Mapping[str, str] | None = None,
    batch_rows: int = 1 << 17,
) -> pa.RecordBatchReader:
    """The table (or one version) as a stream of Arrow batches, for a consumer that aggregates as it reads (DuckDB
    takes a reader as a table): files are pruned by partition values and min/max stats, and each batch is cast to
    plain string types, then filtered, so files that delta-rs left with string_view columns stream too."""
    from pyarrow.parquet import filters_to_expression

    _, dnf, dataset = _pruned_dataset(uri, filters=filters, tenant_id=None, version=version,
                                      storage_options=storage_options, wanted=(columns,))
    selected = list(columns) if columns is not None else dataset.schema.names
    read = list(dict.fromkeys([*selected, *(f[0] for group in dnf for f in group)]))
    expression = filters_to_expression(dnf) if dnf else None
    scanner = dataset.scanner(columns=read, batch_size=batch_rows, **_STREAMING)
    schema = _without_views(scanner.projected_schema.empty_table()).select(selected).schema

    def batches() -> Any:
        for batch in scanner.to_batches():
            rows = _without_views(pa.Table.from_batches([batch]))
            if expression is not None:
                rows = rows.filter(expression)
            yield from rows.select(selected).cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


# Rows per scanned batch of a read `among` given keys: each batch is joined against the keys, then dropped.
AMONG_BATCH_ROWS = 1 << 20


def _read_among(dataset: Any, selected: list[str] | None, dnf: list[list[Filter]], expression: Any,
                among: pa.Table) -> pa.Table:
    """The dataset's rows (filtered by `expression`) whose `among` columns match a row of `among`, scanned batch by
    batch. Files rewritten by delta-rs may hold string_view columns, which Arrow's filter kernels do not support:
    then each batch is cast to plain strings first and filtered after."""
    keys = among.column_names
    wanted = None if selected is None else list(dict.fromkeys([*selected, *keys]))

    def scan(columns: list[str] | None, pushed: Any) -> pa.Table:
        scanner = dataset.scanner(columns=columns, filter=pushed, batch_size=AMONG_BATCH_ROWS, **_STREAMING)
        kept, match = [], None
        for batch in scanner.to_batches():
            if batch.num_rows:
                rows = _without_views(pa.Table.from_batches([batch]))
                if pushed is None and expression is not None:
                    rows = rows.filter(expression)
                if match is None:  # the keys in the table's own types (a join needs them equal)
                    match = among.cast(pa.schema([pa.field(k, rows.schema.field(k).type) for k in keys]))
                kept.append(rows.join(match, keys, join_type="left semi"))
        if not kept:
            return _without_views(scanner.projected_schema.empty_table())
        return pa.concat_tables(kept)

    try:
        table = scan(wanted, expression)
    except pa.ArrowNotImplementedError:
        table = scan(None if wanted is None else sorted(set(wanted) | {f[0] for group in dnf for f in group}), None)
    return table.select(selected) if selected is not None else table


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
