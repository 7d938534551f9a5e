"""Per-tenant module settings: validated, event-sourced (a replay keeps them), read for all tenants at once."""

from __future__ import annotations

import pytest

from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.tenancy import Registry, TenantContext


def test_churn_windows_are_set_validated_and_survive_a_replay(registry: Registry, admin: TenantContext) -> None:
    shop, _ = registry.provision_tenant(admin, slug="windows", name="W", industry="ecommerce", plan="standard")
    other, _ = registry.provision_tenant(admin, slug="plain", name="P", industry="ecommerce", plan="standard")
    assert registry.module_settings(shop.id, "churn_prediction") == {}
    assert registry.set_module_settings(admin, "windows", "churn_prediction", {"inactivity_days": "60"}) == {
        "inactivity_days": 60}
    registry.set_module_settings(admin, shop.id, "churn_prediction", {"horizon_days": 90})
    assert registry.module_settings("windows", "churn_prediction") == {"inactivity_days": 60, "horizon_days": 90}
    assert registry.module_settings_of("churn_prediction") == {shop.id: {"inactivity_days": 60, "horizon_days": 90}}
    assert registry.events(shop.id)[-1].type == "module_settings_changed"

    registry.rebuild(admin)  # the projection replay knows the event
    assert registry.module_settings(shop.id, "churn_prediction") == {"inactivity_days": 60, "horizon_days": 90}
    registry.set_module_settings(admin, shop.id, "churn_prediction", {"horizon_days": None})  # back to default
    assert registry.module_settings(shop.id, "churn_prediction") == {"inactivity_days": 60}
    assert registry.module_settings(other.id, "churn_prediction") == {}


@pytest.mark.parametrize(("module", "values", "message"), [
    ("churn_prediction", {"inactivity_days": 3}, "greater than or equal to 7"),
    ("churn_prediction", {"inactivity_days": "soon"}, "valid integer"),
    ("churn_prediction", {"window": 30}, "no setting 'window'"),
    ("churn_prediction", {}, "no setting given"),
    ("analytics", {"days": 1}, "has no settings"),
])
def test_bad_settings_are_refused_and_record_nothing(registry: Registry, admin: TenantContext, module: str,
                                                     values: dict, message: str) -> None:
    shop, _ = registry.provision_tenant(admin, slug="bad-settings", name="B", industry="ecommerce", plan="standard")
    before = len(registry.events(shop.id))
    with pytest.raises(InvalidInputError, match=message):
        registry.set_module_settings(admin, shop.id, module, values)
    assert len(registry.events(shop.id)) == before


def test_settings_need_the_module_on(registry: Registry, admin: TenantContext) -> None:
    free, _ = registry.provision_tenant(admin, slug="free-shop", name="F", industry="ecommerce", plan="free")
    with pytest.raises(InvalidStateError, match="not enabled"):
        registry.set_module_settings(admin, free.id, "churn_prediction", {"inactivity_days": 30})
