"""The kernel's own command groups (tenants, modules, keys, lake)."""

from __future__ import annotations

import typer


def kernel_groups() -> list[tuple[str, typer.Typer]]:
    from shironzi.cli import lake, tenants

    return [
        ("tenants", tenants.tenants_app),
        ("modules", tenants.modules_app),
        ("keys", tenants.keys_app),
        ("lake", lake.app),
    ]
