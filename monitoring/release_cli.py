"""`shironzi releases start|status|pause|resume|rollback|advance`: model rollouts in waves with canary analysis.

Every `shironzi` start loads this plugin, so the model stack loads inside the commands that use it.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

releases_app = typer.Typer(
    help="Roll a model version out in waves (canary, 10 %, 50 %, 100 %), each judged by a canary analysis.",
    no_args_is_help=True,
)
console = Console()
RolloutArg = Annotated[str, typer.Argument(help="Rollout id (ro_...) or a model (churn, trend): its newest rollout.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _ctx(purpose: str) -> Any:
    from shironzi.tenancy import TenantContext

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return TenantContext.admin(actor=f"cli:{user}", purpose=f"cli: releases {purpose}")


def _show(rollout: Any, *, as_json: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps(rollout.as_dict(), indent=2, default=str))
        return
    table = Table(title=f"rollout {rollout.id}: {rollout.model} {rollout.baseline} -> {rollout.candidate} "
                        f"({rollout.status})")
    for column in ("wave", "state", "started", "finished", "tenants", "analysis"):
        table.add_column(column)
    from monitoring.canary import figures_line

    for wave in rollout.waves:
        analysis = wave.get("analysis") or {}
        detail = "; ".join(analysis.get("failures", [])) or figures_line(analysis.get("figures", {}))
        table.add_row(wave["name"], wave["state"], str(wave.get("started_at") or "-")[:19],
                      str(wave.get("finished_at") or "-")[:19], str(analysis.get("tenants", "-")), detail or "-")
    console.print(table)
    if rollout.reason:
        console.print(rollout.reason)


@releases_app.command("start")
def start(
    model: Annotated[str, typer.Argument(help="churn or trend (or the registered name).")],
    version: Annotated[str, typer.Argument(help="The candidate version.")],
    waves: Annotated[str | None, typer.Option(help="Comma-separated waves, e.g. canary,10,50,100 "
                                                   "(default: the release_waves setting).")] = None,
) -> None:
    """Start rolling `version` out; the first wave is served the candidate at once."""
    from models.releases.rollout import start_rollout

    planned = [w for w in waves.split(",") if w.strip()] if waves else None
    _show(start_rollout(model, version, ctx=_ctx("start"), waves=planned))


@releases_app.command("status")
def status(
    rollout: Annotated[str | None, typer.Argument(help="Rollout id or model; all recent rollouts when left out.")]
    = None,
    as_json: JsonOption = False,
) -> None:
    """A rollout's waves and their analyses (or the recent rollouts)."""
    from models.releases.rollout import find_rollout, list_rollouts

    if rollout is not None:
        _show(find_rollout(rollout), as_json=as_json)
        return
    found = list_rollouts()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in found], indent=2, default=str))
        return
    table = Table(title="rollouts")
    for column in ("id", "model", "baseline", "candidate", "status", "wave", "updated"):
        table.add_column(column)
    for r in found:
        wave = r.waves[r.current_wave]["name"] if r.current_wave is not None else "-"
        table.add_row(r.id, r.model, r.baseline, r.candidate, r.status, wave, str(r.updated_at)[:19])
    console.print(table)


@releases_app.command("pause")
def pause(rollout: RolloutArg) -> None:
    """Hold the waves where they are (exposed tenants keep the candidate)."""
    from models.releases.rollout import pause_rollout

    _show(pause_rollout(rollout, ctx=_ctx("pause")))


@releases_app.command("resume")
def resume(rollout: RolloutArg) -> None:
    from models.releases.rollout import resume_rollout

    _show(resume_rollout(rollout, ctx=_ctx("resume")))


@releases_app.command("rollback")
def rollback(
    rollout: RolloutArg,
    reason: Annotated[str, typer.Option(help="Why (kept on the rollout and the audit event).")]
    = "rolled back by an operator",
) -> None:
    """Send every tenant of the rollout back to the baseline version."""
    from models.releases.rollout import rollback_rollout

    _show(rollback_rollout(rollout, ctx=_ctx("rollback"), reason=reason))


@releases_app.command("advance")
def advance(
    model: Annotated[str | None, typer.Option(help="Only this model's rollout.")] = None,
) -> None:
    """Run the canary analysis of every running rollout's waiting wave: pass it on or roll back (one step)."""
    from monitoring.canary import advance_rollouts

    with console.status("canary analysis ...", spinner="dots"):
        outcomes = advance_rollouts(ctx=_ctx("advance"), model=model)
    if not outcomes:
        console.print("no running rollout has a wave waiting")
    for outcome in outcomes:
        detail = "; ".join((outcome.analysis or {}).get("failures", []))
        console.print(f"{outcome.rollout} wave {outcome.wave}: {outcome.outcome}" + (f" ({detail})" if detail else ""))
