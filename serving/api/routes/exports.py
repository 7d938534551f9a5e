"""Exports of the caller's own rows (`data_export` module): start one, follow it, download its file.

An export runs on a background thread of the worker that accepted it; its state lives in the registry, so any
worker answers for it. Another tenant's export id is not found (404), exactly like an id that never existed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from serving.api.docs import tenant_op
from serving.deps import ExportDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import ExportCreate, ExportPublic
from shironzi.exports import (
    ExportRecord,
    download_url,
    get_export,
    list_exports,
    ready_export,
    request_export,
    run_in_background,
    stream_file,
)

router = APIRouter(prefix="/v1/exports", tags=["exports"], responses=ERROR_RESPONSES)

ExportId = Annotated[str, Path(min_length=1, max_length=64, description="The export's id (`exp_...`).")]
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv; charset=utf-8"}


def export_public(record: ExportRecord) -> ExportPublic:
    return ExportPublic(
        id=record.id, table=record.table, format=record.format, start=record.start, end=record.end,
        status=record.status,  # type: ignore[arg-type]
        rows=record.rows, size_bytes=record.size_bytes, error=record.error, created_at=record.created_at,
        finished_at=record.finished_at, expires_at=record.expires_at,
        download=f"{router.prefix}/{record.id}/download" if record.status == "ready" else None,
    )


@router.post("", status_code=202, response_model=ExportPublic,
             openapi_extra=tenant_op("read", module="data_export"))
def create_export(body: ExportCreate, caller: ExportDep, response: Response) -> ExportPublic:
    """Start an export of the caller's own rows of a table in a date range (202: it runs in the background;
    poll `GET /v1/exports/{id}`). Limited per plan: exports per day (429) and rows per export (403)."""
    settings = caller.services.settings
    record = request_export(caller.ctx, caller.tenant_id, table=body.table, start=body.start, end=body.end,
                            fmt=body.format, settings=settings)
    caller.audit_write("export_requested", export_id=record.id, table=record.table, format=record.format,
                       start=str(record.start), end=str(record.end))
    run_in_background(record.id, settings=settings)
    response.headers["Location"] = f"{router.prefix}/{record.id}"
    return export_public(record)


@router.get("", response_model=list[ExportPublic], openapi_extra=tenant_op("read", module="data_export"))
def get_exports(caller: ExportDep) -> list[ExportPublic]:
    """The caller's 50 newest exports."""
    caller.audit_read(resource_kind="exports")
    return [export_public(r) for r in list_exports(caller.tenant_id, settings=caller.services.settings)]


@router.get("/{export_id}", response_model=ExportPublic, openapi_extra=tenant_op("read", module="data_export"))
def get_export_status(export_id: ExportId, caller: ExportDep) -> ExportPublic:
    """An export's status, row count, size and expiry."""
    record = get_export(caller.tenant_id, export_id, settings=caller.services.settings)
    caller.audit_read(export_id=export_id, status=record.status)
    return export_public(record)


@router.get(
    "/{export_id}/download",
    openapi_extra=tenant_op("read", module="data_export"),
    responses={200: {"description": "The file, streamed (local lake)."},
               307: {"description": "A pre-signed object-store URL in `Location` (object-store lake)."}},
)
def download_export(export_id: ExportId, caller: ExportDep) -> Response:
    """The export's file: streamed from a local lake, or a redirect to a short-lived pre-signed URL on an
    object store (409 while the export is not ready)."""
    settings = caller.services.settings
    record = ready_export(caller.tenant_id, export_id, settings=settings)
    url = download_url(record, settings=settings)
    caller.audit_read(export_id=export_id, rows=record.rows, presigned=url is not None)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    assert record.uri is not None  # ready_export guarantees it
    headers = {"Content-Disposition": f'attachment; filename="{record.file_name}"'}
    if record.size_bytes is not None:
        headers["Content-Length"] = str(record.size_bytes)
    return StreamingResponse(stream_file(record.uri), media_type=MEDIA_TYPES[record.format], headers=headers)
