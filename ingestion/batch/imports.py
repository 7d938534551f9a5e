"""`shironzi ingest import`: a tenant's own history (CSV, JSONL, Parquet files or a SQL query) with its own
column names, mapped to the contract by a YAML column mapping (`ingestion.mapping`) and landed in bronze.

    plan = plan_import(["orders.csv"], tenant="acme", mapping="mapping.yaml")   # checks; reads no row
    preview = preview_import(plan)          # the dry run: mapped records + validation report, writes nothing
    result = run_import(plan)               # lands like `ingest batch`: bronze, quarantine, manifest, run log

The import lands through the batch landing path of `ingest batch` (`land_files`): one commit per table per
flush, quarantine with reasons, the run log's reconciliation, the quality checkpoint before commit (as a
backfill: freshness is judged against the history's own newest event) and the processed-file manifest. An
import is identified by its file's SHA-256, the tenant and the mapping: the same file imported twice lands
once; a corrected mapping lands the file again, and bronze's key dedup keeps the events it already holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import polars as pl

from ingestion.batch.files import (
    DEFAULT_FLUSH_ROWS,
    BatchRunResult,
    LandingFile,
    RawFile,
    discover_files,
    land_files,
    processed_files,
)
from ingestion.batch.sql import fetch_frame
from ingestion.contracts import get_contract, latest_contract_refs, tenants_frame, validate_batch
from ingestion.contracts.schema import POSITION, RAW_PAYLOAD
from ingestion.mapping import ColumnMapping, load_mapping
from shironzi.audit.retention import policies
from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.records import TenantInfo
from shironzi.tenancy.registry import get_registry

DEFAULT_PREVIEW_ROWS = 10
SAMPLE_REJECTED = 5


@dataclass(frozen=True)
class ImportPlan:
    """A checked import: the tenant, its mapping and the sources (files, or one query result)."""

    tenant: TenantInfo
    mapping: ColumnMapping
    files: list[LandingFile]
    source_name: str
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)  # relative -> rows, for a SQL source
    settings: Settings = field(default_factory=get_settings)


def _tenant(tenant: str, settings: Settings) -> TenantInfo:
    """The registry's tenant by slug or id; only an active tenant can import."""
    found = get_registry(settings).get_tenant(tenant)
    info = get_registry(settings).tenant_infos([found.id])[found.id]
    if info.status != "active":
        raise InvalidStateError(f"tenant {info.slug!r} is {info.status}: only an active tenant can import",
                                tenant=info.slug)
    return info


def _import_file(file: LandingFile, tenant_id: str, mapping: ColumnMapping) -> LandingFile:
    """The file with the import's identity: its checksum covers the file, the tenant and the mapping."""
    checksum = hashlib.sha256(f"{file.checksum}\0{tenant_id}\0{mapping.digest}".encode()).hexdigest()
    return LandingFile(file.path, file.relative, file.format, file.size_bytes, checksum)


