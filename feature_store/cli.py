"""`shironzi features list|materialize|get`."""

from __future__ import annotations

import json
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

features_app = typer.Typer(help="Feature store: definitions, offline pipelines, online materialisation.",
                           no_args_is_help=True)
console = Console()


@features_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the feature views and their features."""
    from feature_store.registry import describe_views

    described = describe_views()
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    table = Table(title=f"{sum(len(v['features']) for v in described)} features in {len(described)} views")
    for column in ("view", "entity", "ttl", "version", "features"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", overflow="fold")
    for view in described:
        table.add_row(view["name"], view["entity"], f"{view['ttl_days']:g}d", str(view["version"]),
                      "\n".join(f"{f['name']} ({f['dtype']})" for f in view["features"]), view["description"])
    console.print(table)


@features_app.command("materialize")
def materialize_command(
    view: list[str] = typer.Option(None, "--view", help="Only these views (repeatable). Default: all."),
    tenant: list[str] = typer.Option(None, "--tenant", help="Only these tenant ids (repeatable)."),
    cadence: str = typer.Option("weekly", help="Snapshot cadence: daily or weekly."),
    offline_only: bool = typer.Option(False, "--offline-only", help="Build the offline tables only."),
    online_only: bool = typer.Option(False, "--online-only", help="Only push the latest values online."),
) -> None:
    """Run the offline Spark pipelines (incrementally), then materialise the latest values online."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from feature_store.materialize import materialize
    from feature_store.offline import build_features
    from shironzi.errors import InvalidInputError

    if cadence not in ("daily", "weekly"):
        raise InvalidInputError(f"cadence must be daily or weekly, got {cadence!r}")
    if offline_only and online_only:
        raise InvalidInputError("--offline-only and --online-only exclude each other")
    mode: Literal["daily", "weekly"] = "daily" if cadence == "daily" else "weekly"
    views, tenants = view or None, tenant or None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=None)
        if not online_only:
            built = build_features(views, tenant_ids=tenants, cadence=mode,
                                   progress=lambda m: bar.update(task, description=f"offline: {m}"))
            console.print(f"offline: {built.total_rows:,} feature rows for {len(built.tenants)} tenants"
                          + (f" ({len(built.skipped_tenants)} skipped: module off)" if built.skipped_tenants else ""))
        if not offline_only:
            pushed = materialize(views, tenant_ids=tenants,
                                 progress=lambda m: bar.update(task, description=f"online: {m}"))
            console.print(f"online: {pushed.total_rows:,} rows for {len(pushed.tenants)} tenants")


@features_app.command("get")
def get_command(
    tenant_id: str = typer.Argument(..., help="Tenant id."),
    customer_ids: list[str] = typer.Argument(..., help="One or more customer ids."),
    feature: list[str] = typer.Option(None, "--feature", "-f",
                                      help="view or view:feature (repeatable). Default: every view."),
) -> None:
    """Read online feature values for customers of one tenant (JSON)."""
    from feature_store.materialize import get_online_features
    from feature_store.registry import list_feature_views

    refs = feature or [v.name for v in list_feature_views()]
    typer.echo(json.dumps(get_online_features(tenant_id, customer_ids, refs), indent=2, default=str))
