"""Opening Delta tables and committing to them: idempotency markers (`Txn`), commit results, table
creation with the lake's defaults, retries of conflicting commits and the mapping of delta-rs errors."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError, SchemaMismatchError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from shironzi.errors import (
    CommitConflictError,
    InvalidInputError,
    InvalidStateError,
    LakeError,
    ServiceUnavailableError,
    ShironziError,
    TableNotFoundError,
)
from shironzi.lake.fencing import check_fence
from shironzi.settings import get_settings

logger = logging.getLogger("shironzi.lake")

CHECKPOINT_INTERVAL = 100
"""New tables write a log checkpoint at least this often (commits)."""
MAX_COMMIT_ATTEMPTS = 8
TENANT_COLUMN = "tenant_id"

TableData = Any  # pyarrow.Table | pyarrow.RecordBatch | polars.DataFrame
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


def _uri(uri: str | os.PathLike[str]) -> str:
    text = os.fspath(uri)
    if not text or not str(text).strip():
        raise InvalidInputError("a table URI is required")
    return str(text).rstrip("/") if "://" in text else str(Path(text).expanduser())


def _options(storage_options: Mapping[str, str] | None) -> dict[str, str] | None:
    if storage_options is None:
        storage_options = get_settings().storage_options
    return dict(storage_options) or None


def _not_found(uri: str) -> TableNotFoundError:
    return TableNotFoundError(f"no Delta table at {uri}", uri=uri)


# How object_store reports a store it cannot reach (after its own retries).
_UNREACHABLE_STORE = ("error sending request", "connection refused", "connection reset", "operation timed out",
                      "dns error", "failed to lookup address", "connection closed", "incomplete message",
                      "error trying to connect")


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
    if any(s in text.lower() for s in _UNREACHABLE_STORE):
        reason = re.sub(r"\x1b\[[0-9;]*m", "", text.strip().splitlines()[-1]).strip(" \u21b3") or message
        return ServiceUnavailableError(
            f"{action} on {uri} failed: the object store is unreachable ({reason[:160]}); a rerun resumes", uri=uri
        )
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
    except (DeltaError, OSError) as exc:  # delta-rs raises OSError for object-store I/O
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


def _open_for_write(
    location: str, target: DeltaTable | None, schema: pa.Schema, parts: list[str] | None,
    opts: dict[str, str] | None, txns: list[Txn],
) -> tuple[DeltaTable, bool]:
    """The table a write commits to (`target`, the table opened at its latest version, or a new one) and
    whether every txn is already recorded there, so that nothing is to be written. Checked again after a
    create: a concurrent creator may have committed the same txn first."""
    if target is None:
        target = _create(location, schema, parts, opts)
    return target, _already_committed(target, txns, location)


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
        check_fence(uri)
        try:
            return attempt_commit()
        except CommitFailedError as exc:
            last = exc
            logger.debug("commit conflict on %s (%s), attempt %d", uri, action, attempt + 1)
            time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
        except ShironziError:
            raise
        except (DeltaError, OSError, ValueError, TypeError, pa.ArrowException) as exc:
            raise _lake_error(exc, uri, action) from exc
    assert last is not None
    raise CommitConflictError(
        f"{action} on {uri} kept conflicting after {MAX_COMMIT_ATTEMPTS} attempts: {last}", uri=uri
    ) from last
