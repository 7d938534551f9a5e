"""Tenant management: the event-sourced registry, provisioning, modules, API keys and TenantContext."""

from shironzi.tenancy.catalog import (
    INDUSTRIES,
    MODULE_REQUIRES,
    MODULES,
    PLACEMENTS,
    PLAN_DEFAULT_MODULES,
    PLANS,
    SCOPES,
    STATUSES,
)
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import TenantEvent
from shironzi.tenancy.keys import KeyPrincipal, KeyRecord
from shironzi.tenancy.records import ImportResult, ProvisionedTenant, ProvisionSpec, Tenant, TenantInfo
from shironzi.tenancy.registry import RebuildResult, Registry, get_registry, init_registry, reset_registries

__all__ = [
    "INDUSTRIES",
    "MODULES",
    "MODULE_REQUIRES",
    "PLACEMENTS",
    "PLANS",
    "PLAN_DEFAULT_MODULES",
    "SCOPES",
    "STATUSES",
    "ImportResult",
    "KeyPrincipal",
    "KeyRecord",
    "ProvisionSpec",
    "ProvisionedTenant",
    "RebuildResult",
    "Registry",
    "Tenant",
    "TenantContext",
    "TenantEvent",
    "TenantInfo",
    "get_registry",
    "init_registry",
    "reset_registries",
]
