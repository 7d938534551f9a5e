"""The dbt var `churn_windows` comes from the tenants' churn_prediction settings, read in one query."""

from __future__ import annotations

from pathlib import Path

from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from transformations.dbt_runner import churn_windows_var


def test_churn_windows_var_holds_the_tenants_that_set_their_windows(home: Path) -> None:
    settings = get_settings()
    registry = get_registry(settings)
    admin = TenantContext.admin(actor="test", purpose="churn windows")
    both, _ = registry.provision_tenant(admin, slug="both-set", name="B", industry="ecommerce", plan="standard")
    one, _ = registry.provision_tenant(admin, slug="one-set", name="O", industry="ecommerce", plan="standard")
    registry.provision_tenant(admin, slug="none-set", name="N", industry="ecommerce", plan="standard")
    registry.set_module_settings(admin, both.id, "churn_prediction", {"inactivity_days": 60, "horizon_days": 90})
    registry.set_module_settings(admin, one.id, "churn_prediction", {"horizon_days": 45})
    assert churn_windows_var(settings) == {
        both.id: {"inactivity_days": 60, "horizon_days": 90},
        one.id: {"inactivity_days": 45, "horizon_days": 45},  # one setting alone sets both
    }
