"""Exports of one tenant's own rows: request (checked and limited), run (read, write, audit), find, expire.

A request is refused before anything is written when its input is bad (422 with the field), the tenant's plan
allows no more exports today (429) or more rows than the plan's maximum (403 `quota_exceeded`). Otherwise a
`queued` row goes into the registry's `data_exports` table, where every API worker and the CLI see it; `run_export`
moves it to `running`, then `ready` (rows, bytes, file) or `failed`. The file lives at
`{lake}/_platform/exports/<tenant>/<export id>.<format>`, written through the kernel's filesystem (local disk or
object store), and the rows are read through tenant-filtered lake reads of the tenant's own tables only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import sqlalchemy as sa

from shironzi.audit.disclosures import record_disclosure
from shironzi.errors import (
    ExportNotFoundError,
    InvalidInputError,
    InvalidStateError,
    ModuleDisabledError,
    QuotaExceededError,
    RateLimitedError,
)
from shironzi.exports.presign import presigned_url
from shironzi.lake.delta import read_arrow, table_exists
from shironzi.lake.discovery import delete_files, is_local, lake_filesystem
from shironzi.lake.groups import tenant_read_groups
from shironzi.lake.paths import platform_uri
from shironzi.observability import StageSummary, log_stage_summary
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.catalog import PLAN_EXPORT_LIMITS
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.models import data_exports
from shironzi.tenancy.registry import get_registry

if TYPE_CHECKING:
    import pyarrow as pa

    from shironzi.tenancy.records import Tenant

logger = logging.getLogger("shironzi.exports")

MODULE = "data_export"
ExportFormat = Literal["parquet", "csv"]
ExportTableName = Literal["fct_tenant_daily_kpis", "dim_customers", "fct_churn_labels", "churn_scores", "forecasts"]
ExportStatus = Literal["queued", "running", "ready", "failed", "expired"]
MAX_RANGE_DAYS = 3 * 366
STREAM_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ExportTable:
    """A table tenants may export: its layer and the date column the range applies to."""

    layer: Literal["gold", "predictions"]
    date_column: str


EXPORT_TABLES: dict[str, ExportTable] = {
    "fct_tenant_daily_kpis": ExportTable("gold", "event_date"),
    "dim_customers": ExportTable("gold", "first_event_date"),
    "fct_churn_labels": ExportTable("gold", "snapshot_date"),
    "churn_scores": ExportTable("predictions", "score_date"),
    "forecasts": ExportTable("predictions", "generated_date"),
}
assert set(EXPORT_TABLES) == set(get_args(ExportTableName))


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One export as the registry holds it."""

    id: str
    tenant_id: str
    table: str
    format: str
    start: dt.date
    end: dt.date
    status: str
    rows: int | None
    size_bytes: int | None
    uri: str | None
    error: str | None
    requested_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    expires_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> ExportRecord:
        return cls(row["id"], row["tenant_id"], row["table_name"], row["format"], row["start_date"],
                   row["end_date"], row["status"], row["rows"], row["size_bytes"], row["uri"], row["error"],
                   row["requested_by"], row["created_at"], row["finished_at"], row["expires_at"])

    @property
    def file_name(self) -> str:
        return f"{self.table}_{self.start}_{self.end}.{self.format}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def export_uri(settings: Settings, tenant_id: str, export_id: str, fmt: str) -> str:
    return f"{platform_uri(settings.resolved_lake_uri, 'exports', tenant_id)}/{export_id}.{fmt}"


# --- reading the tenant's rows --------------------------------------------------------------------------


def _check_request(table: object, start: object, end: object, fmt: object, allowed: list[str]) -> None:
    if not isinstance(table, str) or table not in EXPORT_TABLES:
        raise InvalidInputError(f"unknown table {table!r}: exportable are {', '.join(EXPORT_TABLES)}",
                                fields=["table"])
    if not isinstance(start, dt.date) or not isinstance(end, dt.date):
        raise InvalidInputError("start and end must be dates (YYYY-MM-DD)", fields=["start", "end"])
    if end < start:
        raise InvalidInputError(f"invalid date range: end {end} is before start {start}", fields=["end"])
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInputError(f"invalid date range: at most {MAX_RANGE_DAYS} days per export", fields=["end"])
    if fmt not in allowed:
        raise InvalidInputError(f"format {fmt!r} is not allowed for this tenant (data_export formats: "
                                f"{', '.join(allowed)})", fields=["format"])


