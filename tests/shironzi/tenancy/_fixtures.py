"""Helpers shared by the tenancy and CLI tests."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from shironzi.tenancy import Registry
from shironzi.tenancy.models import api_keys, tenant_events, tenant_modules, tenants

ALL_TABLES = (tenants, tenant_modules, api_keys, tenant_events)
PROJECTIONS = (tenants, tenant_modules, api_keys)


def snapshot(
    registry: Registry, tables: tuple[sa.Table, ...] = ALL_TABLES
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables, ordered, for before/after comparisons."""
    with registry.engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(sa.select(t))), key=repr) for t in tables}