def plan_import(
    sources: Sequence[str | Path],
    *,
    tenant: str,
    mapping: str | Path,
    sql: str | None = None,
    source_url: str | None = None,
    settings: Settings | None = None,
) -> ImportPlan:
    """Resolve the tenant (slug or id), check the mapping against its contract (before any row is read) and
    list the sources: files and directories, or `sql` (the mapping's `source.sql` by default) on `source_url`."""
    settings = settings or get_settings()
    info = _tenant(tenant, settings)
    ref = latest_contract_refs().get(info.industry)
    if ref is None:
        raise InvalidInputError(f"no contract for industry {info.industry!r} of tenant {info.slug!r}")
    checked = load_mapping(mapping, contract=get_contract(ref))
    query = sql or checked.source_options.get("sql")
    if query is not None:
        if sources:
            raise InvalidInputError("give files or a SQL query (--sql / the mapping's source.sql), not both")
        if not source_url:
            raise InvalidInputError("a SQL import needs --source-url (a SQLAlchemy URL of the source database)")
        frame = fetch_frame(source_url, str(query))
        digest = hashlib.sha256(str(query).encode()).hexdigest()[:12]
        relative = f"sql-{digest}"
        content = hashlib.sha256(frame.write_csv().encode()).hexdigest()
        file = LandingFile(Path(relative), relative, "sql", int(frame.estimated_size()), content)
        return ImportPlan(info, checked, [_import_file(file, info.tenant_id, checked)], f"sql:{digest}",
                          {relative: frame}, settings)
    if not sources:
        raise InvalidInputError("give one or more files to import (CSV, JSONL, Parquet), or --sql with --source-url")
    files: list[LandingFile] = []
    for source in sources:
        _, found = discover_files(source)
        fmt = checked.source_options.get("format")
        if fmt is not None and fmt not in ("csv", "jsonl", "parquet"):
            raise InvalidInputError(f"mapping: source.format must be csv, jsonl or parquet, got {fmt!r}")
        files += [_import_file(LandingFile(f.path, f.relative, fmt or f.format, f.size_bytes, f.checksum),
                               info.tenant_id, checked) for f in found]
    if not files:
        raise InvalidInputError("no CSV, JSONL or Parquet file among the sources")
    names = sorted({f.relative for f in files})
    if len(names) < len(files):
        raise InvalidInputError("two sources share a file name: import them in separate runs")
    return ImportPlan(info, checked, files, ", ".join(str(s) for s in sources), {}, settings)


def read_mapped(plan: ImportPlan, file: LandingFile) -> RawFile:
    """One source read and mapped to contract records (the `reader` of `land_files`)."""
    if file.format == "sql":
        frame = plan.frames[file.relative]
    else:
        try:
            readers: dict[str, Callable[[Path], pl.DataFrame]] = {
                "csv": partial(pl.read_csv, infer_schema=False), "jsonl": pl.read_ndjson,
                "parquet": pl.read_parquet}
            read = readers[file.format]
            frame = read(file.path)
        except Exception as exc:  # polars/pyarrow parse errors
            raise InvalidInputError(
                f"cannot read {file.relative!r} as {file.format}: {' '.join(str(exc).split())}", path=file.relative
            ) from exc
    plan.mapping.check_columns(frame.columns, where=file.relative)
    try:
        records = plan.mapping.apply(frame, tenant_id=plan.tenant.tenant_id)
    except pl.exceptions.PolarsError as exc:  # e.g. an expression that does not fit the column types
        raise InvalidInputError(
            f"the mapping cannot be applied to {file.relative!r}: {' '.join(str(exc).split())}", path=file.relative
        ) from exc
    positions = pl.lit(f"{file.relative}:") + pl.int_range(1, records.height + 1).cast(pl.String)
    return RawFile(file, records.height, frame=records.with_columns(positions.alias(POSITION)))


# ------------------------------------------------------------------------------------ the dry run


@dataclass
class ImportPreview:
    """What an import would do, computed without writing: mapped records and their validation report."""

    tenant: TenantInfo
    files: list[str]
    already_imported: list[str]
    rows: int = 0
    valid: int = 0
    duplicates_in_batch: int = 0
    counts_by_reason: dict[str, int] = field(default_factory=dict)
    event_types: dict[str, int] = field(default_factory=dict)
    first_event: datetime | None = None
    last_event: datetime | None = None
    preview: pl.DataFrame = field(default_factory=pl.DataFrame)
    rejected: pl.DataFrame = field(default_factory=pl.DataFrame)
    warnings: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(self.counts_by_reason.values())


def preview_import(plan: ImportPlan, *, rows: int = DEFAULT_PREVIEW_ROWS) -> ImportPreview:
    """The dry run: map and validate every source against the contract, write nothing."""
    with stage("ingest_import_dry_run", source=plan.source_name, tenant=plan.tenant.tenant_id) as summary:
        out = _preview(plan, rows)
        summary.rows = out.valid
        summary.extra.update(received=out.rows, quarantined=out.quarantined, duplicates=out.duplicates_in_batch)
    return out


