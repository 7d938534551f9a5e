"""`shironzi dr registry-standby status|promote` and `shironzi dr replicate-models`: the registry's hot standby
and the champion models' copy in the peer region, added to the `dr` group of `shironzi.cli.dr` by `register`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shironzi.dr.mlflow_replica import replicate_champions
from shironzi.dr.registry_standby import promote, replication_status
from shironzi.settings import get_settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

standby_app = typer.Typer(help="The tenant registry's PostgreSQL hot standby.", no_args_is_help=True)

StandbyOption = Annotated[str, typer.Option("--standby", help="The standby's registry URL (postgresql+psycopg://...).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@standby_app.command("status")
def standby_status(
    standby: StandbyOption,
    primary: Annotated[str | None, typer.Option(help="The primary's URL (default: SHIRONZI_DATABASE_URL).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Replication from both ends: the standbys the primary streams to, the standby's replayed WAL and the lag."""
    status = replication_status(primary or get_settings().resolved_database_url, standby)
    if as_json:
        typer.echo(json.dumps(status.as_dict(), indent=2, default=str))
        return
    table = Table(show_header=False, title="registry standby")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in status.as_dict().items():
        if name != "replicas":
            table.add_row(name, "-" if value is None else str(value))
    for replica in status.replicas:
        table.add_row(f"replica {replica.application_name}", f"{replica.state}, {replica.lag_bytes} bytes behind")
    console.print(table)


@standby_app.command("promote")
def standby_promote(standby: StandbyOption) -> None:
    """Promote the standby to primary (failover); point SHIRONZI_DATABASE_URL at it afterwards."""
    status = promote(standby)
    console.print(f"promoted: the standby is now a primary at WAL {status.standby_replay_lsn or '-'}")


def replicate_models_command(
    to: Annotated[str, typer.Option("--to", help="The peer region's MLflow tracking/registry URI.")],
    source: Annotated[str | None, typer.Option(help="The source MLflow URI (default: MLFLOW_TRACKING_URI).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Copy every champion (and per-tenant champion) model version, its artifacts and aliases to the peer."""
    report = replicate_champions(source or get_settings().resolved_mlflow_tracking_uri, to)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    table = Table(title=f"champions replicated to {to}")
    for column in ("model", "alias", "source version", "peer version", "copied"):
        table.add_column(column)
    for item in report.models:
        table.add_row(item.model, item.alias, str(item.source_version), str(item.peer_version),
                      "yes" if item.copied else "already there")
    console.print(table)


def register(dr_app: typer.Typer) -> None:
    """`shironzi dr registry-standby status|promote` and `shironzi dr replicate-models`."""
    dr_app.add_typer(standby_app, name="registry-standby")
    dr_app.command("replicate-models")(replicate_models_command)
