"""The lake: Delta table paths, reads and writes, and maintenance.

`import shironzi.lake` stays light: the delta-rs/pyarrow backed functions load on first use.

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
        read_polars,
        scan_polars,
        stage_files,
        table_exists,
        table_version,
        txn_version,
    )
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
    "open_table", "overwrite", "read_arrow", "read_polars", "scan_polars", "stage_files",
    "table_exists", "table_version", "txn_version",
)  # fmt: skip
_MAINTENANCE_NAMES = ("checkpoint", "cleanup_metadata", "compact", "optimize", "run_maintenance", "vacuum")
_LAZY: dict[str, str] = {
    **dict.fromkeys(_DELTA_NAMES, "shironzi.lake.delta"),
    **dict.fromkeys(_MAINTENANCE_NAMES, "shironzi.lake.maintenance"),
}

__all__ = [
    "CHECKPOINT_INTERVAL", "LAYERS", "CommitResult", "Layer", "MergeResult", "Placement", "StagedFiles", "Txn",
    "add_actions", "append", "checkpoint", "cleanup_metadata", "cluster_by_tenant", "commit_staged", "compact",
    "delete",
    "files_touched", "filters_to_sql", "history", "merge", "open_table", "optimize", "overwrite",
    "platform_uri", "read_arrow", "read_polars", "run_maintenance", "scan_polars", "stage_files", "table_exists",
    "table_uri", "table_version", "txn_version", "vacuum",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
