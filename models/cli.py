"""`shironzi models train|promote|rollback|list`, `shironzi score` and `shironzi score export`.

Every `shironzi` start loads this plugin, so the model stack (about a second of imports) loads inside the
commands that use it.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shironzi.cli.options import parse_day
from shironzi.errors import InvalidInputError

models_app = typer.Typer(help="Churn and trend models: train, promote, roll back, list (MLflow registry).",
                         no_args_is_help=True)
console = Console()
TRAIN_TARGETS = ("churn", "trend", "all")


def _status(message: str) -> Any:
    return console.status(message, spinner="dots")


def _model_name(name: str) -> str:
    from models.common import CHURN_MODEL, MODEL_NAMES, TREND_MODEL

    short = {"churn": CHURN_MODEL, "trend": TREND_MODEL}
    resolved = short.get(name, name)
    if resolved not in MODEL_NAMES:
        raise InvalidInputError(f"unknown model {name!r}: use churn, trend, {' or '.join(MODEL_NAMES)}")
    return resolved


@models_app.command("train")
def train_command(
    target: str = typer.Argument("all", help="churn, trend or all."),
    seed: int = typer.Option(0, help="Random seed (same data versions + seed -> same metrics)."),
    promote: bool = typer.Option(False, "--promote", help="Run the promotion gate after training."),
    no_register: bool = typer.Option(False, "--no-register", help="Log the run without registering a version."),
) -> None:
    """Train on the current lake (time split), log to MLflow, register the challenger."""
    from models.common import CHURN_MODEL, TREND_MODEL

    if target not in TRAIN_TARGETS:
        raise InvalidInputError(f"unknown training target {target!r}: use {', '.join(TRAIN_TARGETS)}")
    jobs = [("churn", CHURN_MODEL), ("trend", TREND_MODEL)] if target == "all" else [
        (target, CHURN_MODEL if target == "churn" else TREND_MODEL)]
    for kind, name in jobs:
        with _status(f"training {name} ..."):
            if kind == "churn":
                from models.churn import train_churn

                result = train_churn(seed=seed, register=not no_register)
                figures = (f"AUC {result.metrics.get('auc', float('nan')):.3f}, calibration error "
                           f"{result.metrics.get('calibration_error', float('nan')):.3f}"
                           + (f", {len(result.dedicated)} dedicated tenant models" if result.dedicated else ""))
            else:
                from models.trend import train_trend

                result = train_trend(seed=seed, register=not no_register)
                figures = (f"sMAPE {result.metrics.get('smape', float('nan')):.1f} vs seasonal naive "
                           f"{result.metrics.get('baseline_smape', float('nan')):.1f}, 80% interval coverage "
                           f"{result.metrics.get('interval_coverage', float('nan')):.2f}")
        version = f"version {result.model_version}" if result.model_version else "not registered"
        console.print(f"{name}: run {result.run_id}, {version}: {figures}")
        if promote and result.model_version:
            _print_decision(_promote(name))


def _promote(name: str) -> Any:
    from models.registry import promote_if_better

    with _status(f"promotion gate for {name} ..."):
        return promote_if_better(name)


def _print_decision(decision: Any) -> None:
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"{decision.name}: {verdict}: {decision.reason} (champion: {decision.champion_version})")


@models_app.command("promote")
def promote_command(
    name: str = typer.Argument(..., help="shironzi-churn or shironzi-trend (or churn, trend)."),
    margin: float = typer.Option(None, help="Required gain over the champion (default: settings)."),
) -> None:
    """Move `champion` to the challenger when it beats the champion on the same holdout."""
    from models.registry import promote_if_better

    resolved = _model_name(name)
    with _status(f"promotion gate for {resolved} ..."):
        decision = promote_if_better(resolved, margin=margin)
    _print_decision(decision)


@models_app.command("rollback")
def rollback_command(
    name: str = typer.Argument(..., help="shironzi-churn or shironzi-trend (or churn, trend)."),
) -> None:
    """Restore the champion that the last promotion replaced."""
    from models.promotion import rollback

    decision = rollback(_model_name(name))
    console.print(f"{decision.name}: {decision.reason}")


@models_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Registered model versions with their aliases and holdout metrics."""
    from models.tracking import list_models

    rows = list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"{len(rows)} registered model versions")
    for column in ("model", "version", "aliases", "scope", "metrics", "run"):
        table.add_column(column)
    for row in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in row["metrics"].items())
        scope = row["scope"] + (f" ({row['tenant_id']})" if row.get("tenant_id") else "")
        table.add_row(row["name"], row["version"], ", ".join(row["aliases"]) or "-", scope, metrics or "-",
                      row["run_id"] or "-")
    console.print(table)


def _parse_date(value: str | None) -> date | None:
    return parse_day(value, option="--date")


score = typer.Typer(help="Batch-score churn and forecast KPIs (`shironzi score`), or export scores "
                    "(`shironzi score export`).")


@score.callback(invoke_without_command=True)
def score_command(
    ctx: typer.Context,
    score_date: str = typer.Option(None, "--date", help="Score date (YYYY-MM-DD). Default: today (UTC)."),
    tenant: list[str] = typer.Option(None, "--tenant", help="Only these tenant ids (repeatable)."),
    forecasts: bool = typer.Option(True, "--forecasts/--no-forecasts", help="Also write the trend forecasts."),
) -> None:
    """Batch-score churn for tenants with churn_prediction on (and forecast KPIs for trend_forecast tenants)."""
    if ctx.invoked_subcommand is not None:
        return
    from models.common import CHAMPION, TREND_MODEL
    from models.scoring import score_churn, write_forecasts
    from models.tracking import aliases

    day = _parse_date(score_date)
    tenants = tenant or None
    with _status("scoring churn ...") as status:
        result = score_churn(score_date=day, tenant_ids=tenants,
                             progress=lambda m: status.update(f"scoring churn: {m}"))
    skipped = f" ({len(result.skipped_tenants)} skipped: churn_prediction off)" if result.skipped_tenants else ""
    console.print(f"churn_scores: {result.rows:,} rows for {len(result.tenants)} tenants on {result.score_date}"
                  f"{skipped}, versions {result.table_versions or '-'}")
    if forecasts:
        if CHAMPION not in aliases(TREND_MODEL):
            console.print(f"forecasts: skipped ({TREND_MODEL} has no champion yet)")
            return
        with _status("writing forecasts ..."):
            written = write_forecasts(tenant_ids=tenants)
        console.print(f"forecasts: {written.rows:,} rows for {len(written.tenants)} tenants, "
                      f"versions {written.table_versions or '-'}")


@score.command("export")
def export_command(
    table: str = typer.Option(..., "--table", help="churn_scores or forecasts."),
    tenant: str = typer.Option(..., "--tenant", help="The tenant's slug or id."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out: str = typer.Option(None, "--out", help="Output file (CSV: default standard output)."),
    day: str = typer.Option(None, "--date", help="Score/generated date (YYYY-MM-DD). Default: the newest."),
) -> None:
    """Export one tenant's batch predictions (its newest slice by default) as CSV or Parquet."""
    from pathlib import Path

    from models.export import export_predictions

    result = export_predictions(tenant, table, fmt=fmt, out=Path(out) if out else None,  # type: ignore[arg-type]
                                day=_parse_date(day))
    if result.path is not None:
        console.print(f"{result.rows:,} {table} rows of {result.day} written to {result.path}")
