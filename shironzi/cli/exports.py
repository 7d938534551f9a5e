"""`shironzi exports ...`: run a queued export (after its API worker died) and the expiry sweep."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated

import typer
from rich.console import Console

from shironzi.cli.options import parse_day
from shironzi.exports import expire_exports, run_export

exports_app = typer.Typer(name="exports", help="Tenant data exports: run a queued one, expire old files.",
                          no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


@exports_app.command("run")
def run_cmd(export_id: Annotated[str, typer.Argument(help="The export's id (exp_...).")]) -> None:
    """Write a queued export's file now (the API normally runs it on a background thread)."""
    record = run_export(export_id)
    detail = f"{record.rows} rows, {record.size_bytes} bytes" if record.status == "ready" else record.error
    console.print(f"export {record.id}: {record.status} ({detail})")
    if record.status != "ready":
        raise typer.Exit(1)


@exports_app.command("expire")
def expire_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Expire as if it were this day (YYYY-MM-DD, "
                                              "end of day UTC); default: now.")] = None,
) -> None:
    """Delete the files of exports past their expiry and mark them expired."""
    day = parse_day(as_of, option="--as-of")
    now = datetime.combine(day, time.max, tzinfo=UTC) if day else None
    result = expire_exports(now=now)
    console.print(f"expired {result.expired} exports, deleted {result.files_deleted} files")
