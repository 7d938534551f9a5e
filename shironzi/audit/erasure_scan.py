"""Matching a data subject in values and scanning files for it: the lake's Parquet files read directly and
the `_delta_log` statistics (used by erasure, its verification and the MLflow artifact scan)."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from shironzi.lake.discovery import list_log_files, list_parquet_files, parquet_file, read_bytes, read_parquet
from shironzi.settings import get_settings

if TYPE_CHECKING:
    import pyarrow as pa

ErasureKind = Literal["subject", "tenant"]
T = TypeVar("T")
R = TypeVar("R")
RAW_PAYLOAD = "raw_payload"
_TOKENS = re.compile(r"[A-Za-z0-9_.@:+\-]+")


# --- matching ------------------------------------------------------------------------------------------


def platform_key() -> bytes:
    return get_settings().platform_key.get_secret_value().encode()


def subject_digest(tenant_id: str, value: str) -> str:
    """The keyed hash under which receipts name a subject (or its pseudonym) without revealing it."""
    return hmac.digest(platform_key(), f"{tenant_id}\x00{value}".encode(), hashlib.sha256).hex()


# A clear subject value made only of these (and not number-like) appears verbatim in any text that holds it: as
# itself, as a JSON string (nothing in it is escaped) or as a token. So a substring test, vectorised, safely skips
# the rows that cannot hold it before the exact per-value check.
_VERBATIM = re.compile(r"[A-Za-z0-9_.@:+\-]+")
_NUMBER_LIKE = re.compile(r"[0-9.eE+\-]+")


@dataclass(frozen=True)
class Matcher:
    """What counts as 'the subject' in a value: one of the digests, or (tenant mode) any tenant row.

    `values` are the subject's clear values (its id, pseudonym, PHI form) while its erasure runs, never stored:
    with them a file scan skips, vectorised, the rows that cannot hold the subject. A receipt's re-verification
    has only the digests and checks every row."""

    tenant_id: str
    kind: ErasureKind
    digests: frozenset[str] = frozenset()
    values: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def value_matches(self, value: str) -> bool:
        return self.kind == "subject" and subject_digest(self.tenant_id, value) in self.digests

    def verbatim_values(self) -> list[str] | None:
        """The clear values when every one is sure to appear verbatim in a text that holds it, else None."""
        if self.kind != "subject" or not self.values:
            return None
        if all(_VERBATIM.fullmatch(v) and not _NUMBER_LIKE.fullmatch(v) for v in self.values):
            return sorted(self.values)
        return None


def _json_values(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _json_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_values(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def text_values(text: str) -> set[str]:
    """The values a string holds: itself, its JSON values when it is JSON, else its word-like tokens."""
    found = {text}
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            found.update(_json_values(json.loads(stripped)))
            return found
        except ValueError:
            found.update(_TOKENS.findall(stripped))  # malformed JSON: whole tokens only, never substrings
    return found


def _claims_tenant(text: str | None, tenant_id: str) -> bool:
    return text is not None and tenant_id in text_values(text)


# --- scanning data files directly --------------------------------------------------------------------


def _partition_values(path: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in path.split("/") if "=" in part)


def _row_matches(row: dict[str, Any], matcher: Matcher, cache: dict[str, bool]) -> bool:
    """A row that belongs to the tenant (or, for quarantine, claims it) and mentions the subject."""
    tenant = row.get("tenant_id")
    claimed = tenant is None and _claims_tenant(row.get(RAW_PAYLOAD), matcher.tenant_id)
    if tenant != matcher.tenant_id and not claimed:
        return False
    if matcher.kind == "tenant":
        return True
    for name, value in row.items():
        if name == "tenant_id" or not isinstance(value, str):
            continue
        hit = cache.get(value)
        if hit is None:
            hit = cache[value] = any(matcher.value_matches(v) for v in text_values(value))
        if hit:
            return True
    return False


def _scan_rows(rows: list[dict[str, Any]], matcher: Matcher) -> int:
    """Rows that belong to the tenant (or, for quarantine, claim it) and mention the subject."""
    cache: dict[str, bool] = {}
    return sum(_row_matches(row, matcher, cache) for row in rows)


def subject_row_mask(table: pa.Table, matcher: Matcher) -> list[bool]:
    """For each row of an in-memory table with a `tenant_id` column: does it hold the subject (all False
    without that column: rows that name no tenant cannot be attributed)."""
    if "tenant_id" not in table.column_names:
        return [False] * table.num_rows
    strings = [f.name for f in table.schema if str(f.type) in _STRING_TYPES]
    cache: dict[str, bool] = {}
    columns = ["tenant_id", *(n for n in strings if n != "tenant_id")]
    return [_row_matches(row, matcher, cache) for row in table.select(columns).to_pylist()]


_STRING_TYPES = ("string", "large_string", "string_view")


def _tenant_row_groups(parquet: Any, tenant_id: str) -> list[int]:
    """The row groups of a file whose `tenant_id` statistics could hold the tenant (or null tenant ids)."""
    meta = parquet.metadata
    if not meta.num_row_groups:
        return []
    first = meta.row_group(0)
    index = next((j for j in range(first.num_columns) if first.column(j).path_in_schema == "tenant_id"), None)
    kept = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(index).statistics if index is not None else None
        if (stats is not None and stats.has_min_max and stats.has_null_count and stats.null_count == 0
                and _outside(tenant_id, stats.min, stats.max)):
            continue
        kept.append(i)
    return kept


def scan_file(path: str, matcher: Matcher) -> tuple[int, int]:
    """(rows scanned, matching rows) of one Parquet file read directly: its footer, then only its string columns
    of the row groups whose statistics could hold the tenant."""
    import pyarrow as pa
    import pyarrow.compute as pc

    partitions = _partition_values(path)
    with parquet_file(path) as parquet:
        total = parquet.metadata.num_rows
        schema = parquet.schema_arrow
        if "tenant_id" in schema.names:
            groups = _tenant_row_groups(parquet, matcher.tenant_id)
        elif partitions.get("tenant_id") == matcher.tenant_id:
            groups = list(range(parquet.metadata.num_row_groups))
        else:
            return total, 0
        if not groups:
            return total, 0
        table = parquet.read_row_groups(groups, columns=[f.name for f in schema if str(f.type) in _STRING_TYPES])
    views = {"string_view": pa.string(), "binary_view": pa.binary()}  # files rewritten by delta-rs, or by Sail
    if any(str(f.type) in views for f in table.schema):
        table = table.cast(pa.schema([f.with_type(views.get(str(f.type), f.type)) for f in table.schema]))
    if "tenant_id" not in table.column_names:
        table = table.append_column("tenant_id", pa.array([matcher.tenant_id] * table.num_rows, pa.string()))
    tenant = table.column("tenant_id")
    keep = pc.equal(tenant, matcher.tenant_id)
    if RAW_PAYLOAD in table.column_names:
        keep = pc.or_kleene(keep, pc.is_null(tenant))
    candidates = table.filter(pc.fill_null(keep, False))
    string_columns = [f.name for f in candidates.schema if str(f.type) in _STRING_TYPES]
    candidates = candidates.select(string_columns)
    if (verbatim := matcher.verbatim_values()) is not None and candidates.num_rows:
        mentions = None  # rows where some string column holds some clear value as a substring
        for column in (c for c in string_columns if c != "tenant_id"):
            for value in verbatim:
                hit = pc.fill_null(pc.match_substring(candidates.column(column), value), False)
                mentions = hit if mentions is None else pc.or_(mentions, hit)
        if mentions is None:  # no string column but the tenant's: nothing can name the subject
            return total, 0
        return total, _count_verbatim(candidates.filter(mentions), matcher, verbatim)
    return total, _scan_rows(candidates.to_pylist(), matcher)


def _count_verbatim(candidates: pa.Table, matcher: Matcher, verbatim: list[str]) -> int:
    """The tenant's rows (among rows that mention a clear subject value) that hold it, decided vectorised where
    that is exact: a string that is not JSON holds a value only as the whole string, so equality decides. A
    JSON-looking string that mentions a value, and a quarantined row (its tenant named only in its payload), get the
    per-value check."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not candidates.num_rows:
        return 0
    values = pa.array(verbatim, pa.string())
    equal = structured = None
    for name in (c for c in candidates.column_names if c != "tenant_id"):
        column = candidates.column(name)
        is_value = pc.fill_null(pc.is_in(column, value_set=values), False)
        # JSON-looking: holding a bracket anywhere, a superset of what text_values parses (stripped, it starts with
        # one), so no string that could hold a value inside it is decided by equality
        is_json = pc.fill_null(pc.or_(pc.match_substring(column, "{"), pc.match_substring(column, "[")), False)
        mentions = None  # a JSON string needs the check only if it holds a value somewhere
        for value in verbatim:
            hit = pc.fill_null(pc.match_substring(column, value), False)
            mentions = hit if mentions is None else pc.or_(mentions, hit)
        is_json = pc.and_(is_json, mentions)
        equal = is_value if equal is None else pc.or_(equal, is_value)
        structured = is_json if structured is None else pc.or_(structured, is_json)
    if equal is None or structured is None:
        return 0
    own = pc.fill_null(pc.equal(candidates.column("tenant_id"), matcher.tenant_id), False)
    sure = pc.and_(own, equal)
    unsure = pc.and_(pc.invert(sure), pc.or_(structured, pc.invert(own)))
    return int(pc.sum(sure).as_py() or 0) + _scan_rows(candidates.filter(unsure).to_pylist(), matcher)


