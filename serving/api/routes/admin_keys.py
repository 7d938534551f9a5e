"""API keys (platform admin key): issue for a tenant, list a tenant's keys, revoke by prefix."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from serving.api.docs import admin_op
from serving.deps import AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import KeyCreate, KeyIssued, KeyPublic
from shironzi.tenancy.keys import KeyRecord

router = APIRouter(prefix="/v1/admin", tags=["admin: keys"], responses=ERROR_RESPONSES)

TenantPath = Annotated[str, Path(min_length=1, max_length=100, description="Tenant id (`t_...`) or slug.")]
PrefixPath = Annotated[str, Path(min_length=1, max_length=40, description="The key's public prefix.")]


def key_public(record: KeyRecord) -> KeyPublic:
    return KeyPublic(
        prefix=record.prefix,
        tenant_id=record.tenant_id,
        scopes=list(record.scopes),  # type: ignore[arg-type]
        label=record.label,
        created_at=record.created_at,
        created_by=record.created_by,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


@router.post("/tenants/{tenant_id}/keys", status_code=201, response_model=KeyIssued, openapi_extra=admin_op(write=True))
async def issue_key(tenant_id: TenantPath, body: KeyCreate, admin: AdminDep) -> KeyIssued:
    """Issue a tenant key with scopes (and optional expiry); the plaintext is returned once."""
    registry = admin.services.registry
    tenant = registry.get_tenant(tenant_id)
    record, plaintext = await run_in_threadpool(
        lambda: registry.issue_key(
            admin.ctx, tenant.id, scopes=body.scopes, expires_at=body.expires_at, label=body.label
        )
    )
    admin.audit_write("api_key_issued", tenant_id=tenant.id, prefix=record.prefix, scopes=list(record.scopes))
    return KeyIssued(key=key_public(record), api_key=plaintext)


@router.get("/tenants/{tenant_id}/keys", response_model=list[KeyPublic], openapi_extra=admin_op(write=False))
def list_keys(tenant_id: TenantPath, admin: AdminDep) -> list[KeyPublic]:
    """A tenant's keys, newest first (never secrets or hashes)."""
    registry = admin.services.registry
    tenant = registry.get_tenant(tenant_id)
    admin.audit_read("api_keys_listed", tenant_id=tenant.id)
    return [key_public(k) for k in registry.list_keys(tenant.id)]


@router.delete("/keys/{prefix}", response_model=KeyPublic, openapi_extra=admin_op(write=True))
async def revoke_key(prefix: PrefixPath, admin: AdminDep) -> KeyPublic:
    """Revoke a key: at once in this worker, in the others within the key-cache TTL."""
    registry = admin.services.registry
    record = await run_in_threadpool(registry.revoke_key, admin.ctx, prefix)
    admin.audit_write("api_key_revoked", tenant_id=record.tenant_id, prefix=prefix)
    return key_public(record)
