"""The kernel's own command groups (tenants, modules, keys, lake)."""

from __future__ import annotations

import typer

from shironzi.cli import alerts, audit, exports, key_rotation, lake, placement, tenants

key_rotation.register(tenants.keys_app)
placement.register(tenants.tenants_app)


def kernel_groups() -> list[tuple[str, typer.Typer]]:
    return [
        ("tenants", tenants.tenants_app),
        ("modules", tenants.modules_app),
        ("keys", tenants.keys_app),
        ("lake", lake.app),
        ("audit", audit.audit_app),
        ("gdpr", audit.gdpr_app),
        ("retention", audit.retention_app),
        ("alerts", alerts.alerts_app),
        ("webhooks", alerts.webhooks_app),
        ("compliance", audit.compliance_app),
        ("placement", placement.placement_app),
        ("exports", exports.exports_app),
    ]
