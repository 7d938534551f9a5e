"""`shironzi simulate`: synthetic multi-tenant activity into a landing directory (plus ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingestion.synthetic.emit import (
    APPLICABLE_KINDS,
    EXPECTED_REASON,
    FilePer,
    OutputFormat,
    write_ground_truth,
    write_landing_files,
)
from ingestion.synthetic.simulate import BAD_KINDS, SimTenant
from ingestion.synthetic.simulate import simulate as run_simulation
from shironzi.cli.options import parse_day
from shironzi.errors import ConfigurationError, InvalidInputError
from shironzi.observability import stage
from shironzi.settings import get_settings

console = Console(highlight=False)


def resolve_tenants(spec: str | None) -> list[SimTenant]:
    """Tenants to simulate: `id:industry` (or `id:industry:sparse`, a tenant of sparse buyers) items are taken
    as given; other items are tenant ids or slugs looked up in the registry; no spec means every active tenant
    of the registry."""
    items = [item.strip() for item in (spec or "").split(",") if item.strip()]
    literal = [SimTenant(*item.split(":", 2)) for item in items if ":" in item]
    lookups = [item for item in items if ":" not in item]
    if items and not lookups:
        return literal
    try:
        from shironzi.tenancy import get_registry
    except ImportError as exc:  # the registry is not installed in this build
        raise ConfigurationError(
            "no tenant registry available: pass --tenants as id:industry pairs (e.g. shop:ecommerce)"
        ) from exc
    registry = get_registry()
    if lookups:
        found = [registry.get_tenant(item) for item in lookups]
        return literal + [SimTenant(t.id, t.industry) for t in found]
    active = [
        SimTenant(info.tenant_id, info.industry)
        for info in registry.tenant_directory(fresh=True).values()
        if info.status == "active"
    ]
    if not active:
        raise InvalidInputError(
            "the registry has no active tenants; create some with `shironzi tenants create` "
            "or pass --tenants id:industry pairs"
        )
    return sorted(active, key=lambda t: t.tenant_id)


def simulate(
    out: Annotated[
        Path | None, typer.Option(help="Landing directory. Default: {SHIRONZI_HOME}/landing.")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "jsonl",
    tenants: Annotated[
        str | None,
        typer.Option(
            help="Comma list of tenant ids/slugs or id:industry pairs (id:industry:sparse: a tenant of sparse, "
            "Pareto/NBD buyers). Default: every active registry tenant."
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 365,
    start: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD). Default: DAYS days ago.")] = None,
    customers: Annotated[
        int | None, typer.Option(help="Customers in total. Default: 3,000 per tenant.")
    ] = None,
    events: Annotated[
        int | None, typer.Option(help="Roughly how many events to produce (scales rates).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical output.")] = 0,
    bad_share: Annotated[float, typer.Option(help="Share of events that get a bad copy (0-0.5).")] = 0.0,
    bad_kinds: Annotated[
        str | None,
        typer.Option(
            help=f"Comma list of bad kinds ({', '.join(BAD_KINDS)}). Default: all that fit the format."
        ),
    ] = None,
    file_per: Annotated[
        str, typer.Option(help="tenant_batch (a file per tenant per week) or day.")
    ] = "tenant_batch",
    ground_truth: Annotated[
        Path | None, typer.Option(help="Ground-truth directory. Default: {SHIRONZI_HOME}/ground_truth.")
    ] = None,
) -> None:
    """Simulate multi-tenant customer activity (with latent churn) into landing files."""
    fmt = cast(OutputFormat, _one_of("format", format, ("csv", "jsonl", "parquet")))
    per = cast(FilePer, _one_of("file-per", file_per, ("tenant_batch", "day")))
    kinds = (
        [k.strip() for k in bad_kinds.split(",") if k.strip()] if bad_kinds else list(APPLICABLE_KINDS[fmt])
    )
    misfits = [k for k in kinds if k in BAD_KINDS and k not in APPLICABLE_KINDS[fmt]]
    if misfits and bad_share > 0:
        raise InvalidInputError(f"bad kind(s) {', '.join(misfits)} cannot be written as {fmt}")
    first_day = parse_day(start, option="--start")
    settings = get_settings()
    landing = out or settings.home / "landing"
    truth_dir = ground_truth or settings.home / "ground_truth"
    sim_tenants = resolve_tenants(tenants)

    with (
        stage("simulate", format=fmt) as summary,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("simulating", total=None)
        sim = run_simulation(
            sim_tenants,
            customers=customers,
            days=days,
            start=first_day,
            seed=seed,
            target_events=events,
            bad_share=bad_share,
            bad_kinds=kinds,
        )
        total = sim.events.height + sim.bad_plan.height
        progress.update(task, description="writing files", total=total, completed=0)
        manifest = write_landing_files(
            sim,
            landing,
            fmt=fmt,
            file_per=per,
            manifest_path=truth_dir / f"landing-manifest-s{seed}-{fmt}.json",
            on_file=lambda rows: progress.advance(task, rows),
        )
        write_ground_truth(sim, truth_dir)
        summary.rows = manifest.records_written
        summary.extra.update(files=len(manifest.files), bad=sum(manifest.bad_by_kind.values()))

    table = Table(
        title=f"shironzi simulate: {len(sim_tenants)} tenants, {sim.params['customers']:,} customers, "
        f"{sim.start} .. {sim.end}"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("expected quarantine reason")
    table.add_row("files", f"{len(manifest.files):,}", str(landing))
    table.add_row("valid events", f"{manifest.valid_events:,}", "")
    for kind, count in manifest.bad_by_kind.items():
        table.add_row(f"bad: {kind}", f"{count:,}", EXPECTED_REASON[kind] or "dropped as in-batch duplicate")
    table.add_row("records written", f"{manifest.records_written:,}", f"ground truth: {truth_dir}")
    console.print(table)


def _one_of(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidInputError(f"--{option} must be one of {', '.join(allowed)}, got {value!r}")
    return value
