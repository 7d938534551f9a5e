"""`shironzi usage --tenant T --from D --to D [--json]` (one tenant's metered usage and cost) and
`shironzi usage collect [--day D]` (the metering job)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shironzi.cli.options import parse_day
from shironzi.errors import InvalidInputError
from shironzi.metering.cost import tenant_usage_report
from shironzi.metering.usage import collect_usage

usage_app = typer.Typer(name="usage", help="Usage metering: one tenant's usage and cost, or collect a day.",
                        invoke_without_command=True)
console = Console(highlight=False, soft_wrap=True)


@usage_app.callback()
def usage_cmd(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id or slug.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD); default: the month's first.")]
    = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD); default: today.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """A tenant's metered usage per day, its totals and the cost and margin of each month."""
    if ctx.invoked_subcommand is not None:
        return
    if tenant is None:
        raise InvalidInputError("--tenant is required (or use `shironzi usage collect`)")

    today = datetime.now(UTC).date()
    last = parse_day(end, option="--to") or today
    first = parse_day(start, option="--from") or last.replace(day=1)
    report = tenant_usage_report(tenant, start=first, end=last)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    console.print(f"{report['slug']} ({report['tenant_id']}), plan {report['plan']}: {report['start']} .. "
                  f"{report['end']}, {report['days_metered']} days metered")
    totals = report["totals"]
    table = Table("metric", "total")
    for name in ("events_landed", "bytes_total", "api_requests", "compute_seconds"):
        table.add_row(name, f"{totals[name]:,}")
    console.print(table)
    months = Table("month", "events", "GB-month", "API calls", "cost", "plan price", "margin")
    for m in report["months"]:
        months.add_row(m["month"], f"{m['events_landed']:,}", f"{m['gb_month']:.4f}", f"{m['api_requests']:,}",
                       f"{m['cost']:.2f}", f"{m['plan_price']:.2f}", f"{m['margin']:.2f}")
    console.print(months)


@usage_app.command("collect")
def collect_cmd(
    day: Annotated[str | None, typer.Option("--day", help="The UTC day to meter (YYYY-MM-DD); default: yesterday.")]
    = None,
) -> None:
    """Meter one day for every tenant into `_platform/usage` (re-running a day replaces it)."""

    chosen = parse_day(day, option="--day") or datetime.now(UTC).date() - timedelta(days=1)
    with console.status(f"metering {chosen} ..."):
        result = collect_usage(day=chosen)
    console.print(f"usage of {chosen}: {result.rows:,} tenants, version {result.version}, "
                  f"{len(result.inputs)} tables read")