def _preview(plan: ImportPlan, rows: int) -> ImportPreview:
    done = processed_files(plan.settings)
    out = ImportPreview(plan.tenant, [f.relative for f in plan.files],
                        [f.relative for f in plan.files if (f.relative, f.checksum) in done])
    tenants = tenants_frame({plan.tenant.tenant_id: plan.tenant})
    now = datetime.now(UTC)
    previews, rejected, times = [], [], []
    for file in plan.files:
        raw = read_mapped(plan, file)
        assert raw.frame is not None
        result = validate_batch(raw.frame, tenants=tenants, now=now, source=f"import:{file.relative}")
        out.rows += raw.rows
        out.valid += result.valid.num_rows
        out.duplicates_in_batch += result.duplicates_in_batch
        for code, n in result.counts_by_reason.items():
            out.counts_by_reason[code] = out.counts_by_reason.get(code, 0) + n
        valid = pl.from_arrow(result.valid)
        assert isinstance(valid, pl.DataFrame)
        for event_type, n in valid.get_column("event_type").value_counts().iter_rows():
            out.event_types[event_type] = out.event_types.get(event_type, 0) + n
        times.append(valid.select(pl.col("event_time").min().alias("first"), pl.col("event_time").max().alias("last")))
        previews.append(raw.frame.drop(RAW_PAYLOAD).head(rows))
        quarantined = pl.from_arrow(result.quarantined)
        assert isinstance(quarantined, pl.DataFrame)
        rejected.append(quarantined.select(POSITION, "reason_code", "reason", RAW_PAYLOAD).head(SAMPLE_REJECTED))
    out.preview = pl.concat(previews).head(rows)
    out.rejected = pl.concat(rejected).head(SAMPLE_REJECTED)
    span = pl.concat(times).drop_nulls()
    if span.height:
        out.first_event, out.last_event = span.get_column("first").min(), span.get_column("last").max()  # type: ignore[assignment]
    if out.first_event is not None:
        out.warnings += retention_warnings(plan.tenant, out.first_event.date(), settings=plan.settings)
    return out


def retention_warnings(tenant: TenantInfo, oldest: date, *, settings: Settings | None = None,
                       today: date | None = None) -> list[str]:
    """A warning when imported events are older than the tenant's raw (bronze) retention: they are kept,
    because retention counts from ingestion time, and the warning names the policy to change."""
    policy = policies({tenant.tenant_id: tenant.industry})[tenant.tenant_id]
    days = int(policy.days["bronze"])
    today = today or datetime.now(UTC).date()
    if oldest >= today - timedelta(days=days):
        return []
    return [
        f"events back to {oldest.isoformat()} are older than tenant {tenant.slug}'s raw retention "
        f"(bronze: {days} days, the {tenant.industry} default unless overridden; change it with "
        "shironzi.audit.retention.set_retention_override(ctx, tenant_id, 'bronze', days)). They are kept: "
        f"retention counts from ingestion time, so these rows expire {days} days after this import"
    ]


# ------------------------------------------------------------------------------------ the import


@dataclass
class ImportResult:
    """A landed import: the batch run (totals, files landed/skipped) and the import's warnings."""

    run: BatchRunResult
    warnings: list[str] = field(default_factory=list)


def run_import(
    plan: ImportPlan,
    *,
    flush_rows: int | None = None,
    check_quality: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_file: Callable[[LandingFile, int], None] | None = None,
) -> ImportResult:
    """Land the mapped sources in bronze through the batch landing path (exactly once per import)."""
    tenants = {plan.tenant.tenant_id: plan.tenant}
    run = land_files(plan.source_name, plan.files, reader=partial(read_mapped, plan), settings=plan.settings,
                     tenants=tenants, flush_rows=flush_rows or DEFAULT_FLUSH_ROWS, check_quality=check_quality,
                     backfill=True, on_start=on_start, on_file=on_file, stage_name="ingest_import")
    landed_dates = [d for dates in run.partitions.values() for d in dates]
    warnings = retention_warnings(plan.tenant, min(landed_dates), settings=plan.settings) if landed_dates else []
    return ImportResult(run, warnings)
