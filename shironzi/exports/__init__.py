"""The `data_export` module: exports of a tenant's own gold marts and predictions as Parquet or CSV files.

    record = request_export(ctx, tenant_id, table="churn_scores", start=date(2026, 1, 1),
                            end=date(2026, 1, 31), fmt="parquet")
    run_export(record.id)          # the API runs it on a background thread; `shironzi exports run` too
    expire_exports()               # nightly (lake_maintenance): files past expiry are deleted
"""

from __future__ import annotations

from shironzi.exports.jobs import (
    EXPORT_TABLES,
    ExpiryResult,
    ExportFormat,
    ExportRecord,
    ExportTableName,
    download_url,
    expire_exports,
    get_export,
    list_exports,
    ready_export,
    request_export,
    run_export,
    run_in_background,
    stream_file,
    tenant_rows,
)

__all__ = [
    "EXPORT_TABLES", "ExportFormat", "ExportRecord", "ExportTableName", "ExpiryResult", "download_url",
    "expire_exports", "get_export", "list_exports", "ready_export", "request_export", "run_export",
    "run_in_background", "stream_file", "tenant_rows",
]  # fmt: skip