SCAN_THREADS = 4  # files scanned at once: the Parquet reads and the Arrow kernels release the GIL


def map_in_threads(fn: Callable[[T], R], items: Sequence[T], *, threads: int, name: str) -> list[R]:
    """`fn` of each item, in order, `threads` at a time, each in a copy of the caller's context; the first error
    (in order) is raised once every call has ended."""
    if len(items) < 2 or threads < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        return [future.result() for future in futures]


def scan_files(paths: Sequence[str], matcher: Matcher) -> list[tuple[int, int]]:
    """`scan_file` of each path, in order, SCAN_THREADS files at a time."""
    return map_in_threads(lambda path: scan_file(path, matcher), paths, threads=SCAN_THREADS, name="shironzi-scan")


def _parsed_stats(action: dict[str, Any]) -> dict[str, Any]:
    stats = action.get("stats")
    if isinstance(stats, str) and stats:
        try:
            parsed: dict[str, Any] = json.loads(stats)
            return parsed
        except ValueError:
            return {}
    return {}


def _outside(tenant_id: str, low: Any, high: Any) -> bool:
    """Do a file's tenant_id bounds exclude the tenant? (Long string maxima may be truncated.)"""
    return (
        isinstance(low, str)
        and isinstance(high, str)
        and not low <= tenant_id <= high[: len(tenant_id)] + "\uffff"
    )


