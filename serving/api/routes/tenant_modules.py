"""The caller's own module settings: read them (with the schema) and change the tenant-editable ones.

A tenant's PATCH may only name fields the schema marks `x-tenant-editable` (403 otherwise); a value outside
the schema is 422 with the field's path. An empty PATCH changes nothing and answers the current settings.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from serving.api.docs import tenant_op
from serving.deps import TenantReadDep, TenantWriteDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import ModuleSettingsPublic
from shironzi.tenancy.module_settings import ConfigurableModule, settings_json_schema, tenant_editable_fields
from shironzi.tenancy.registry import Registry

router = APIRouter(prefix="/v1/tenant/modules", tags=["tenant"], responses=ERROR_RESPONSES)

SettingsBody = Annotated[dict[str, Any], Body(description="Settings to change (null resets one to its default).",
                                              examples=[{"at_risk_threshold": 0.7}])]


def module_settings_public(registry: Registry, tenant_id: str, module: str, *, fresh: bool = True
                           ) -> ModuleSettingsPublic:
    """A tenant's settings of a module as the API shows them: fresh after a change, else the worker's cached
    view (the one its routes apply, which the registry invalidation refreshes within about a second)."""
    overrides, version = registry.module_settings_versioned(tenant_id, module, fresh=fresh)
    effective = registry.effective_module_settings(tenant_id, module, fresh=fresh)
    return ModuleSettingsPublic(
        tenant_id=tenant_id, module=module, version=version, settings=effective.model_dump(mode="json"),
        overrides=overrides, tenant_editable=sorted(tenant_editable_fields(module)),
        json_schema=settings_json_schema(module),
    )


@router.get("/{module}", response_model=ModuleSettingsPublic, openapi_extra=tenant_op("read"))
def get_module_settings(module: ConfigurableModule, caller: TenantReadDep) -> ModuleSettingsPublic:
    """The tenant's settings of a module (as the running workers apply them), with the schema."""
    caller.audit_read(resource_kind="module_settings", module=module)
    return module_settings_public(caller.services.registry, caller.tenant_id, module, fresh=False)


@router.patch("/{module}", response_model=ModuleSettingsPublic, openapi_extra=tenant_op("write"))
def update_module_settings(module: ConfigurableModule, body: SettingsBody, caller: TenantWriteDep
                           ) -> ModuleSettingsPublic:
    """Change the tenant-editable settings of a module that is on for the tenant (an event-sourced change)."""
    registry = caller.services.registry
    if body:
        registry.set_module_settings(caller.ctx, caller.tenant_id, module, body, editor="tenant")
    caller.audit_write("api_module_settings_changed", module=module, fields=sorted(body))
    return module_settings_public(registry, caller.tenant_id, module)
