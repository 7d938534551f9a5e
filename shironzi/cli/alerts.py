"""`shironzi alerts ...` (rules, open alerts, silences) and `shironzi webhooks ...` (the delivery queue)."""

from __future__ import annotations

import getpass
import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shironzi.alerts.engine import add_silence, evaluate, list_alerts
from shironzi.errors import InvalidInputError
from shironzi.webhooks.delivery import delivery_log, dispatch_due, dispatch_until_settled, redeliver

alerts_app = typer.Typer(name="alerts", help="Alerts: evaluate the rules, list open alerts, silence them.",
                         no_args_is_help=True)
webhooks_app = typer.Typer(name="webhooks", help="Webhook deliveries: retry what is due, list, redeliver.",
                           no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`30m`, `2h`, `1d` ... as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInputError(f"a duration is a number and s, m, h or d (e.g. 2h), got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@alerts_app.command("evaluate")
def evaluate_cmd() -> None:
    """Evaluate every rule once: new alerts are delivered, open ones de-duplicated, gone ones resolved."""
    result = evaluate()
    console.print(f"firing {len(result.firing)} new, {len(result.still_open)} still open, "
                  f"{len(result.silenced)} silenced, {len(result.resolved)} resolved")


@alerts_app.command("list")
def list_cmd(include_resolved: Annotated[bool, typer.Option("--all", help="Resolved alerts too.")] = False) -> None:
    """The open alerts (most severe first)."""
    rows = list_alerts(include_resolved=include_resolved)
    if not rows:
        console.print("no open alerts")
        return
    table = Table("fingerprint", "rule", "severity", "tenant", "status", "started", "summary")
    for row in rows:
        table.add_row(row["fingerprint"], row["rule"], row["severity"], row["tenant_id"] or "-", row["status"],
                      f"{row['started_at']:%Y-%m-%d %H:%M}", row["summary"])
    console.print(table)


@alerts_app.command("silence")
def silence_cmd(
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d.")] = "2h",
    rule: Annotated[str | None, typer.Option("--rule", help="Rule name to match.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id to match.")] = None,
    fingerprint: Annotated[str | None, typer.Option("--fingerprint", help="One alert.")] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="Why.")] = None,
) -> None:
    """Silence the alerts matching every given matcher (they stay recorded, but are not delivered)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    silence_id = add_silence(rule=rule, tenant_id=tenant, fingerprint=fingerprint, duration=parse_duration(duration),
                             created_by=f"cli:{user}", comment=comment)
    console.print(f"silence {silence_id} for {duration}")


@webhooks_app.command("dispatch")
def dispatch_cmd(
    until_settled: Annotated[bool, typer.Option("--until-settled", help="Repeat until nothing is open.")] = False,
) -> None:
    """Attempt the deliveries that are due (retries with backoff; dead letters after the retry window)."""
    result = dispatch_until_settled() if until_settled else dispatch_due()
    console.print(f"attempted {result.attempted}: delivered {len(result.delivered)}, "
                  f"retrying {len(result.retrying)}, dead {len(result.dead)}")


@webhooks_app.command("list")
def list_deliveries_cmd(
    tenant: Annotated[str | None, typer.Option("--tenant", help="One tenant's deliveries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
) -> None:
    """The newest deliveries with their state."""
    table = Table("delivery", "tenant", "event", "status", "attempts", "http", "created")
    for row in delivery_log(tenant_id=tenant, limit=limit):
        table.add_row(row["delivery_id"], row["tenant_id"] or "-", row["event_type"], row["status"],
                      str(row["attempts"]), str(row["http_status"] or "-"), f"{row['created_at']:%Y-%m-%d %H:%M:%S}")
    console.print(table)


@webhooks_app.command("redeliver")
def redeliver_cmd(delivery_id: Annotated[str, typer.Argument(help="Delivery id.")]) -> None:
    """Send a delivery again (same body and idempotency key)."""
    result = redeliver(delivery_id)
    console.print(f"redelivered: delivered {len(result.delivered)}, retrying {len(result.retrying)}")
