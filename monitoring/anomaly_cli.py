"""`shironzi monitor tenants daily|detect|anomalies`: per-tenant data monitors and their anomalies.

This module loads at every `shironzi` start (a CLI plugin): the monitoring modules are imported inside the
commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shironzi.cli.options import parse_day

tenants_app = typer.Typer(help="Per-tenant data monitors: tenant_daily, the anomaly detector, anomalies.",
                          no_args_is_help=True)
console = Console()
_T = TypeVar("_T")


def _range(start: str | None, end: str | None) -> tuple[date, date]:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    from monitoring.tenant_daily import check_range

    last = parse_day(end, option="--end") or yesterday
    first = parse_day(start, option="--start") or last
    check_range(first, last)
    return first, last


START = typer.Option(None, "--start", help="First event day (YYYY-MM-DD). Default: the end day.")
END = typer.Option(None, "--end", help="Last event day (YYYY-MM-DD). Default: yesterday (UTC).")


def _with_spinner(label: str, work: Callable[[], _T]) -> _T:
    """Run one long stage under a rich spinner with its elapsed time."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        bar.add_task(label, total=None)
        return work()


@tenants_app.command("daily")
def daily_command(start: str | None = START, end: str | None = END) -> None:
    """Compute `_platform/monitoring/tenant_daily` for a date range, for every tenant at once."""
    from monitoring.tenant_daily import build_tenant_daily

    first, last = _range(start, end)
    result = _with_spinner(f"tenant_daily {first}..{last}", lambda: build_tenant_daily(start=first, end=last))
    console.print(f"tenant_daily {first}..{last}: {result.rows:,} rows for {result.tenants:,} tenants"
                  + (f" (table version {result.version})" if result.version is not None else " (no events)"))


@tenants_app.command("detect")
def detect_command(start: str | None = START, end: str | None = END) -> None:
    """Run the anomaly detector over tenant_daily into `_platform/monitoring/anomalies`."""
    from monitoring.detector import build_anomalies

    first, last = _range(start, end)
    result = _with_spinner(f"anomalies {first}..{last}", lambda: build_anomalies(start=first, end=last))
    kinds = ", ".join(f"{k} {n}" for k, n in result.by_kind.items()) or "none"
    console.print(f"anomalies {first}..{last}: {result.anomalies:,} on {result.tenants:,} tenants ({kinds})")


@tenants_app.command("anomalies")
def anomalies_command(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant id."),
    start: str | None = START,
    end: str | None = END,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the anomalies found for a date range."""
    from monitoring.detector import read_anomalies

    first, last = _range(start, end)
    found = read_anomalies(start=first, end=last, tenant_id=tenant)
    if as_json:
        typer.echo(json.dumps(found.to_dicts(), default=str, indent=2))
        return
    table = Table(title=f"{found.height} anomalies {first}..{last}")
    for column in ("tenant_id", "event_date", "kind", "score", "expected", "observed"):
        table.add_column(column, no_wrap=True)
    for row in found.iter_rows(named=True):
        table.add_row(row["tenant_id"], str(row["event_date"]), row["kind"], f"{row['score']:.1f}",
                      f"{row['expected']:.1f}", f"{row['observed']:.0f}")
    console.print(table)
