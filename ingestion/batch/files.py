"""The file connector: CSV, JSONL and Parquet landing files -> bronze, idempotent through a processed-file
manifest.

* A file is identified by its path relative to the landing root and its SHA-256: a file already in the
  manifest with the same checksum is skipped; a changed file (same path, new checksum) is landed again
  and bronze's key dedup drops the events it already holds.
* Crash safety: every data commit carries a txn `shironzi-batch-<sha(path+checksum)[:16]>` at version 1
  per file, and the manifest rows are committed LAST with the same txns. A crash between the two is
  repaired on the next run: each table drops the rows of files whose txn it already records.
* Several small files are landed together (one commit per table per flush of about `flush_rows` rows).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
import pyarrow as pa

from ingestion.bronze import (
    SEQ_COLUMN,
    UNIT_COLUMN,
    BronzeLander,
    LandingBatch,
    Ledger,
    Reconciliation,
    records_keys,
    run_log_row,
    run_log_uri,
)
from ingestion.contracts import decode_json_records
from ingestion.quality import PrecommitCheck
from shironzi.errors import InvalidInputError, NotFoundError
from shironzi.lake import append, read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    from shironzi.tenancy.records import TenantInfo

FileFormat = Literal["csv", "jsonl", "parquet", "sql"]  # "sql": a query result (`ingest import --sql`)
EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
DEFAULT_FLUSH_ROWS = 250_000

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("checksum", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("app_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("landed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def manifest_uri(settings: Settings | None = None) -> str:
    """The processed-file manifest (one row per landed file version)."""
    return platform_uri((settings or get_settings()).resolved_lake_uri, "ingest", "manifest")


@dataclass(frozen=True)
class LandingFile:
    """One file found under the landing root."""

    path: Path
    relative: str
    format: FileFormat
    size_bytes: int
    checksum: str

    @property
    def app_id(self) -> str:
        return file_app_id(self.relative, self.checksum)


def file_app_id(relative: str, checksum: str) -> str:
    """The Delta txn app id of one version of one landing file."""
    return "shironzi-batch-" + hashlib.sha256(f"{relative}\0{checksum}".encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def discover_files(source: str | Path) -> tuple[Path, list[LandingFile]]:
    """The landing root and every CSV/JSONL/Parquet file under it (or the one file given), sorted by path."""
    root = Path(source).expanduser()
    if not root.exists():
        raise NotFoundError(f"landing path {str(root)!r} does not exist", path=str(root))
    if root.is_file():
        paths, base = [root], root.parent
    else:
        paths, base = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")), root
    files = []
    for path in paths:
        fmt = EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            if root.is_file():
                raise InvalidInputError(
                    f"unsupported landing file {path.name!r}: use .csv, .jsonl or .parquet"
                )
            continue
        files.append(
            LandingFile(path, path.relative_to(base).as_posix(), fmt, path.stat().st_size, _sha256(path))
        )
    return base, files


def processed_files(settings: Settings | None = None) -> set[tuple[str, str]]:
    """(relative path, checksum) of every file version the manifest records."""
    uri = manifest_uri(settings)
    if not table_exists(uri):
        return set()
    frame = read_polars(uri, columns=["path", "checksum"])
    return set(frame.iter_rows())


@dataclass
class RawFile:
    """One landing file read but not validated: JSONL lines, or a CSV/Parquet frame; `position` per row."""

    file: LandingFile
    rows: int
    lines: list[bytes] | None = None
    frame: pl.DataFrame | None = None


def read_raw(file: LandingFile) -> RawFile:
    """Read one file; a file that cannot be parsed is one clear InvalidInputError (nothing is landed)."""
    try:
        if file.format == "jsonl":
            lines = file.path.read_bytes().splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            return RawFile(file, len(lines), lines=lines)
        read = pl.read_parquet if file.format == "parquet" else partial(pl.read_csv, infer_schema=False)
        frame = read(file.path)
    except Exception as exc:  # polars/pyarrow parse errors
        raise InvalidInputError(
            f"cannot read landing file {file.relative!r} as {file.format}: {exc}", path=file.relative
        ) from exc
    positions = pl.lit(f"{file.relative}:") + pl.int_range(1, frame.height + 1).cast(pl.String)
    return RawFile(file, frame.height, frame=frame.with_columns(positions.alias("position")))


def _origins(raws: list[RawFile]) -> pl.DataFrame:
    """`position, _unit, _seq` for every row of these files (vectorised: files can hold millions of rows)."""
    parts = [
        pl.DataFrame({"_line": pl.int_range(1, r.rows + 1, eager=True, dtype=pl.Int64)}).select(
            (pl.lit(f"{r.file.relative}:") + pl.col("_line").cast(pl.String)).alias("position"),
            pl.lit(r.file.app_id, pl.String).alias(UNIT_COLUMN),
            pl.lit(1, pl.Int64).alias(SEQ_COLUMN),
        )
        for r in raws
    ]
    return pl.concat(parts) if parts else pl.DataFrame(
        schema={"position": pl.String, UNIT_COLUMN: pl.String, SEQ_COLUMN: pl.Int64})


def validate_files(raws: list[RawFile], lander: BronzeLander) -> LandingBatch:
    """Validate several read files at once (one decode/validation per format and column layout, so many
    small files cost what one big file costs); positions are `relative:line` (1-based data lines)."""
    batches: list[LandingBatch] = []
    jsonl = [r for r in raws if r.lines is not None]
    if jsonl:
        source = "batch:" + (jsonl[0].file.relative if len(jsonl) == 1 else "landing")
        origins = _origins(jsonl)
        lines = [line for r in jsonl for line in r.lines or []]
        decoded = decode_json_records(lines, origins.get_column("position").to_list(), source=source)
        result = lander.validate(decoded, source=source)
        batches.append(LandingBatch.build(
            result, records=decoded.records.select("tenant_id", "event_id", "position"), origins=origins))
    tabular: dict[tuple[tuple[str, str], ...], list[RawFile]] = {}
    for raw in raws:
        if raw.frame is not None:  # same column names and types: validated together, no type coercion
            layout = tuple((name, str(dtype)) for name, dtype in raw.frame.schema.items())
            tabular.setdefault(layout, []).append(raw)
    for group in tabular.values():
        frame = pl.concat([r.frame for r in group if r.frame is not None])
        source = "batch:" + (group[0].file.relative if len(group) == 1 else "landing")
        result = lander.validate(frame, source=source)
        batches.append(LandingBatch.build(result, records=records_keys(frame), origins=_origins(group)))
    return LandingBatch.merge(batches)


@dataclass
class BatchRunResult:
    """What one batch run did: totals, the files landed and skipped, and the quality verdict."""

    run_id: str
    source_kind: str
    source_name: str
    totals: Reconciliation = field(default_factory=Reconciliation)
    files_landed: list[str] = field(default_factory=list)
    files_skipped: list[str] = field(default_factory=list)
    flushes: int = 0
    seconds: float = 0.0
    status: str = "succeeded"
    quality: Any = None
    positions: dict[str, Any] = field(default_factory=dict)
    partitions: dict[str, list[date]] = field(default_factory=dict)  # bronze table -> event_date partitions landed

    @property
    def rows_per_second(self) -> float:
        return self.totals.received / self.seconds if self.seconds > 0 else 0.0


def finish_run(
    result: BatchRunResult,
    lander: BronzeLander,
    *,
    started_at: datetime,
    check_quality: bool,
    error: BaseException | None,
    settings: Settings,
) -> None:
    """Record the run in the run log (failed when `error`, e.g. a DataQualityError raised by the lander's
    pre-commit checkpoint, `ingestion.quality.PrecommitCheck`); `result.quality` gets the checkpoint's report."""
    result.partitions = {uri: sorted(dates) for uri, dates in lander.touched.items()}
    if check_quality and isinstance(lander.precommit, PrecommitCheck):
        result.quality = lander.precommit.report
    result.status = "failed" if error else "succeeded"
    row = run_log_row(
        run_id=result.run_id,
        flush=result.flushes,
        source_kind=result.source_kind,  # type: ignore[arg-type]
        source_name=result.source_name,
        worker="0/1",
        started_at=started_at,
        counts=result.totals,
        status=result.status,  # type: ignore[arg-type]
        error=None if error is None else f"{type(error).__name__}: {error}",
        positions=result.positions,
    )
    append(
        run_log_uri(settings),
        row,
        metadata={"shironzi.run_id": result.run_id},
        storage_options=settings.storage_options,
    )


