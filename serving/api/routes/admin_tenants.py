"""Tenant administration (platform admin key): create, list, get, change plan, suspend, resume, offboard,
and module toggles. Every write goes through the event-sourced registry and is a durable audit event."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from serving.api.docs import admin_op
from serving.api.routes.tenant_modules import module_settings_public
from serving.deps import AdminAccess, AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import (
    ChannelUpdate,
    ModulesPublic,
    TenantCreate,
    TenantCreated,
    TenantPublic,
    TenantsPage,
    TenantStatusChange,
    TenantUpdate,
    TenantUsagePublic,
)
from shironzi.metering.cost import tenant_usage_report
from shironzi.tenancy.catalog import Industry, Module, Plan, Status
from shironzi.tenancy.module_settings import check_module_settings
from shironzi.tenancy.records import Tenant

router = APIRouter(prefix="/v1/admin/tenants", tags=["admin: tenants"], responses=ERROR_RESPONSES)

TenantPath = Annotated[str, Path(min_length=1, max_length=100, description="Tenant id (`t_...`) or slug.")]


def _public(admin: AdminAccess, tenant: Tenant) -> TenantPublic:
    return TenantPublic(**tenant.to_dict(), modules=admin.services.registry.modules(tenant.id))


@router.post("", status_code=201, response_model=TenantCreated, openapi_extra=admin_op(write=True))
def create_tenant(body: TenantCreate, admin: AdminDep) -> TenantCreated:
    """Provision a tenant with its plan's modules and a first API key (returned once)."""
    registry = admin.services.registry
    tenant, key = registry.provision_tenant(admin.ctx, **body.model_dump())
    admin.audit_write("api_tenant_created", tenant_id=tenant.id, slug=tenant.slug)
    return TenantCreated(tenant=_public(admin, tenant), api_key=key)


