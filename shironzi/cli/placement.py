"""`shironzi placement plan|apply` and `shironzi tenants move`: the placement policy and online tenant moves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any

import typer

from shironzi.cli.options import parse_day
from shironzi.cli.tenants import JsonOption, TenantArg, _admin_ctx, _print_json, console
from shironzi.errors import InvalidInputError
from shironzi.tenancy.moves import move_tenant
from shironzi.tenancy.placement_policy import apply_placement, plan_placement

placement_app = typer.Typer(help="The placement policy: plan and apply tenant promotions and demotions.",
                            no_args_is_help=True)

AsOfOption = Annotated[str | None, typer.Option("--as-of", help="Judge usage up to this day (YYYY-MM-DD); "
                                                "default today (UTC).")]


def _as_of(value: str | None) -> date | None:
    return parse_day(value, option="--as-of")


@contextmanager
def _move_progress() -> Iterator[Any]:
    """A rich bar per move stage (copy, catch up, delete), table by table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True)
    tasks: dict[str, Any] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(step, total=total)
        bar.update(tasks[step], completed=done, total=total)

    with bar:
        yield update


@placement_app.command("plan")
def plan_cmd(as_of: AsOfOption = None, json_out: JsonOption = False) -> None:
    """Dry run: the moves the policy asks for, with the reason and the figures. Changes nothing."""

    planned = plan_placement(as_of=_as_of(as_of))
    if json_out:
        _print_json([p.as_dict() for p in planned])
        return
    if not planned:
        console.print("no moves: every tenant is where the policy wants it")
        return
    for move in planned:
        figures = ", ".join(f"{k}={v}" for k, v in move.figures.items())
        console.print(f"{move.slug} ({move.tenant_id}): {move.from_placement} -> {move.to_placement}: "
                      f"{move.reason} [{figures}]")


@placement_app.command("apply")
def apply_cmd(
    max_moves: Annotated[int | None, typer.Option("--max-moves", min=0,
                                                  help="At most this many moves (default: the policy's cap).")] = None,
    as_of: AsOfOption = None,
    json_out: JsonOption = False,
) -> None:
    """Carry out the planned moves (online: ingestion goes on), at most --max-moves of them."""

    with _move_progress() as progress:
        result = apply_placement(_admin_ctx("placement policy"), max_moves=max_moves, as_of=_as_of(as_of),
                                 progress=progress)
    if json_out:
        _print_json(result.as_dict())
    else:
        for move in result.moved:
            console.print(f"moved {move['slug']} to {move['to_placement']}: {move['rows']} rows in "
                          f"{move['seconds']:.1f}s ({move['move_id']})")
        for move in result.failed:
            console.print(f"FAILED {move['slug']} -> {move['to_placement']}: {move['error']}")
        console.print(f"{len(result.moved)} moved, {len(result.failed)} failed, {len(result.deferred)} deferred "
                      "to the next run")
    if result.failed:
        raise typer.Exit(1)


def move_cmd(
    tenant: TenantArg,
    placement: Annotated[str | None, typer.Option("--placement", help="dedicated or pooled")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Move to another region (needs issue 24).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Move a tenant's tables online to another placement: copy, flip with a new epoch, catch up, delete."""

    if placement is None and region is None:
        raise InvalidInputError("say where to: --placement dedicated|pooled (or --region)")
    with _move_progress() as progress:
        receipt = move_tenant(_admin_ctx("tenant move"), tenant, placement=placement or "", region=region,
                              progress=progress)
    if json_out:
        _print_json(receipt.as_dict())
        return
    console.print(f"moved {receipt.tenant_id} {receipt.from_placement} -> {receipt.to_placement} (epoch "
                  f"{receipt.epoch}): {receipt.rows} rows in {len(receipt.tables)} tables, {receipt.seconds:.1f}s; "
                  f"receipt {receipt.move_id}")
    for t in receipt.tables:
        console.print(f"  {t.layer}/{t.table}: {t.source_rows_before} rows (copied {t.copied} at v{t.copy_version}, "
                      f"caught up {t.caught_up} to v{t.flip_version}); source now {t.source_rows_after}, "
                      f"target {t.target_rows_after}")


def register(tenants_app: typer.Typer) -> None:
    """`shironzi tenants move`."""
    tenants_app.command("move")(move_cmd)
