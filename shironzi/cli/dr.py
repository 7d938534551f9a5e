"""`shironzi dr ...`: region replication, its lag, failover and failback, and the drill."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shironzi.cli.tenants import _admin_ctx
from shironzi.dr.failover import failback, failover
from shironzi.dr.regions import region_states
from shironzi.dr.replicate import region_lag, replicate_all, report_lag
from shironzi.health import start_health_server
from shironzi.settings import get_settings

dr_app = typer.Typer(name="dr", help="Regions and disaster recovery: replication, failover, failback, drill.",
                     no_args_is_help=True)

RegionOpt = Annotated[str, typer.Option("--region", help="The region (see SHIRONZI_REGIONS).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, default=str, indent=2, sort_keys=True))


@dr_app.command("replicate")
def replicate_cmd(
    once: Annotated[bool, typer.Option("--once", help="One pass over every region, then exit.")] = False,
) -> None:
    """Ship every region's new Delta commits to its peer (continuously unless --once)."""
    settings = get_settings()
    health = start_health_server(settings.health_port, stale_after_s=settings.health_stale_seconds,
                                 name="dr-replicate")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replicate", total=None)

        def progress(table: str, done: int, total: int) -> None:
            bar.update(task, description=table, completed=done, total=total)

        while True:
            passes = replicate_all(settings, progress=progress)
            lags = report_lag(settings)
            if health is not None:
                health.beat(state="replicating", regions=len(passes),
                            lag_versions=max((lag.lag_versions for v in lags.values() for lag in v), default=0))
            if once:
                break
            time.sleep(settings.dr_replicate_interval_seconds)
    for run in passes:
        typer.echo(f"{run.region} ({run.direction}): {run.versions} versions over {len(run.tables)} tables"
                   + (f", {len(run.blocked)} blocked for residency" if run.blocked else ""))


@dr_app.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Each region's state and epoch, and per table the replication lag in versions and seconds."""
    settings = get_settings()
    states = region_states(settings)
    report: dict[str, Any] = {}
    for region, state in states.items():
        if settings.region_peers.get(region) not in settings.regions:
            continue
        direction = "reverse" if state.state == "failed_over" else "forward"
        lags = region_lag(region, direction=direction, settings=settings)  # type: ignore[arg-type]
        report[region] = {**asdict(state), "direction": direction,
                          "tables": [{**asdict(lag), "lag_versions": lag.lag_versions} for lag in lags]}
    if as_json:
        _print_json(report)
        return
    table = Table(title="replication lag")
    for column in ("region", "state", "epoch", "serving", "table", "source", "replica", "lag (versions)", "lag (s)"):
        table.add_column(column, overflow="fold")
    for region, entry in report.items():
        rows = entry["tables"] or [{"relative": "-", "source_version": "", "replica_version": "", "lag_versions": "",
                                     "lag_seconds": 0.0}]
        for row in rows:
            table.add_row(region, entry["state"], str(entry["epoch"]), entry["serving_region"], row["relative"],
                          str(row["source_version"]), str(row["replica_version"]), str(row["lag_versions"]),
                          f"{row['lag_seconds']:.1f}")
    Console(highlight=False, soft_wrap=True).print(table)


@dr_app.command("failover")
def failover_cmd(region: RegionOpt, as_json: JsonOpt = False) -> None:
    """Fence a failed region's writers and serve its tenants from its peer's replica."""
    result = failover(region, ctx=_admin_ctx("dr_failover"))
    if as_json:
        _print_json(asdict(result))
        return
    typer.echo(f"{region} failed over to {result.serving_region} (epoch {result.epoch}) in {result.seconds:.1f}s; "
               f"serving lake {result.serving_lake}")


@dr_app.command("failback")
def failback_cmd(
    region: RegionOpt,
    force: Annotated[bool, typer.Option("--force", help="Fail back even while the replica lags past the bound.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Ship the outage's writes back to the region, fence its peer's writers and serve it from home again."""
    result = failback(region, ctx=_admin_ctx("dr_failback"), force=force)
    if as_json:
        _print_json(asdict(result))
        return
    typer.echo(f"{region} failed back (epoch {result.epoch}, {result.caught_up} versions shipped back) in "
               f"{result.seconds:.1f}s")