@router.get("", response_model=TenantsPage, openapi_extra=admin_op(write=False))
def list_tenants(
    admin: AdminDep,
    status: Status | None = None,
    industry: Industry | None = None,
    plan: Plan | None = None,
    region: Annotated[str | None, Query(max_length=40)] = None,
    module: Module | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> TenantsPage:
    """One page of tenants ordered by slug, with filters, and the total that match."""
    registry = admin.services.registry
    items, total = registry.list_tenants(
        status=status, industry=industry, plan=plan, region=region, module=module, limit=limit, offset=offset
    )
    admin.audit_read("api_tenants_listed", tenant_id=None, returned=len(items))
    return TenantsPage(items=[_public(admin, t) for t in items], total=total, limit=limit, offset=offset)


@router.get("/{tenant_id}", response_model=TenantPublic, openapi_extra=admin_op(write=False))
def get_tenant(tenant_id: TenantPath, admin: AdminDep) -> TenantPublic:
    tenant = admin.services.registry.get_tenant(tenant_id)
    admin.audit_read("api_tenant_read", tenant_id=tenant.id)
    return _public(admin, tenant)


@router.get("/{tenant_id}/usage", response_model=TenantUsagePublic, openapi_extra=admin_op(write=False))
def get_tenant_usage(
    tenant_id: TenantPath,
    admin: AdminDep,
    start: Annotated[date | None, Query(alias="from", description="First day; default: the month's first.")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last day; default: today (UTC).")] = None,
) -> TenantUsagePublic:
    """A tenant's metered usage per day (`_platform/usage`), its totals, and each month's cost and margin by its
    plan's cost model."""
    last = end or datetime.now(UTC).date()
    report = tenant_usage_report(tenant_id, start=start or last.replace(day=1), end=last,
                                 settings=admin.services.settings)
    admin.audit_read("api_tenant_usage_read", tenant_id=report["tenant_id"])
    return TenantUsagePublic(**report)


@router.patch("/{tenant_id}", response_model=TenantPublic, openapi_extra=admin_op(write=True))
def update_tenant_plan(tenant_id: TenantPath, body: TenantUpdate, admin: AdminDep) -> TenantPublic:
    """Move a tenant to another plan (its default modules are switched on)."""
    registry = admin.services.registry
    tenant = registry.change_plan(admin.ctx, tenant_id, body.plan)
    admin.services.forget_tenant(tenant.id)
    admin.audit_write("api_tenant_plan_changed", tenant_id=tenant.id, plan=body.plan)
    return _public(admin, tenant)


def _status_change(
    admin: AdminAccess, tenant_id: str, action: str, body: TenantStatusChange | None
) -> TenantPublic:
    registry = admin.services.registry
    reason = body.reason if body else None
    if action == "suspend":
        tenant = registry.suspend(admin.ctx, tenant_id, reason=reason)
    elif action == "resume":
        tenant = registry.resume(admin.ctx, tenant_id)
    else:
        tenant = registry.offboard(admin.ctx, tenant_id, reason=reason)
    admin.services.forget_tenant(tenant.id)
    admin.audit_write(f"api_tenant_{action}", tenant_id=tenant.id, reason=reason)
    return _public(admin, tenant)


@router.post("/{tenant_id}/suspend", response_model=TenantPublic, openapi_extra=admin_op(write=True))
def suspend_tenant(
    tenant_id: TenantPath, admin: AdminDep, body: TenantStatusChange | None = None
) -> TenantPublic:
    """Suspend a tenant: its keys stop authenticating (in other workers within the key-cache TTL)."""
    return _status_change(admin, tenant_id, "suspend", body)


@router.post("/{tenant_id}/resume", response_model=TenantPublic, openapi_extra=admin_op(write=True))
def resume_tenant(tenant_id: TenantPath, admin: AdminDep) -> TenantPublic:
    return _status_change(admin, tenant_id, "resume", None)


@router.post("/{tenant_id}/offboard", response_model=TenantPublic, openapi_extra=admin_op(write=True))
def offboard_tenant(
    tenant_id: TenantPath, admin: AdminDep, body: TenantStatusChange | None = None
) -> TenantPublic:
    """Start offboarding: keys stop working; data stays until erased (POST /v1/admin/audit/erasures)."""
    return _status_change(admin, tenant_id, "offboard", body)


@router.put("/{tenant_id}/modules/{module}", response_model=ModulesPublic, openapi_extra=admin_op(write=True))
def enable_module(
    tenant_id: TenantPath, module: Module, admin: AdminDep,
    body: Annotated[dict[str, Any] | None, Body(description="The module's settings (see its JSON Schema at "
                                                "GET /v1/tenant/modules/{module}); null resets one.")] = None,
) -> ModulesPublic:
    """Switch a module on (its dependencies must be on); with a body, also set its settings (any field)."""
    registry = admin.services.registry
    tenant = registry.get_tenant(tenant_id)
    if body:  # refuse bad settings before switching anything on: a 422 changes nothing
        check_module_settings(module, body, current=registry.module_settings(tenant.id, module),
                              prod=admin.services.settings.env == "prod")
    if body is None or module not in registry.modules(tenant.id):
        registry.enable_module(admin.ctx, tenant.id, module)
        admin.audit_write("api_module_enabled", tenant_id=tenant.id, module=module)
    settings = None
    if body:
        registry.set_module_settings(admin.ctx, tenant.id, module, body)
        admin.audit_write("api_module_settings_changed", tenant_id=tenant.id, module=module, fields=sorted(body))
        settings = module_settings_public(registry, tenant.id, module)
    return ModulesPublic(tenant_id=tenant.id, modules=registry.modules(tenant.id), settings=settings)


@router.delete("/{tenant_id}/modules/{module}", response_model=ModulesPublic, openapi_extra=admin_op(write=True))
def disable_module(tenant_id: TenantPath, module: Module, admin: AdminDep) -> ModulesPublic:
    """Switch a module off (refused while enabled modules depend on it)."""
    registry = admin.services.registry
    modules = registry.disable_module(admin.ctx, tenant_id, module)
    tenant = registry.get_tenant(tenant_id)
    admin.audit_write("api_module_disabled", tenant_id=tenant.id, module=module)
    return ModulesPublic(tenant_id=tenant.id, modules=modules)


@router.put("/{tenant_id}/channel", response_model=TenantPublic, openapi_extra=admin_op(write=True))
def set_tenant_channel(tenant_id: TenantPath, body: ChannelUpdate, admin: AdminDep) -> TenantPublic:
    """Put a tenant on a release channel (`stable`, `canary`, `pinned:churn@3`): its model versions follow it."""
    tenant = admin.services.registry.set_channel(admin.ctx, tenant_id, body.channel)
    admin.audit_write("api_tenant_channel_changed", tenant_id=tenant.id, channel=tenant.channel)
    admin.services.model.refresh()
    return _public(admin, tenant)
