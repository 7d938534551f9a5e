"""Helpers shared by the ingestion tests: provision real tenants and read bronze back."""

from __future__ import annotations

import sys
from typing import Any

import polars as pl

from shironzi.settings import get_settings


def provision(specs: list[tuple[str, str, str]], *, placement: dict[str, str] | None = None) -> list[Any]:
    """Provision (slug, industry, plan) tenants in the test's registry; returns the Tenant records."""
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry()
    ctx = TenantContext.admin(actor="test", purpose="ingestion test")
    out = []
    for slug, industry, plan in specs:
        tenant, _ = registry.provision_tenant(
            ctx, slug=slug, name=slug, industry=industry, plan=plan, placement=(placement or {}).get(slug)
        )
        out.append(tenant)
    return out


def bronze_uri(region: str = "eu-west", tenant_id: str | None = None) -> str:
    from shironzi.lake import table_uri

    lake = get_settings().resolved_lake_uri
    if tenant_id:
        return table_uri(
            lake, layer="bronze", table="events", region=region, placement="dedicated", tenant_id=tenant_id
        )
    return table_uri(lake, layer="bronze", table="events", region=region)


def quarantine_uri(region: str = "eu-west") -> str:
    from shironzi.lake import table_uri

    return table_uri(get_settings().resolved_lake_uri, layer="quarantine", table="events", region=region)


def read_all(uri: str) -> pl.DataFrame:
    from shironzi.lake import read_polars, table_exists

    return read_polars(uri) if table_exists(uri) else pl.DataFrame()


def killed_cli(point: str, after_flushes: int) -> list[str]:
    """argv of the `shironzi` CLI in a child process that SIGKILLs itself at `point` of flush `after_flushes`.

    The hook is set in the child (`ingestion.bronze.landing_hook`); the CLI itself has no crash switch."""
    from ingestion.bronze import LANDING_POINTS

    assert point in LANDING_POINTS, point
    code = (
        "import os, signal\n"
        "import ingestion.bronze as bronze\n"
        "def hook(point, flush):\n"
        f"    if point == {point!r} and flush == {int(after_flushes)}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "bronze.landing_hook = hook\n"
        "from shironzi.cli.main import run\n"
        "run()\n"
    )
    return [sys.executable, "-c", code]
