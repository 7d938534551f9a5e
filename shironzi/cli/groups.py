"""The kernel's own command groups (tenants, modules, keys, lake)."""

from __future__ import annotations

import typer

from shironzi.cli import audit, lake, tenants


def kernel_groups() -> list[tuple[str, typer.Typer]]:
    return [
        ("tenants", tenants.tenants_app),
        ("modules", tenants.modules_app),
        ("keys", tenants.keys_app),
        ("lake", lake.app),
        ("audit", audit.audit_app),
        ("gdpr", audit.gdpr_app),
        ("retention", audit.retention_app),
        ("compliance", audit.compliance_app),
    ]
