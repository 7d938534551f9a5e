"""`shironzi dr drill`: the disaster-recovery drill (`ingestion.dr_drill`) from the command line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def drill(
    base: Annotated[Path | None, typer.Option(help="Working directory of the drill. Default: a temporary one.")]
    = None,
    events_per_second: Annotated[int, typer.Option(min=10, help="Steady production rate (both regions).")] = 2_000,
    steady_seconds: Annotated[float, typer.Option(min=1, help="Producing before the kill.")] = 8.0,
    outage_seconds: Annotated[float, typer.Option(min=1, help="Serving from the peer before failback.")] = 8.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Kill region A mid-ingest, fail over to B, keep ingesting and serving, fail back; check nothing was lost
    or duplicated and residency held. Exits 1 when a check fails."""
    from ingestion.dr_drill import DrillConfig, DrillFailedError, run_drill

    console = Console(stderr=True, highlight=False)
    with tempfile.TemporaryDirectory(prefix="shironzi-drill-") as scratch:
        config = DrillConfig(base or Path(scratch), events_per_second=events_per_second,
                             steady_seconds=steady_seconds, outage_seconds=outage_seconds)
        with console.status("drill") as status:
            report = run_drill(config, progress=lambda text: status.update(text))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        for name, value in report.as_dict().items():
            typer.echo(f"{name}: {value}")
    if not report.passed:
        raise DrillFailedError(f"the drill failed: {json.dumps(report.as_dict(), default=str)}")
