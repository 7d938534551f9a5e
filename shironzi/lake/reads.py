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
    options = _options(storage_options)
    target = _open(location, options, version)
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
            filesystem=table_filesystem(location, storage_options=options),
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
    except (DeltaError, OSError, pa.ArrowException, ValueError, TypeError) as exc:
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