def quality_gate(check_quality: bool, *, settings: Settings, backfill: bool, run_id: str) -> PrecommitCheck | None:
    """The lander's pre-commit checkpoint of a batch run (None with --skip-quality)."""
    return PrecommitCheck(settings=settings, backfill=backfill, run_id=run_id) if check_quality else None


def ingest_files(
    source: str | Path,
    *,
    settings: Settings | None = None,
    tenants: Mapping[str, TenantInfo] | None = None,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
    check_quality: bool = True,
    backfill: bool = False,
    on_file: Callable[[LandingFile, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> BatchRunResult:
    """Land every new or changed landing file under `source` in bronze (exactly once per file version).

    `backfill`: a history import, whose freshness is judged against its own newest event (see
    `ingestion.quality`). `on_start(files_to_land)` and `on_file(file, rows)` drive a progress bar."""
    base, files = discover_files(source)
    return land_files(str(base), files, settings=settings, tenants=tenants, flush_rows=flush_rows,
                      check_quality=check_quality, backfill=backfill, on_file=on_file,
                      on_start=on_start)


def land_files(
    source_name: str,
    files: list[LandingFile],
    *,
    reader: Callable[[LandingFile], RawFile] = read_raw,
    settings: Settings | None = None,
    tenants: Mapping[str, TenantInfo] | None = None,
    flush_rows: int = DEFAULT_FLUSH_ROWS,
    check_quality: bool = True,
    backfill: bool = False,
    on_file: Callable[[LandingFile, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    stage_name: str = "ingest_batch",
) -> BatchRunResult:
    """Land the files the manifest does not record yet, each read by `reader` (`read_raw`, or a column
    mapping's reader for `ingest import`), through the processed-file manifest."""
    settings = settings or get_settings()
    if flush_rows < 1:
        raise InvalidInputError("flush_rows must be >= 1")
    done = processed_files(settings)
    todo = [f for f in files if (f.relative, f.checksum) not in done]
    result = BatchRunResult(
        run_id=uuid.uuid4().hex,
        source_kind="files",
        source_name=source_name,
        files_skipped=[f.relative for f in files if (f.relative, f.checksum) in done],
    )
    if on_start is not None:
        on_start(len(todo))
    gate = quality_gate(check_quality, settings=settings, backfill=backfill, run_id=result.run_id)
    lander = BronzeLander(settings=settings, tenants=tenants, precommit=gate)
    started_at = datetime.now(UTC)
    error: BaseException | None = None
    with stage(stage_name, source=source_name) as summary:
        try:
            pending: list[RawFile] = []
            pending_rows = 0
            for file in todo:
                raw = reader(file)
                pending.append(raw)
                pending_rows += raw.rows
                if on_file is not None:
                    on_file(file, raw.rows)
                if pending_rows >= flush_rows:
                    _flush(pending, lander, result, settings)
                    pending, pending_rows = [], 0
            if pending:
                _flush(pending, lander, result, settings)
        except BaseException as exc:
            error = exc
        summary.rows = result.totals.landed
        summary.table_version = result.totals.table_versions or None
        summary.extra.update(
            received=result.totals.received,
            quarantined=result.totals.quarantined,
            duplicates=result.totals.duplicates,
            files=len(result.files_landed),
            quarantined_by_reason=result.totals.quarantined_by_reason,
        )
        result.seconds = summary.seconds = max(0.0, (datetime.now(UTC) - started_at).total_seconds())
    result.positions = {"files": result.files_landed, "skipped": len(result.files_skipped)}
    if isinstance(error, KeyboardInterrupt | SystemExit):
        raise error
    finish_run(
        result, lander, started_at=started_at, check_quality=check_quality, error=error, settings=settings
    )
    if error is not None:
        raise error
    return result


def _flush(pending: list[RawFile], lander: BronzeLander, result: BatchRunResult, settings: Settings) -> None:
    """Land several files with one commit per table, then their manifest rows (the ledger)."""
    batch = validate_files(pending, lander)
    landed_at = datetime.now(UTC)

    def manifest_rows(_: Reconciliation) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {"path": r.file.relative, "checksum": r.file.checksum, "size_bytes": r.file.size_bytes,
                 "format": r.file.format, "rows": r.rows, "app_id": r.file.app_id, "run_id": result.run_id,
                 "landed_at": landed_at}
                for r in pending
            ],
            schema=MANIFEST_SCHEMA,
        )

    counts = lander.land(batch, ledger=Ledger(manifest_uri(settings), manifest_rows),
                         metadata={"shironzi.run_id": result.run_id, "shironzi.source": "batch:files"})
    result.totals.add(counts)
    result.flushes += 1
    result.files_landed.extend(r.file.relative for r in pending)
