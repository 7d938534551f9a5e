"""Module-level shortcuts over the process's registry, for callers that hold no Registry."""

from __future__ import annotations

from pathlib import Path

from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keys import KeyPrincipal
from shironzi.tenancy.records import ImportResult, Tenant, TenantInfo
from shironzi.tenancy.registry import RebuildResult, get_registry


def provision_tenant(
    ctx: TenantContext,
    *,
    slug: str,
    name: str,
    industry: str,
    region: str | None = None,
    plan: str = "standard",
    placement: str | None = None,
) -> tuple[Tenant, str]:
    """Provision one tenant in one transaction; returns it and its first API key (plaintext, shown once)."""
    return get_registry().provision_tenant(
        ctx, slug=slug, name=name, industry=industry, region=region, plan=plan, placement=placement
    )


def import_tenants(ctx: TenantContext, path: str | Path) -> ImportResult:
    return get_registry().import_tenants(ctx, path)


def verify_key(raw: str) -> KeyPrincipal:
    return get_registry().verify_key(raw)


def is_enabled(tenant_id: str, module: str) -> bool:
    return get_registry().is_enabled(tenant_id, module)


def tenants_with_module(module: str) -> list[str]:
    return get_registry().tenants_with_module(module)


def tenant_directory() -> dict[str, TenantInfo]:
    return get_registry().tenant_directory()


def rebuild(ctx: TenantContext) -> RebuildResult:
    return get_registry().rebuild(ctx)
