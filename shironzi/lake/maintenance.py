"""Table maintenance: z-order/compaction, log checkpoints, metadata cleanup and vacuum.

Run by the maintenance DAG and `shironzi lake ...`; each function logs one stage summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from deltalake.exceptions import DeltaError

from shironzi.errors import InvalidInputError
from shironzi.lake.leases import optional_lease
from shironzi.lake.predicates import Filter, _table_column_names
from shironzi.lake.tables import TENANT_COLUMN, _lake_error, _open, _options, _retrying, _uri
from shironzi.observability import stage

DEFAULT_ZORDER: tuple[str, ...] = (TENANT_COLUMN,)
DEFAULT_RETENTION_HOURS = 168


def _metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "files_added": int(metrics.get("numFilesAdded", 0) or 0),
        "files_removed": int(metrics.get("numFilesRemoved", 0) or 0),
        "partitions_optimized": int(metrics.get("partitionsOptimized", 0) or 0),
        "strategy": metrics.get("plannerStrategy"),
    }


def optimize(
    uri: str | os.PathLike[str],
    *,
    zorder_by: Sequence[str] | None = DEFAULT_ZORDER,
    partition_filters: Sequence[Filter] | None = None,
    target_size: int | None = None,
    storage_options: Mapping[str, str] | None = None,
    lease: bool = True,
) -> dict[str, Any]:
    """Rewrite small files into larger ones z-ordered by `zorder_by` (default `tenant_id`), so tenant
    reads skip more files. The default falls back to plain compaction on tables without `tenant_id`;
    an empty `zorder_by` compacts. Returns files added/removed and delta-rs's metrics."""
    location = _uri(uri)
    opts = _options(storage_options)
    with stage("lake.optimize", table=location) as summary:
        target = _open(location, opts)
        names = _table_column_names(target)
        partitions = set(target.metadata().partition_columns)
        columns = list(zorder_by or ())
        if tuple(columns) == DEFAULT_ZORDER and TENANT_COLUMN not in names:
            columns = []
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise InvalidInputError(f"z-order columns {unknown} are not in table {location}", uri=location)
        in_partitions = [c for c in columns if c in partitions]
        if in_partitions:
            raise InvalidInputError(f"cannot z-order by partition columns {in_partitions}", uri=location)

        def attempt() -> dict[str, Any]:
            handle = _open(location, opts)
            filters = list(partition_filters) if partition_filters else None
            if columns:
                return handle.optimize.z_order(columns, partition_filters=filters, target_size=target_size)
            return handle.optimize.compact(partition_filters=filters, target_size=target_size)

        with optional_lease(location, take=lease):  # a rewrite writes files before it commits them
            metrics = _retrying(location, "optimize", attempt)
        result = {**_metrics_summary(metrics), "zorder_by": columns, "metrics": dict(metrics)}
        summary.table_version = _open(location, opts).version()
        summary.rows = result["files_removed"]
        summary.extra.update(
            files_added=result["files_added"], files_removed=result["files_removed"], zorder_by=columns
        )
        result["version"] = summary.table_version
        return result


def compact(
    uri: str | os.PathLike[str],
    *,
    partition_filters: Sequence[Filter] | None = None,
    target_size: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Bin-pack small files without reordering rows."""
    return optimize(
        uri,
        zorder_by=(),
        partition_filters=partition_filters,
        target_size=target_size,
        storage_options=storage_options,
    )


def vacuum(
    uri: str | os.PathLike[str],
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    enforce_retention_duration: bool = True,
    storage_options: Mapping[str, str] | None = None,
    lease: bool = True,
) -> list[str]:
    """Delete data files no longer referenced by versions younger than `retention_hours`; returns them.

    A retention below the table's `delta.deletedFileRetentionDuration` (7 days by default) is refused
    unless `enforce_retention_duration=False`, because readers of older versions still need those files.
    Holds the table's exclusive lease (unless `lease=False`), so no writer's uncommitted files are deleted.
    """
    if retention_hours < 0:
        raise InvalidInputError("retention_hours must be >= 0")
    location = _uri(uri)
    opts = _options(storage_options)
    with stage("lake.vacuum", table=location, dry_run=dry_run) as summary:
        with optional_lease(location, take=lease, mode="exclusive"):
            target = _open(location, opts)
            try:
                removed = target.vacuum(
                    retention_hours=retention_hours,
                    dry_run=dry_run,
                    enforce_retention_duration=enforce_retention_duration,
                )
            except (DeltaError, ValueError) as exc:
                raise _lake_error(exc, location, "vacuum") from exc
        summary.rows = len(removed)
        summary.table_version = (
            _open(location, opts).version() if removed and not dry_run else target.version()
        )
        summary.extra["retention_hours"] = retention_hours
        return list(removed)


def checkpoint(uri: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None) -> int:
    """Write a log checkpoint at the current version (so opening the table replays no JSON commits)."""
    location = _uri(uri)
    with stage("lake.checkpoint", table=location) as summary:
        target = _open(location, _options(storage_options))
        try:
            target.create_checkpoint()
        except DeltaError as exc:
            raise _lake_error(exc, location, "checkpoint") from exc
        summary.table_version = target.version()
        return target.version()


def cleanup_metadata(uri: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None) -> int:
    """Remove log entries older than `delta.logRetentionDuration` that a checkpoint has superseded."""
    location = _uri(uri)
    with stage("lake.cleanup_metadata", table=location) as summary:
        target = _open(location, _options(storage_options))
        try:
            target.cleanup_metadata()
        except DeltaError as exc:
            raise _lake_error(exc, location, "cleanup metadata") from exc
        summary.table_version = target.version()
        return target.version()


def run_maintenance(
    uri: str | os.PathLike[str],
    *,
    zorder_by: Sequence[str] | None = DEFAULT_ZORDER,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    enforce_retention_duration: bool = True,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Optimize (z-order), checkpoint, then vacuum; returns what each step did."""
    location = _uri(uri)
    with stage("lake.maintenance", table=location) as summary:
        optimized = optimize(location, zorder_by=zorder_by, storage_options=storage_options)
        checkpointed = checkpoint(location, storage_options=storage_options)
        removed = vacuum(
            location,
            retention_hours=retention_hours,
            enforce_retention_duration=enforce_retention_duration,
            storage_options=storage_options,
        )
        final_version = _open(location, _options(storage_options)).version()
        summary.table_version = final_version
        summary.rows = len(removed)
        result = {
            "table": location,
            "version": final_version,
            "optimize": {k: v for k, v in optimized.items() if k != "metrics"},
            "checkpoint_version": checkpointed,
            "vacuumed_files": len(removed),
        }
        summary.extra.update(
            files_added=optimized["files_added"],
            files_removed=optimized["files_removed"],
            vacuumed_files=len(removed),
        )
        return result