def tenant_rows(tenant: Tenant, table: str, start: dt.date, end: dt.date, *, settings: Settings,
                columns: list[str] | None = None) -> pa.Table:
    """The tenant's own rows of an exportable table in [start, end], from every table that may hold them
    (read with the tenant filter pushed down, and checked again)."""
    import pyarrow as pa
    import pyarrow.compute as pc


    spec = EXPORT_TABLES[table]
    options = settings.storage_options or None
    filters = [(spec.date_column, ">=", start), (spec.date_column, "<=", end)]
    uris = dict.fromkeys(g.uri(settings, layer=spec.layer, table=table)
                         for g in tenant_read_groups(tenant.id, region=tenant.region, placement=tenant.placement))
    parts = [read_arrow(u, tenant_id=tenant.id, filters=filters, columns=columns, storage_options=options)
             for u in uris if table_exists(u, storage_options=options)]
    if not parts:
        return pa.table({"tenant_id": pa.array([], pa.string())})
    rows = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    return rows.filter(pc.equal(rows.column("tenant_id"), tenant.id))  # belt and braces: the read filtered


# --- requests -------------------------------------------------------------------------------------------


def _start_of_day(moment: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(moment.date(), dt.time(), tzinfo=dt.UTC)


def request_export(ctx: TenantContext, tenant_id: str, *, table: str, start: dt.date, end: dt.date, fmt: str,
                   settings: Settings | None = None) -> ExportRecord:
    """Check and record an export of the tenant's own rows (status `queued`); `run_export` writes it."""
    settings = settings or get_settings()
    ctx.require_tenant(tenant_id)
    registry = get_registry(settings)
    tenant = registry.get_tenant(tenant_id)
    if not registry.is_enabled(tenant.id, MODULE):
        raise ModuleDisabledError(tenant.slug, MODULE)
    allowed = list(registry.effective_module_settings(tenant.id, MODULE).formats)
    _check_request(table, start, end, fmt, allowed)
    limits = PLAN_EXPORT_LIMITS[tenant.plan]
    now = _now()
    today = _start_of_day(now)
    with registry.engine.connect() as conn:
        started_today = conn.execute(
            sa.select(sa.func.count()).select_from(data_exports)
            .where(data_exports.c.tenant_id == tenant.id, data_exports.c.created_at >= today)).scalar_one()
    if started_today >= limits.per_day:
        retry = (today + dt.timedelta(days=1) - now).total_seconds()
        raise RateLimitedError(f"the {tenant.plan} plan allows {limits.per_day} exports per day; retry tomorrow "
                               f"(UTC)", retry_after=round(retry, 3), plan=tenant.plan, limit=limits.per_day)
    rows = tenant_rows(tenant, table, start, end, settings=settings, columns=["tenant_id"]).num_rows
    if rows > limits.max_rows:
        raise QuotaExceededError(f"the export would hold {rows} rows; the {tenant.plan} plan allows "
                                 f"{limits.max_rows} per export: narrow the date range",
                                 plan=tenant.plan, rows=rows, max_rows=limits.max_rows)
    record = {
        "id": "exp_" + secrets.token_hex(12), "tenant_id": tenant.id, "table_name": table, "format": fmt,
        "start_date": start, "end_date": end, "status": "queued", "requested_by": ctx.actor,
        "created_at": now, "expires_at": now + dt.timedelta(days=settings.export_expiry_days),
    }
    with registry.engine.begin() as conn:
        conn.execute(sa.insert(data_exports).values(**record))
    return get_export(tenant.id, str(record["id"]), settings=settings)


def get_export(tenant_id: str | None, export_id: str, *, settings: Settings | None = None) -> ExportRecord:
    """One export of a tenant (None: of any tenant, for admins); another tenant's export is not found."""
    registry = get_registry(settings)
    query = sa.select(data_exports).where(data_exports.c.id == export_id)
    if tenant_id is not None:
        query = query.where(data_exports.c.tenant_id == tenant_id)
    with registry.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise ExportNotFoundError(f"export {export_id!r} not found", export_id=export_id)
    return ExportRecord.from_row(row)


def list_exports(tenant_id: str, *, limit: int = 50, settings: Settings | None = None) -> list[ExportRecord]:
    """A tenant's newest exports first."""
    query = (sa.select(data_exports).where(data_exports.c.tenant_id == tenant_id)
             .order_by(data_exports.c.created_at.desc()).limit(limit))
    with get_registry(settings).engine.connect() as conn:
        return [ExportRecord.from_row(r) for r in conn.execute(query).mappings().all()]


def _update(settings: Settings, export_id: str, *, only_from: tuple[str, ...] | None = None,
            **values: Any) -> bool:
    query = sa.update(data_exports).where(data_exports.c.id == export_id).values(**values)
    if only_from is not None:
        query = query.where(data_exports.c.status.in_(only_from))
    with get_registry(settings).engine.begin() as conn:
        return bool(conn.execute(query).rowcount)


# --- running ---------------------------------------------------------------------------------------------


def _write_file(rows: pa.Table, uri: str, fmt: str) -> int:
    import pyarrow.csv as pcsv
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = lake_filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        if fmt == "parquet":
            pq.write_table(rows, out)
        else:
            pcsv.write_csv(rows, out)
    return int(fs.get_file_info(path).size)


def run_export(export_id: str, *, settings: Settings | None = None) -> ExportRecord:
    """Write a queued export's file and audit it (`data_exported`, with the customers it carried); a failure
    marks the export `failed` with the reason. Running an export that is not queued raises InvalidStateError."""
    settings = settings or get_settings()
    record = get_export(None, export_id, settings=settings)
    if not _update(settings, export_id, only_from=("queued",), status="running"):
        raise InvalidStateError(f"export {export_id!r} is {record.status}, not queued", export_id=export_id)
    started = time.monotonic()
    try:
        tenant = get_registry(settings).get_tenant(record.tenant_id)
        rows = tenant_rows(tenant, record.table, record.start, record.end, settings=settings)
        limit = PLAN_EXPORT_LIMITS[tenant.plan].max_rows
        if rows.num_rows > limit:  # the table grew since the request was checked
            raise QuotaExceededError(f"the export holds {rows.num_rows} rows; the {tenant.plan} plan allows {limit}")
        uri = export_uri(settings, tenant.id, export_id, record.format)
        size = _write_file(rows, uri, record.format)
        subjects = rows.column("customer_id").to_pylist() if "customer_id" in rows.column_names else []
        ctx = TenantContext.for_tenant(tenant.id, actor=record.requested_by, purpose="data_export")
        record_disclosure(ctx, "data_exported", tenant_id=tenant.id, subject_ids=subjects, durable=True,
                          resource=f"export:{record.table}",
                          details={"export_id": export_id, "format": record.format, "rows": rows.num_rows,
                                   "bytes": size, "start": record.start, "end": record.end})
    except Exception as exc:  # noqa: BLE001 - any failure is the export's outcome, kept for the tenant to see
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        _update(settings, export_id, status="failed", error=message[:1000], finished_at=_now())
        logger.warning("export %s failed: %s", export_id, message)
        return get_export(None, export_id, settings=settings)
    _update(settings, export_id, status="ready", rows=rows.num_rows, size_bytes=size, uri=uri, finished_at=_now())
    log_stage_summary(StageSummary("exports:run", rows=rows.num_rows, seconds=time.monotonic() - started,
                                   extra={"export_id": export_id, "table": record.table, "format": record.format,
                                          "bytes": size}))
    return get_export(None, export_id, settings=settings)


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def run_in_background(export_id: str, *, settings: Settings) -> None:
    """Run an export on this process's export thread (one at a time: exports are I/O heavy, not urgent)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shironzi-export")
        _executor.submit(run_export, export_id, settings=settings)


# --- downloading ------------------------------------------------------------------------------------------


def ready_export(tenant_id: str, export_id: str, *, settings: Settings | None = None) -> ExportRecord:
    """The tenant's export when its file can be downloaded (409 while it runs, failed or expired)."""
    record = get_export(tenant_id, export_id, settings=settings)
    if record.status != "ready" or record.uri is None:
        raise InvalidStateError(f"export {export_id!r} is {record.status}: there is no file to download",
                                export_id=export_id, status=record.status)
    return record


def stream_file(uri: str) -> Iterator[bytes]:
    """An export file's bytes in chunks, through the kernel's filesystem."""
    fs, path = lake_filesystem(uri)
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(STREAM_CHUNK_BYTES):
            yield chunk


def download_url(record: ExportRecord, *, settings: Settings) -> str | None:
    """A pre-signed URL for an export on an object store; None for a local lake (the API streams the file)."""
    if record.uri is None or is_local(record.uri):
        return None
    return presigned_url(record.uri, storage_options=settings.storage_options,
                         seconds=settings.export_presign_seconds)


# --- expiry ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    expired: int
    files_deleted: int
    seconds: float


def expire_exports(*, now: dt.datetime | None = None, settings: Settings | None = None) -> ExpiryResult:
    """Delete the files of exports past their expiry and mark them `expired` (one query, one update); an export
    still `running` by then lost its worker long ago and expires too."""
    settings = settings or get_settings()
    started = time.monotonic()
    moment = now or _now()
    registry = get_registry(settings)
    with registry.engine.connect() as conn:
        due = conn.execute(sa.select(data_exports.c.id, data_exports.c.uri)
                           .where(data_exports.c.expires_at <= moment,
                                  data_exports.c.status != "expired")).all()
    deleted = 0
    for _, uri in due:
        if uri:
            with contextlib.suppress(FileNotFoundError):
                delete_files([str(uri)])
                deleted += 1
    if due:
        with registry.engine.begin() as conn:
            conn.execute(sa.update(data_exports).where(data_exports.c.id.in_([str(i) for i, _ in due]))
                         .values(status="expired", uri=None))
    result = ExpiryResult(len(due), deleted, time.monotonic() - started)
    log_stage_summary(StageSummary("exports:expire", rows=result.expired, seconds=result.seconds,
                                   extra={"files_deleted": deleted}))
    return result
