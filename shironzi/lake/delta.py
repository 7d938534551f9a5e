"""Delta Lake I/O for every layer: idempotent appends, merges, scoped overwrites, deletes and
pushed-down reads over local paths or object-store URIs (delta-rs `storage_options`).

Writers cluster rows by `tenant_id` so per-file min/max statistics let readers skip other
tenants' files, and new tables checkpoint their log at least every `CHECKPOINT_INTERVAL` commits.

This module is the one import path for callers; the code lives in `tables` (opening and committing),
`predicates` (filters), `writes`, `staged` (data files written first, committed later in one transaction),
`reads` and `table_log` (history, live files, file pruning).
"""

from __future__ import annotations

from shironzi.lake.predicates import (
    Filter,
    FilterOp,
    Filters,
    Predicate,
    filters_to_sql,
    normalize_filters,
    sql_literal,
)
from shironzi.lake.reads import (
    open_table,
    read_arrow,
    read_batches,
    read_polars,
    scan_polars,
    table_exists,
    table_version,
    txn_version,
)
from shironzi.lake.staged import StagedFiles, commit_staged, stage_files
from shironzi.lake.table_log import add_actions, files_touched, history
from shironzi.lake.tables import (
    CHECKPOINT_INTERVAL,
    MAX_COMMIT_ATTEMPTS,
    TENANT_COLUMN,
    CommitResult,
    MergeResult,
    TableData,
    Txn,
    _try_open,
    cluster_by_tenant,
)
from shironzi.lake.writes import append, delete, merge, overwrite

__all__ = [
    "CHECKPOINT_INTERVAL", "MAX_COMMIT_ATTEMPTS", "TENANT_COLUMN", "CommitResult", "Filter", "FilterOp",
    "Filters", "MergeResult", "Predicate", "StagedFiles", "TableData", "Txn", "_try_open", "add_actions", "append",
    "cluster_by_tenant", "commit_staged", "delete", "files_touched", "filters_to_sql", "history", "merge",
    "normalize_filters", "open_table", "overwrite", "read_arrow", "read_batches", "read_polars", "scan_polars",
    "sql_literal", "stage_files", "table_exists", "table_version", "txn_version",
]  # fmt: skip