def may_hold_tenant(action: dict[str, Any] | None, tenant_id: str) -> bool:
    """Could the file an add action describes hold rows of the tenant (or, with null tenant_id, rows that
    claim it)? Judged from its tenant_id partition value and min/max/null-count statistics; a file the
    log does not describe could hold anything."""
    if not action:
        return True
    values = action.get("partitionValues") or {}
    partition = dict(values).get("tenant_id")  # a checkpoint holds the map as key/value pairs
    if partition is not None:
        return bool(partition == tenant_id)
    parsed = _parsed_stats(action)
    if (parsed.get("nullCount") or {}).get("tenant_id"):
        return True
    return not _outside(
        tenant_id, (parsed.get("minValues") or {}).get("tenant_id"), (parsed.get("maxValues") or {}).get("tenant_id")
    )


def candidate_files(table_uri: str, tenant_id: str) -> tuple[list[str], int]:
    """(the Parquet files under the table that may hold the tenant's rows, all Parquet files there): every
    physical file, referenced by the current version or not, kept unless the statistics its add action
    recorded in the log exclude the tenant."""
    from urllib.parse import unquote

    described: dict[str, dict[str, Any]] = {}
    for path in list_log_files(table_uri):
        for action in _log_actions(path):
            name = unquote(str(action.get("path", "")))
            if action.get("stats") or name not in described:  # a remove action may lack the add's stats
                described[name] = action
    root = table_uri.rstrip("/")
    files = list_parquet_files(table_uri)
    return [f for f in files if may_hold_tenant(described.get(f[len(root) + 1 :]), tenant_id)], len(files)


def _stats_values(action: dict[str, Any] | None, tenant_id: str) -> Iterable[str]:
    """The string values an action's statistics and partition values reveal (when its file could hold
    the tenant's rows, judged from its tenant_id min/max)."""
    if not action:
        return
    parsed = _parsed_stats(action)
    low = (parsed.get("minValues") or {}).get("tenant_id")
    high = (parsed.get("maxValues") or {}).get("tenant_id")
    if _outside(tenant_id, low, high):
        return
    for section in ("minValues", "maxValues"):
        yield from _json_values(parsed.get(section) or {})
    yield from _json_values(action.get("partitionValues") or {})


def _log_actions(path: str) -> Iterable[dict[str, Any]]:
    if path.endswith(".json"):
        for line in read_bytes(path).decode().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            for kind in ("add", "remove"):
                if entry.get(kind):
                    yield entry[kind]
    else:
        checkpoint = read_parquet(path)
        for kind in ("add", "remove"):
            if kind in checkpoint.column_names:
                yield from (a for a in checkpoint.column(kind).to_pylist() if a)


def scan_log(table_uri: str, matcher: Matcher) -> list[str]:
    """The `_delta_log` files whose file statistics (min/max, partition values) name the subject.

    Statistics of a file that still exists are derived from its data, which the direct file scan
    checks; so only statistics of files that are gone (stale stats in old commits, tombstones) count.
    """
    from urllib.parse import unquote

    if matcher.kind == "tenant":
        # Tenant ids in statistics are not personal data; tenant erasure removes the data files.
        return []
    root = table_uri.rstrip("/")
    existing = {p[len(root) + 1 :] for p in list_parquet_files(table_uri)}
    found = []
    for path in list_log_files(table_uri):
        for action in _log_actions(path):
            if unquote(str(action.get("path", ""))) in existing:
                continue
            if any(matcher.value_matches(v) for v in _stats_values(action, matcher.tenant_id)):
                found.append(Path(path).name)
                break
    return found
