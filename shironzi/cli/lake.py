"""`shironzi lake ...`: inspect and maintain Delta tables (history, files, optimize, vacuum, checkpoint)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shironzi.lake.delta import add_actions, history, open_table
from shironzi.lake.maintenance import DEFAULT_ZORDER, checkpoint, optimize, vacuum

app = typer.Typer(name="lake", help="Inspect and maintain Delta tables.", no_args_is_help=True)

UriArg = Annotated[str, typer.Argument(help="Table URI: a local path or s3://, abfss://, gs:// URI.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, default=str, indent=2, sort_keys=True))


def _compact(value: dict[str, Any], width: int = 80) -> str:
    text = " ".join(f"{k}={v}" for k, v in value.items())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("history")
def history_cmd(
    uri: UriArg,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Newest N commits only.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The table's commits, newest first."""
    entries = history(uri, limit)
    if as_json:
        _print_json(entries)
        return
    table = Table(title=f"history of {uri}")
    for column in ("version", "timestamp", "operation", "metrics", "metadata"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        metrics = {
            k.removeprefix("num_"): v
            for k, v in entry["operationMetrics"].items()
            if not k.endswith("_ms") and not isinstance(v, str) and v
        }
        stamp = entry["timestamp"].strftime("%Y-%m-%d %H:%M:%S") if entry["timestamp"] else ""
        table.add_row(
            str(entry["version"]),
            stamp,
            entry.get("operation", ""),
            _compact(metrics),
            _compact(entry["userMetadata"]) if entry["userMetadata"] else "",
        )
    _console().print(table)


@app.command("files")
def files_cmd(uri: UriArg, as_json: JsonOpt = False) -> None:
    """How many live data files, rows and bytes the table holds (per partition too)."""
    handle = open_table(uri)
    actions = add_actions(uri).to_pylist()
    partition_columns = list(handle.metadata().partition_columns)
    by_partition: dict[str, dict[str, int]] = {}
    for action in actions:
        key = "/".join(f"{c}={action.get(f'partition.{c}')}" for c in partition_columns) or "(unpartitioned)"
        slot = by_partition.setdefault(key, {"files": 0, "rows": 0, "bytes": 0})
        slot["files"] += 1
        slot["rows"] += int(action.get("num_records") or 0)
        slot["bytes"] += int(action.get("size_bytes") or 0)
    summary = {
        "uri": uri,
        "version": handle.version(),
        "files": len(actions),
        "rows": sum(s["rows"] for s in by_partition.values()),
        "bytes": sum(s["bytes"] for s in by_partition.values()),
        "partition_columns": partition_columns,
        "partitions": by_partition,
    }
    if as_json:
        _print_json(summary)
        return
    table = Table(title=f"{uri} @ version {summary['version']}")
    for column in ("partition", "files", "rows", "bytes"):
        table.add_column(column, justify="left" if column == "partition" else "right")
    for key in sorted(by_partition):
        slot = by_partition[key]
        table.add_row(key, str(slot["files"]), str(slot["rows"]), str(slot["bytes"]))
    table.add_row("total", str(summary["files"]), str(summary["rows"]), str(summary["bytes"]), style="bold")
    _console().print(table)


@app.command("optimize")
def optimize_cmd(
    uri: UriArg,
    zorder_by: Annotated[list[str] | None, typer.Option("--zorder-by", "-z", help="Z-order columns.")] = None,
    compact_only: Annotated[bool, typer.Option("--compact", help="Bin-pack without z-ordering.")] = False,
    target_size: Annotated[int | None, typer.Option(help="Target file size in bytes.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compact small files, z-ordered by tenant_id unless told otherwise."""
    columns: tuple[str, ...] = () if compact_only else tuple(zorder_by or DEFAULT_ZORDER)
    result = optimize(uri, zorder_by=columns, target_size=target_size)
    if as_json:
        _print_json(result)
        return
    zorder = ", ".join(result["zorder_by"]) or "none (compaction)"
    _console().print(
        f"optimized {uri}: {result['files_removed']} files -> {result['files_added']} "
        f"(z-order: {zorder}), now version {result['version']}"
    )


@app.command("vacuum")
def vacuum_cmd(
    uri: UriArg,
    retention_hours: Annotated[
        int, typer.Option(min=0, help="Keep files needed by versions this young.")
    ] = 168,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed, remove nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a retention below the table's minimum.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove data files that no version within the retention window references."""
    removed = vacuum(
        uri, retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=not force
    )
    if as_json:
        _print_json({"uri": uri, "dry_run": dry_run, "files": removed, "count": len(removed)})
        return
    verb = "would remove" if dry_run else "removed"
    _console().print(f"{verb} {len(removed)} files from {uri}")
    for path in removed:
        _console().print(f"  {path}", markup=False)


@app.command("checkpoint")
def checkpoint_cmd(uri: UriArg, as_json: JsonOpt = False) -> None:
    """Write a log checkpoint at the current version."""
    version = checkpoint(uri)
    if as_json:
        _print_json({"uri": uri, "checkpoint_version": version})
        return
    _console().print(f"checkpointed {uri} at version {version}")
