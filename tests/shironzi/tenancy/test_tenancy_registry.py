"""Provisioning, lookup, listing and status transitions of the tenant registry (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC

import pytest

from shironzi.errors import InvalidStateError, PermissionDeniedError, TenantNotFoundError
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import PLAN_DEFAULT_MODULES, Registry, TenantContext, get_registry

LAKE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")


def test_provision_creates_tenant_namespace_modules_and_first_key(
    registry: Registry, admin: TenantContext
) -> None:
    tenant, key = registry.provision_tenant(admin, slug="acme-shop", name="Acme Shop", industry="ecommerce")

    assert re.fullmatch(r"t_[a-z2-7]{16}", tenant.id) and LAKE_NAME.match(tenant.id)
    assert (tenant.slug, tenant.name, tenant.industry, tenant.plan) == (
        "acme-shop",
        "Acme Shop",
        "ecommerce",
        "standard",
    )
    assert tenant.region == get_settings().default_region
    assert tenant.placement == "pooled" and tenant.status == "active"
    assert tenant.created_at.tzinfo is not None and tenant.created_at.utcoffset() == UTC.utcoffset(None)
    expected_root = table_uri(
        get_settings().resolved_lake_uri, layer="bronze", table="events", region=tenant.region
    ).removesuffix("/bronze/events")
    assert tenant.lake_namespace == expected_root
    assert set(registry.modules(tenant.id)) == set(PLAN_DEFAULT_MODULES["standard"])

    principal = registry.verify_key(key)
    assert principal.tenant_id == tenant.id and not principal.is_admin
    assert set(principal.scopes) == {"read", "write", "admin"}

    stored = registry.get_tenant(tenant.id)
    assert stored == tenant == registry.get_tenant("acme-shop")
    events = registry.events(tenant.id)
    assert [e.type for e in events] == ["tenant_created", "key_issued"]
    assert {e.actor for e in events} == {"ops@test"} and events[0].sequence < events[1].sequence


@pytest.mark.parametrize(
    ("plan", "industry", "explicit", "expected"),
    [
        ("enterprise", "healthcare", None, "dedicated"),  # regulated + enterprise
        ("enterprise", "ecommerce", None, "pooled"),
        ("standard", "healthcare", None, "pooled"),
        ("free", "education", "dedicated", "dedicated"),  # explicit wins
        ("enterprise", "healthcare", "pooled", "pooled"),
    ],
)
def test_placement_follows_plan_and_industry_unless_explicit(
    registry: Registry,
    admin: TenantContext,
    plan: str,
    industry: str,
    explicit: str | None,
    expected: str,
) -> None:
    tenant, _ = registry.provision_tenant(
        admin, slug="placed", name="P", industry=industry, plan=plan, placement=explicit, region="us-east"
    )
    assert tenant.placement == expected and tenant.region == "us-east"
    if expected == "dedicated":
        assert tenant.lake_namespace.endswith(f"/us-east/tenants/{tenant.id}")
    else:
        assert tenant.lake_namespace.endswith("/us-east")


def test_get_tenant_unknown_raises_not_found(registry: Registry) -> None:
    with pytest.raises(TenantNotFoundError, match="nobody"):
        registry.get_tenant("nobody")
    with pytest.raises(TenantNotFoundError):
        registry.get_tenant("t_aaaaaaaaaaaaaaaa")


def test_list_tenants_filters_pages_and_counts(registry: Registry, admin: TenantContext) -> None:
    made = {}
    for i, (industry, plan, region) in enumerate(
        [
            ("ecommerce", "free", "eu-west"),
            ("ecommerce", "standard", "us-east"),
            ("healthcare", "enterprise", "eu-west"),
            ("education", "standard", "ap-south"),
            ("education", "free", "eu-west"),
        ]
    ):
        t, _ = registry.provision_tenant(
            admin, slug=f"tenant-{i}", name=f"T{i}", industry=industry, plan=plan, region=region
        )
        made[t.slug] = t
    registry.suspend(admin, "tenant-1")

    rows, total = registry.list_tenants()
    assert total == 5 and [t.slug for t in rows] == sorted(made)
    page, total = registry.list_tenants(limit=2, offset=2)
    assert total == 5 and [t.slug for t in page] == ["tenant-2", "tenant-3"]
    assert [t.slug for t in registry.list_tenants(industry="education")[0]] == ["tenant-3", "tenant-4"]
    assert [t.slug for t in registry.list_tenants(plan="free", region="eu-west")[0]] == [
        "tenant-0",
        "tenant-4",
    ]
    assert registry.list_tenants(status="suspended") == ([registry.get_tenant("tenant-1")], 1)
    # audit_access is only on by default for enterprise
    assert [t.slug for t in registry.list_tenants(module="audit_access")[0]] == ["tenant-2"]
    assert registry.list_tenants(module="churn_prediction")[1] == 3


def test_status_transitions_and_offboarding_keeps_data(registry: Registry, admin: TenantContext) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="moving", name="M", industry="education")
    registry.issue_key(admin, tenant.id, scopes=["read"])
    before_modules, before_keys = registry.modules(tenant.id), registry.list_keys(tenant.id)

    assert registry.suspend(admin, tenant.id, reason="unpaid").status == "suspended"
    with pytest.raises(InvalidStateError, match="suspended"):
        registry.suspend(admin, tenant.id)
    assert registry.resume(admin, tenant.id).status == "active"
    with pytest.raises(InvalidStateError):
        registry.resume(admin, tenant.id)
    assert registry.offboard(admin, tenant.id, reason="churned").status == "offboarding"
    assert registry.modules(tenant.id) == before_modules and registry.list_keys(tenant.id) == before_keys
    with pytest.raises(InvalidStateError):
        registry.enable_module(admin, tenant.id, "audit_access")
    assert registry.complete_offboarding(admin, tenant.id).status == "deleted"
    with pytest.raises(InvalidStateError, match="deleted"):
        registry.resume(admin, tenant.id)
    types = [e.type for e in registry.events(tenant.id)]
    assert types == [
        "tenant_created",
        "key_issued",
        "key_issued",
        "suspended",
        "resumed",
        "offboarding_started",
        "tenant_deleted",
    ]
    assert registry.events(tenant.id)[3].payload == {"reason": "unpaid"}


def test_tenant_context_limits_writes_to_its_tenant(registry: Registry, admin: TenantContext) -> None:
    a, _ = registry.provision_tenant(admin, slug="tenant-a", name="A", industry="ecommerce", plan="free")
    b, _ = registry.provision_tenant(admin, slug="tenant-b", name="B", industry="ecommerce", plan="free")
    as_a = TenantContext.for_tenant(a.id, actor="alice@a", purpose="settings page")

    assert "notifications" in registry.enable_module(as_a, a.id, "notifications")
    assert (
        registry.events(a.id)[-1].actor == "alice@a" and registry.events(a.id)[-1].purpose == "settings page"
    )
    record, key = registry.issue_key(as_a, a.id, scopes=["read"])
    assert registry.verify_key(key).tenant_id == a.id and record.created_by == "alice@a"

    with pytest.raises(PermissionDeniedError):
        registry.enable_module(as_a, b.id, "notifications")
    with pytest.raises(PermissionDeniedError):
        registry.enable_module(as_a, "tenant-b", "notifications")
    with pytest.raises(PermissionDeniedError):  # an unknown tenant is not revealed to a tenant context
        registry.enable_module(as_a, "no-such-tenant", "notifications")
    with pytest.raises(PermissionDeniedError):
        registry.suspend(as_a, a.id)
    with pytest.raises(PermissionDeniedError):
        registry.provision_tenant(as_a, slug="sneaky", name="S", industry="ecommerce")
    with pytest.raises(PermissionDeniedError):
        registry.issue_key(as_a, None, scopes=["admin"])
    with pytest.raises(PermissionDeniedError):
        registry.rebuild(as_a)
    assert "notifications" not in registry.modules(b.id)


def test_get_registry_is_cached_per_database_url(registry: Registry) -> None:
    assert get_registry() is registry
    other = Registry.from_settings()
    assert other is not registry and other.url == registry.url
    other.close()
