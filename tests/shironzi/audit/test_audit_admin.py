"""Tenant administration through the registry leaves synchronous, secret-free audit events."""

from __future__ import annotations

import json
from pathlib import Path

from shironzi.audit.log import get_audit_log, read_audit_events
from shironzi.audit.verify import verify_chains
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

ADMIN = TenantContext.admin(actor="ops@platform", purpose="onboarding")


def test_registry_admin_writes_emit_audit_events(audit_home: Path) -> None:
    registry = get_registry()
    get_audit_log().flush_seconds = 3600  # prove the writes are synchronous, not the background thread
    tenant, _ = registry.provision_tenant(ADMIN, slug="acme", name="Acme", industry="ecommerce")
    registry.change_plan(ADMIN, tenant.id, "enterprise")
    registry.disable_module(ADMIN, tenant.id, "notifications")
    registry.enable_module(ADMIN, tenant.id, "notifications")
    record, _ = registry.issue_key(ADMIN, tenant.id, scopes=["read"], label="bi")
    registry.revoke_key(ADMIN, record.prefix)
    registry.suspend(ADMIN, tenant.id, reason="unpaid")
    registry.resume(ADMIN, tenant.id)
    registry.offboard(ADMIN, tenant.id)
    table = read_audit_events(flush=False)
    actions = table.column("action").to_pylist()
    for expected in (
        "tenant_provisioned",
        "api_key_issued",
        "tenant_plan_changed",
        "module_disabled",
        "module_enabled",
        "api_key_revoked",
        "tenant_suspended",
        "tenant_resumed",
        "tenant_offboarding_started",
    ):
        assert expected in actions, expected
    assert set(table.column("tenant_id").to_pylist()) == {tenant.id}
    assert all(table.column("is_admin").to_pylist())
    assert set(table.column("actor").to_pylist()) == {"ops@platform"}
    details = " ".join(table.column("details").to_pylist())
    assert "key_hash" not in details and "salt" not in details
    suspended = [
        json.loads(d)
        for a, d in zip(actions, table.column("details").to_pylist(), strict=True)
        if a == "tenant_suspended"
    ]
    assert suspended == [{"reason": "unpaid"}]
    assert verify_chains().ok
