"""`shironzi transform`: build the curated layer with dbt (transformations/dbt_runner.py does the work)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shironzi.errors import TransformationError
from shironzi.settings import get_settings
from transformations.dbt_results import RegionBuildResult, failure_message
from transformations.dbt_runner import build_region, run_dbt_build


def transform(
    region: str = typer.Option(
        None, "--region", help="Region to build (default: the settings' default region)."
    ),
    select: str = typer.Option(
        None, "--select", "-s", help="dbt node selection, e.g. 'fct_tenant_daily_kpis+'."
    ),
    full_refresh: bool = typer.Option(
        False, "--full-refresh", help="Rebuild incremental Delta tables in full."
    ),
    full_tests: bool = typer.Option(
        False,
        "--full-tests",
        help="Run every data test on whole tables (an incremental build tests only the rewritten partitions).",
    ),
    tenant: str = typer.Option(
        None, "--tenant", help="Build only this dedicated tenant's own tables (default: the whole region)."
    ),
    target: str = typer.Option(
        None,
        "--target",
        help="dbt target: duckdb (embedded) or spark (dbt-spark over Spark Connect). Default: SHIRONZI_DBT_TARGET.",
    ),
) -> None:
    """Build the curated layer with dbt: bronze Delta -> silver and gold Delta, with every test. A region is
    built in full: its pooled tables and every dedicated tenant's own (analytics on, bronze landed)."""
    settings = get_settings()
    region = region or settings.default_region
    options: dict[str, Any] = {
        "region": region, "select": select, "full_refresh": full_refresh, "settings": settings,
        "full_tests": full_tests, "target": target,
    }
    console = Console(highlight=False, stderr=True)
    with console.status(f"dbt build {region}") as status:
        if tenant:
            build = run_dbt_build(tenant_id=tenant, **options)
            result = RegionBuildResult(region, None, {tenant: build})
        else:
            result = build_region(**options, progress=lambda text: status.update(f"dbt build {text}"))
    out = Console(highlight=False)
    for build in result.builds:
        owner = "pooled" if build.tenant_id is None else f"tenants/{build.tenant_id}"
        out.print(
            f"{region} {owner}: models built: {len(build.models_built)}  tests passed: {build.tests_passed}  "
            f"tests failed: {build.tests_failed}  ({build.seconds:.1f}s"
            f"{', full refresh' if build.full_refresh else ''})"
        )
    table = Table(title="gold Delta tables")
    table.add_column("table")
    table.add_column("version", justify="right")
    for name, version in sorted(result.gold_versions.items()):
        table.add_row(name, str(version))
    out.print(table)
    if not result.success:
        raise TransformationError(failure_message(result), failures=result.failures)
