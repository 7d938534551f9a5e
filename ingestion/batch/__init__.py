"""Batch connectors: landing files (CSV, JSONL, Parquet) with a processed-file manifest, and SQL tables
with an incremental watermark. Both land through `ingestion.bronze.BronzeLander`, exactly once.

    from ingestion.batch import ingest_files, ingest_sql
"""

from ingestion.batch.files import (
    BatchRunResult,
    LandingFile,
    discover_files,
    ingest_files,
    manifest_uri,
    processed_files,
)
from ingestion.batch.sql import current_watermark, ingest_sql, watermarks_uri

__all__ = [
    "BatchRunResult",
    "LandingFile",
    "current_watermark",
    "discover_files",
    "ingest_files",
    "ingest_sql",
    "manifest_uri",
    "processed_files",
    "watermarks_uri",
]
