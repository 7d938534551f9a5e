"""Row filters: pyarrow-style DNF filters, their tenant scoping and their rendering as delta-rs SQL."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
from deltalake import DeltaTable

from shironzi.errors import (
    InvalidInputError,
)
from shironzi.lake.tables import TENANT_COLUMN

FilterOp = Literal["=", "==", "!=", "<", "<=", ">", ">=", "in", "not in"]
Filter = tuple[str, str, Any]
Filters = Sequence[Filter] | Sequence[Sequence[Filter]]
"""deltalake/pyarrow DNF: a flat list is an AND; a list of lists is an OR of ANDs."""
Predicate = str | Filters

_OPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in"})


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
