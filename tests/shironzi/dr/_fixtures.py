"""Helpers of the DR tests: two regions with a lake each, tenants in them, and event batches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.lake.fencing import release_fences
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry

ADMIN = TenantContext.admin(actor="test", purpose="dr test")


def two_region_settings(home: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """eu-west and us-east, each with its own lake directory, paired with each other."""
    lakes = {region: {"uri": str(home / f"lake-{region}")} for region in ("eu-west", "us-east")}
    monkeypatch.setenv("SHIRONZI_REGION_LAKES", json.dumps(lakes))
    for name, value in env.items():
        monkeypatch.setenv(f"SHIRONZI_{name.upper()}", value)
    get_settings.cache_clear()
    release_fences()
    from shironzi.dr.regions import forget_states

    forget_states()
    return get_settings()


def provision(settings: Settings, *specs: tuple[str, str, str, str, str]) -> dict[str, str]:
    """slug -> tenant id, for (slug, region, industry, plan, placement) specs."""
    registry = get_registry(settings)
    ids = {}
    for slug, region, industry, plan, placement in specs:
        tenant, _ = registry.provision_tenant(ADMIN, slug=slug, name=slug, industry=industry, plan=plan,
                                              region=region, placement=placement)
        ids[slug] = tenant.id
    return ids


def events(tenant_ids: list[str], n: int, *, start: int = 0) -> pa.Table:
    """n event rows cycling over the tenants, with event ids start..start+n-1."""
    return pa.table({
        "tenant_id": [tenant_ids[i % len(tenant_ids)] for i in range(n)],
        "event_id": [f"ev-{start + i}" for i in range(n)],
        "event_date": [dt.date(2026, 12, 1 + (i % 3)) for i in range(n)],
        "amount": [float(i) for i in range(n)],
    })
