"""The lake: Delta table paths, reads and writes, maintenance, table leases and table discovery.

`import shironzi.lake` stays light: the delta-rs/pyarrow backed functions load on first use.

Object stores take the same code path as local tables (`SHIRONZI_STORAGE_OPTIONS` is passed to every call).
Concurrent commits are safe there without a lock service: delta-rs writes each `_delta_log/<version>.json`
with a conditional put (`If-None-Match: *` on S3), so of two writers racing for one version exactly one
wins and the other re-reads the log and retries at the next version. AWS S3, MinIO, Cloudflare R2 and the
moto server of the tests support conditional writes; never set `AWS_S3_ALLOW_UNSAFE_RENAME`, which turns
the check off. A store without conditional writes needs delta-rs's DynamoDB log store instead
(`AWS_S3_LOCKING_PROVIDER=dynamodb`, `DELTA_DYNAMO_TABLE_NAME` in the storage options; not exercised here).

    from shironzi.lake import Txn, append, read_arrow, table_uri
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shironzi.lake.paths import LAYERS, Layer, Placement, platform_uri, table_uri
from shironzi.lazy import lazy_attribute

if TYPE_CHECKING:
    from shironzi.lake.delta import (
        CHECKPOINT_INTERVAL,
        CommitResult,
        MergeResult,
        StagedFiles,
        Txn,
        add_actions,
        append,
        cluster_by_tenant,
        commit_staged,
        delete,
        files_touched,
        filters_to_sql,
        history,
        merge,
        open_table,
        overwrite,
        read_arrow,
        read_batches,
        read_polars,
        scan_polars,
        stage_files,
        table_exists,
        table_version,
        txn_version,
    )
    from shironzi.lake.discovery import LakeTable, discover_tables, lake_filesystem
    from shironzi.lake.leases import table_lease
    from shironzi.lake.maintenance import (
        checkpoint,
        cleanup_metadata,
        compact,
        optimize,
        run_maintenance,
        vacuum,
    )

_DELTA_NAMES = (
    "CHECKPOINT_INTERVAL", "CommitResult", "MergeResult", "StagedFiles", "Txn", "add_actions", "append",
    "cluster_by_tenant", "commit_staged", "delete", "files_touched", "filters_to_sql", "history", "merge",
    "open_table", "overwrite", "read_arrow", "read_batches", "read_polars", "scan_polars", "stage_files",
    "table_exists", "table_version", "txn_version",
)  # fmt: skip
_MAINTENANCE_NAMES = ("checkpoint", "cleanup_metadata", "compact", "optimize", "run_maintenance", "vacuum")
_LAZY: dict[str, str] = {
    **dict.fromkeys(("LakeTable", "discover_tables", "lake_filesystem"), "shironzi.lake.discovery"),
    "table_lease": "shironzi.lake.leases",
    **dict.fromkeys(_DELTA_NAMES, "shironzi.lake.delta"),
    **dict.fromkeys(_MAINTENANCE_NAMES, "shironzi.lake.maintenance"),
}

__all__ = [
    "CHECKPOINT_INTERVAL", "LAYERS", "CommitResult", "LakeTable", "Layer", "MergeResult", "Placement",
    "StagedFiles", "Txn", "add_actions", "append", "checkpoint", "cleanup_metadata", "cluster_by_tenant",
    "commit_staged", "compact", "delete", "discover_tables", "files_touched", "filters_to_sql", "history",
    "lake_filesystem", "merge", "open_table", "optimize", "overwrite", "platform_uri", "read_arrow",
    "read_batches", "read_polars", "run_maintenance", "scan_polars", "stage_files", "table_exists", "table_lease",
    "table_uri", "table_version", "txn_version", "vacuum",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
