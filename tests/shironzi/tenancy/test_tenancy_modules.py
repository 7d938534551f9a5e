"""Module toggles: plan defaults, dependency rules, the is_enabled cache and module gating helpers."""

from __future__ import annotations

import pytest

from shironzi.errors import InvalidInputError, InvalidStateError, ModuleDependencyError, TenantNotFoundError
from shironzi.settings import Settings
from shironzi.tenancy import MODULES, Registry, TenantContext, TenantInfo
from tests.shironzi.tenancy._fixtures import snapshot


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        ("free", {"analytics", "dashboards"}),
        (
            "standard",
            {"analytics", "dashboards", "churn_prediction", "trend_forecast", "notifications", "data_export"},
        ),
        ("enterprise", set(MODULES)),
    ],
)
def test_plan_default_modules(
    registry: Registry, admin: TenantContext, plan: str, expected: set[str]
) -> None:
    tenant, _ = registry.provision_tenant(admin, slug=f"on-{plan}", name="P", industry="education", plan=plan)
    assert set(registry.modules(tenant.id)) == expected
    assert all(registry.is_enabled(tenant.id, m) == (m in expected) for m in MODULES)


def test_dependencies_are_enforced_both_ways(registry: Registry, admin: TenantContext) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="deps", name="D", industry="ecommerce", plan="free")
    registry.disable_module(admin, tenant.id, "analytics")
    with pytest.raises(ModuleDependencyError, match="analytics") as err:
        registry.enable_module(admin, tenant.id, "churn_prediction")
    assert err.value.details["requires"] == ["analytics"]

    registry.enable_module(admin, tenant.id, "analytics")
    registry.enable_module(admin, tenant.id, "churn_prediction")
    registry.enable_module(admin, tenant.id, "trend_forecast")
    with pytest.raises(ModuleDependencyError) as err:
        registry.disable_module(admin, tenant.id, "analytics")
    assert err.value.details["dependants"] == ["churn_prediction", "trend_forecast"]
    assert "churn_prediction, trend_forecast" in err.value.message

    registry.disable_module(admin, tenant.id, "churn_prediction")
    registry.disable_module(admin, tenant.id, "trend_forecast")
    assert registry.disable_module(admin, tenant.id, "analytics") == ["dashboards"]


def test_is_enabled_is_invalidated_locally_and_expires_elsewhere(
    registry: Registry, admin: TenantContext
) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="cached", name="C", industry="ecommerce")
    other = Registry.from_settings(Settings(module_cache_ttl_seconds=300))
    try:
        assert registry.is_enabled(tenant.id, "notifications") and other.is_enabled(
            tenant.id, "notifications"
        )
        registry.disable_module(admin, tenant.id, "notifications")
        assert registry.is_enabled(tenant.id, "notifications") is False  # local change: invalidated at once
        assert other.is_enabled(tenant.id, "notifications") is True  # other instance: cached until its TTL
        assert other.modules(tenant.id) == registry.modules(tenant.id)  # modules() always reads fresh
    finally:
        other.close()
    uncached = Registry.from_settings(Settings(module_cache_ttl_seconds=0))
    try:
        assert uncached.is_enabled(tenant.id, "notifications") is False
    finally:
        uncached.close()


def test_is_enabled_checks_its_arguments(registry: Registry, admin: TenantContext) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="args", name="A", industry="ecommerce")
    with pytest.raises(InvalidInputError, match="module"):
        registry.is_enabled(tenant.id, "teleportation")
    with pytest.raises(TenantNotFoundError):
        registry.is_enabled("t_aaaaaaaaaaaaaaaa", "analytics")


def test_tenants_with_module_and_directory(registry: Registry, admin: TenantContext) -> None:
    free, _ = registry.provision_tenant(admin, slug="free-one", name="F", industry="education", plan="free")
    std, _ = registry.provision_tenant(admin, slug="std-one", name="S", industry="ecommerce")
    ent, _ = registry.provision_tenant(
        admin, slug="ent-one", name="E", industry="healthcare", plan="enterprise", region="ap-south"
    )
    assert registry.tenants_with_module("churn_prediction") == sorted([std.id, ent.id])
    assert registry.tenants_with_module("analytics") == sorted([free.id, std.id, ent.id])
    registry.suspend(admin, std.id)
    assert registry.tenants_with_module("churn_prediction") == [ent.id]
    assert registry.tenants_with_module("churn_prediction", statuses=["active", "suspended"]) == sorted(
        [std.id, ent.id]
    )

    directory = registry.tenant_directory()
    assert set(directory) == {free.id, std.id, ent.id}
    assert directory[ent.id] == TenantInfo(
        ent.id, "ent-one", "healthcare", "ap-south", "enterprise", "dedicated", "active"
    )
    assert directory[std.id].status == "suspended"


def test_change_plan_enables_new_defaults(registry: Registry, admin: TenantContext) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="upgrader", name="U", industry="ecommerce", plan="free")
    assert registry.change_plan(admin, tenant.id, "enterprise").plan == "enterprise"
    assert set(registry.modules(tenant.id)) == set(MODULES)
    types = [e.type for e in registry.events(tenant.id)]
    assert (
        types[:3] == ["tenant_created", "key_issued", "plan_changed"] and types.count("module_enabled") == 5
    )
    registry.change_plan(admin, tenant.id, "free")  # a downgrade keeps what is on
    assert set(registry.modules(tenant.id)) == set(MODULES)
    before = snapshot(registry)
    with pytest.raises(InvalidInputError):
        registry.change_plan(admin, tenant.id, "platinum")
    assert snapshot(registry) == before


def test_switching_a_module_to_the_state_it_has_is_refused_and_writes_nothing(
    registry: Registry, admin: TenantContext
) -> None:
    tenant, _ = registry.provision_tenant(admin, slug="same-state", name="S", industry="ecommerce", plan="free")
    before = snapshot(registry)
    with pytest.raises(InvalidStateError, match="'analytics' is already enabled"):
        registry.enable_module(admin, tenant.id, "analytics")
    with pytest.raises(InvalidStateError, match="'notifications' is not enabled"):
        registry.disable_module(admin, tenant.id, "notifications")
    assert snapshot(registry) == before

    registry.offboard(admin, tenant.id)
    before = snapshot(registry)
    for switch, module in ((registry.enable_module, "notifications"), (registry.disable_module, "analytics")):
        with pytest.raises(InvalidStateError, match="is offboarding"):
            switch(admin, tenant.id, module)
    assert snapshot(registry) == before
