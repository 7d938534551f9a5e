"""Compliance queries over the lake audit log (platform admin key): access report, table changes, lineage,
inventory, and GDPR erasure with its signed receipt."""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from serving.api.docs import admin_op
from serving.deps import AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import ErasureCreate, ReceiptCheckPublic, ReceiptPublic
from shironzi.audit.disclosures import disclosures
from shironzi.audit.erasure import erase_subject as erase
from shironzi.audit.erasure import receipt_by_id, verify_receipt
from shironzi.audit.queries import access, as_jsonable, changes, inventory, lineage
from shironzi.errors import InvalidInputError
from shironzi.settings import Settings

router = APIRouter(prefix="/v1/admin/audit", tags=["admin: audit"], responses=ERROR_RESPONSES)

TenantQuery = Annotated[str, Query(min_length=1, max_length=100, description="Tenant id (`t_...`) or slug.")]


def _tenant_id(admin: Any, tenant: str) -> str:
    return str(admin.services.registry.get_tenant(tenant).id)


_LAKE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}$")
TABLE_ACCEPTED = (
    "table must name a lake table: region/layer/table (e.g. eu-west/gold/fct_tenant_daily_kpis), "
    "region/tenants/<tenant_id>/layer/table, or a URI or path under the lake root"
)


def lake_table_uri(settings: Settings, table: str) -> str:
    """The URI of the lake table that `table` names (relative to the lake, or a URI or path under it).
    Anything else (another scheme or bucket, a path outside the lake, `..`) is refused before any I/O."""
    root = settings.resolved_lake_uri
    if "://" not in root:
        root = posixpath.abspath(root)
    given = table.strip()
    if given.startswith("file://") and "://" not in root:
        given = given.removeprefix("file://")
    if "://" in given or given.startswith("/"):
        scheme, sep, rest = given.rpartition("://")
        normal = f"{scheme}{sep}{posixpath.normpath(rest)}"
        if not normal.startswith(root + "/"):
            raise InvalidInputError(TABLE_ACCEPTED)
        given = normal[len(root) + 1:]
    parts = given.strip("/").split("/")
    if len(parts) < 3 or not all(_LAKE_PART.match(part) for part in parts):
        raise InvalidInputError(TABLE_ACCEPTED)
    return f"{root}/{'/'.join(parts)}"


def _jsonable(value: Any) -> Any:
    return as_jsonable(value)


@router.get("/access", response_model=dict[str, Any], openapi_extra=admin_op(write=False))
async def access_report(
    admin: AdminDep,
    tenant_id: TenantQuery,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """Who touched a tenant's data in a window, and what (every audit event for the tenant + per actor)."""

    tid = _tenant_id(admin, tenant_id)
    admin.audit_read("api_audit_access_report", tenant_id=tid)
    result = await run_in_threadpool(lambda: access(tid, start=start, end=end))
    return _jsonable(result)  # type: ignore[no-any-return]


@router.get("/disclosures", response_model=dict[str, Any], openapi_extra=admin_op(write=False))
async def subject_disclosures(
    admin: AdminDep,
    tenant_id: TenantQuery,
    subject: Annotated[str, Query(min_length=1, max_length=200, description="The data subject's id.")],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """Accounting of disclosures (HIPAA 164.528): every access to one subject's data (API reads, batch
    reads, dashboard views, exports, notifications) with when, who, purpose and what; the query is audited."""

    tid = _tenant_id(admin, tenant_id)
    result = await run_in_threadpool(
        lambda: disclosures(admin.ctx, tid, subject, start=start, end=end, request_id=admin.request_id))
    return _jsonable(result)  # type: ignore[no-any-return]


@router.get("/changes", response_model=list[dict[str, Any]], openapi_extra=admin_op(write=False))
async def table_changes(
    admin: AdminDep,
    table: Annotated[
        str, Query(min_length=1, max_length=500, description="A lake table: `region/layer/table` or a URI in the lake")
    ],
) -> list[dict[str, Any]]:
    """Every commit of a lake table joined to the audit events that caused it."""

    admin.audit_read("api_audit_table_changes", tenant_id=None, table=table)
    uri = lake_table_uri(admin.services.settings, table)
    return _jsonable(await run_in_threadpool(changes, uri))  # type: ignore[no-any-return]


@router.get("/lineage", response_model=dict[str, Any], openapi_extra=admin_op(write=False))
async def tenant_lineage(admin: AdminDep, tenant_id: TenantQuery) -> dict[str, Any]:
    """Tables, training runs and model versions holding or derived from a tenant's rows."""

    tid = _tenant_id(admin, tenant_id)
    admin.audit_read("api_audit_lineage", tenant_id=tid)
    return _jsonable(await run_in_threadpool(lineage, tid))  # type: ignore[no-any-return]


@router.get("/inventory", response_model=list[dict[str, Any]], openapi_extra=admin_op(write=False))
async def tenant_inventory(admin: AdminDep, tenant_id: TenantQuery) -> list[dict[str, Any]]:
    """Every table holding a tenant's rows, with counts, bytes and oldest/newest rows."""

    tid = _tenant_id(admin, tenant_id)
    admin.audit_read("api_audit_inventory", tenant_id=tid)
    return _jsonable(await run_in_threadpool(inventory, tid))  # type: ignore[no-any-return]


@router.post("/erasures", status_code=201, response_model=ReceiptPublic, openapi_extra=admin_op(write=True))
async def erase_subject(body: ErasureCreate, admin: AdminDep) -> ReceiptPublic:
    """GDPR Art. 17: erase one data subject of a tenant everywhere; returns the signed, verified receipt."""

    tid = _tenant_id(admin, body.tenant_id)
    receipt = await run_in_threadpool(lambda: erase(admin.ctx, tid, body.subject_id, request_id=admin.request_id))
    admin.audit_write(
        "api_subject_erased", tenant_id=tid, receipt=receipt.request_id, ok=receipt.verification.get("ok")
    )
    data = receipt.body()
    fields = {k: data[k] for k in ReceiptPublic.model_fields if k != "signature" and k in data}
    return ReceiptPublic(**fields, signature=receipt.signature)


@router.get("/erasures/{request_id}", response_model=ReceiptCheckPublic, openapi_extra=admin_op(write=False))
async def verify_erasure(
    request_id: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")], admin: AdminDep
) -> ReceiptCheckPublic:
    """Re-check a stored receipt: its HMAC signature, and a fresh scan of the lake for the subject."""

    check = await run_in_threadpool(lambda: verify_receipt(receipt_by_id(request_id)))
    admin.audit_read("api_erasure_verified", tenant_id=None, receipt=request_id, ok=check.ok)
    return ReceiptCheckPublic.model_validate(_jsonable(check.as_dict()))
