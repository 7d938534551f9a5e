"""A table's log and layout: commit history, the live files (add actions) and which files a filter may
touch, judged from their partition values and min/max statistics."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pyarrow as pa

from shironzi.lake.predicates import Filter, Filters, _check_filter_columns, _table_column_names, normalize_filters
from shironzi.lake.tables import _open, _options, _uri

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
