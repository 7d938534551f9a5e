"""`shironzi ingest batch|import|stream|check|replay-quarantine|quarantine`: land files, SQL tables, mapped
histories and Kafka topics in bronze; replay quarantine after a fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingestion.batch.files import BatchRunResult, ingest_files
from ingestion.batch.imports import ImportPreview, plan_import, preview_import, run_import
from ingestion.batch.sql import ingest_sql
from ingestion.quality import check_bronze, check_or_raise
from ingestion.replay import parse_since, quarantine_status, replay_quarantine
from ingestion.stream.ingestor import StreamIngestor, StreamOptions
from shironzi.cli.options import parse_day
from shironzi.errors import InvalidInputError

if TYPE_CHECKING:
    from ingestion.bronze import Reconciliation

console = Console(highlight=False)

ingest_app = typer.Typer(help="Ingestion into the bronze layer (exactly once).", no_args_is_help=True)


def reconciliation_table(title: str, counts: Reconciliation) -> Table:
    """The reconciliation as a rich table: received = landed + quarantined + duplicates."""
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("rows", justify="right")
    for name, value in (
        ("received", counts.received),
        ("landed", counts.landed),
        ("quarantined", counts.quarantined),
        ("duplicates in batch", counts.duplicates_in_batch),
        ("duplicates already landed", counts.duplicates_existing),
        ("recovered from an interrupted run", counts.recovered),
    ):
        table.add_row(name, f"{value:,}")
    for code, rows in sorted(counts.quarantined_by_reason.items()):
        table.add_row(f"  quarantined: {code}", f"{rows:,}")
    verdict = "[green]balanced[/green]" if counts.balanced() else "[red]NOT balanced[/red]"
    table.caption = f"received = landed + quarantined + duplicates: {verdict}"
    return table


@ingest_app.command("batch")
def batch_command(
    source: Annotated[
        str | None, typer.Argument(help="A landing directory or file (CSV, JSONL, Parquet).")
    ] = None,
    sql: Annotated[str | None, typer.Option("--sql", help="SQLAlchemy URL of a source database.")] = None,
    table: Annotated[str | None, typer.Option("--table", help="Source table (with --sql).")] = None,
    query: Annotated[str | None, typer.Option("--query", help="Source query instead of --table.")] = None,
    watermark: Annotated[
        str | None, typer.Option("--watermark", help="Incremental column (int/timestamp).")
    ] = None,
    source_name: Annotated[
        str | None, typer.Option("--source-name", help="Name keying the watermark.")
    ] = None,
    flush_rows: Annotated[int, typer.Option(min=1, help="Rows per commit (files are grouped).")] = 250_000,
    skip_quality: Annotated[bool, typer.Option("--skip-quality", help="Skip the GE checkpoint.")] = False,
    backfill: Annotated[
        bool, typer.Option("--backfill", help="A history: judge freshness against its own newest event.")
    ] = False,
) -> None:
    """Land new or changed landing files, or new rows of a SQL table, in bronze (the quality checkpoint runs
    before each commit: a failing batch commits nothing and stays unprocessed)."""
    if sql is not None:
        if source is not None:
            raise InvalidInputError("give a landing path or --sql, not both")
        if watermark is None or source_name is None:
            raise InvalidInputError("--sql needs --watermark and --source-name (and --table or --query)")
        result = ingest_sql(
            sql,
            table=table,
            query=query,
            watermark=watermark,
            source_name=source_name,
            check_quality=not skip_quality,
            backfill=backfill,
        )
    else:
        if source is None:
            raise InvalidInputError("give a landing directory/file, or --sql URL --table T --watermark COL")
        with _progress() as progress:
            task = progress.add_task("landing files", total=None)
            result = ingest_files(
                source,
                flush_rows=flush_rows,
                check_quality=not skip_quality,
                backfill=backfill,
                on_start=lambda n: progress.update(task, total=n),
                on_file=lambda f, rows: progress.advance(task),
            )
        console.print(
            f"{len(result.files_landed)} file(s) landed, {len(result.files_skipped)} already processed"
        )
    _print_run(result)


def _print_run(result: BatchRunResult) -> None:
    console.print(reconciliation_table(f"run {result.run_id} ({result.status})", result.totals))
    console.print(
        f"{result.totals.received:,} rows in {result.seconds:.2f}s ({result.rows_per_second:,.0f} rows/s)"
    )


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@ingest_app.command("import")
def import_command(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant's slug or id.")],
    mapping: Annotated[str, typer.Option("--mapping", help="The column mapping (YAML).")],
    sources: Annotated[
        list[str] | None, typer.Argument(help="Files or directories to import (CSV, JSONL, Parquet).")
    ] = None,
    sql: Annotated[str | None, typer.Option("--sql", help="Import a query's rows instead of files.")] = None,
    source_url: Annotated[
        str | None, typer.Option("--source-url", help="SQLAlchemy URL of the source database (with --sql).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Preview the mapped records and the validation report; write nothing.")
    ] = False,
    preview_rows: Annotated[int, typer.Option(min=1, help="Mapped records shown by --dry-run.")] = 10,
    skip_quality: Annotated[bool, typer.Option("--skip-quality", help="Skip the GE checkpoint.")] = False,
) -> None:
    """Import a tenant's own history with a column mapping: dry run first, then import (exactly once)."""
    plan = plan_import(sources or [], tenant=tenant, mapping=mapping, sql=sql, source_url=source_url)
    if dry_run:
        _print_preview(preview_import(plan, rows=preview_rows))
        return
    with _progress() as progress:
        task = progress.add_task(f"importing for {plan.tenant.slug}", total=None)
        imported = run_import(plan, check_quality=not skip_quality,
                              on_start=lambda n: progress.update(task, total=n),
                              on_file=lambda f, rows: progress.advance(task))
    result = imported.run
    console.print(f"{len(result.files_landed)} source(s) imported for tenant {plan.tenant.slug}, "
                  f"{len(result.files_skipped)} already imported")
    _print_run(result)
    for warning in imported.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _print_preview(preview: ImportPreview) -> None:
    table = Table(title=f"dry run: first {preview.preview.height} mapped record(s) for tenant {preview.tenant.slug}")
    shown = ("event_type", "event_id", "customer_id", "event_time", "amount", "currency", "properties")
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in preview.preview.select(shown).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    report = Table(title="validation report (nothing written)")
    report.add_column("measure")
    report.add_column("rows", justify="right")
    for name, value in (("read", preview.rows), ("would land", preview.valid),
                        ("would be quarantined", preview.quarantined),
                        ("duplicates in the import", preview.duplicates_in_batch)):
        report.add_row(name, f"{value:,}")
    for code, rows in preview.counts_by_reason.items():
        report.add_row(f"  quarantined: {code}", f"{rows:,}")
    for event_type, rows in sorted(preview.event_types.items()):
        report.add_row(f"  event type: {event_type}", f"{rows:,}")
    if preview.first_event is not None and preview.last_event is not None:
        report.caption = f"events from {preview.first_event:%Y-%m-%d} to {preview.last_event:%Y-%m-%d}"
    console.print(report)
    if preview.rejected.height:
        rejected = Table(title="sample rejected rows")
        for column in ("position", "reason_code", "reason", "raw_payload"):
            rejected.add_column(column, overflow="fold")
        for row in preview.rejected.iter_rows():
            rejected.add_row(*(str(v) for v in row))
        console.print(rejected)
    if preview.already_imported:
        console.print(f"already imported (would be skipped): {', '.join(preview.already_imported)}")
    for warning in preview.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


@ingest_app.command("stream")
def stream_command(
    topic: Annotated[str, typer.Option("--topic", help="Kafka topic to ingest.")] = "events",
    worker: Annotated[
        int, typer.Option(min=0, help="This worker's index (partitions p % workers == worker).")
    ] = 0,
    workers: Annotated[int, typer.Option(min=1, help="How many workers share the topic.")] = 1,
    group: Annotated[
        str | None,
        typer.Option(help="Join this consumer group instead of --worker/--workers (real Kafka; positions "
                     "still come from the Delta log at every assignment)."),
    ] = None,
    api_version: Annotated[
        str | None, typer.Option(help="kafka-python protocol version, e.g. 2.5 (groups on the bundled broker).")
    ] = None,
    client: Annotated[Literal["confluent", "kafka-python"], typer.Option(help="Kafka client.")] = "confluent",
    bootstrap: Annotated[
        str | None, typer.Option(help="Bootstrap servers (default: settings/bundled).")
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Flush after this many records.")] = 50_000,
    max_wait_ms: Annotated[int, typer.Option(min=0, help="... or after this long.")] = 1_000,
    until_caught_up: Annotated[bool, typer.Option("--until-caught-up", help="Stop when lag is 0.")] = False,
    max_flushes: Annotated[int | None, typer.Option(min=1, help="Stop after this many flushes.")] = None,
    namespace: Annotated[str, typer.Option(hidden=True)] = "shironzi-ingest",
) -> None:
    """Consume a topic into bronze, exactly once (offsets live in the Delta log, not in Kafka)."""
    version = None
    if api_version is not None:
        try:
            major, minor = (int(part) for part in api_version.split("."))
        except ValueError:
            raise InvalidInputError(f"--api-version must look like 2.5, got {api_version!r}") from None
        version = (major, minor)
    options = StreamOptions(
        topic=topic,
        worker=worker,
        workers=workers,
        group_id=group,
        subscribe=group is not None,
        api_version=version,
        client=client,
        bootstrap=bootstrap,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        until_caught_up=until_caught_up,
        max_flushes=max_flushes,
        namespace=namespace,
    )
    result = StreamIngestor(options).run()
    console.print(f"partitions {result.partitions}: offsets {result.start_offsets} -> {result.end_offsets}")
    console.print(
        reconciliation_table(f"stream run {result.run_id} ({result.flushes} flushes)", result.totals)
    )
    console.print(
        f"{result.totals.received:,} events in {result.seconds:.2f}s "
        f"({result.events_per_second:,.0f} events/s)"
    )


@ingest_app.command("check")
def check_command(
    on_date: Annotated[
        str | None, typer.Option("--date", help="Partition date YYYY-MM-DD (default: newest).")
    ] = None,
    freshness_days: Annotated[int, typer.Option(min=1, help="Newest event may be this many days old.")] = 30,
) -> None:
    """Run the Great Expectations checkpoint on bronze partitions; exit 1 when it fails."""
    day = parse_day(on_date, option="--date")
    report = check_bronze(on_date=day, freshness_days=freshness_days)
    table = Table(title="bronze quality checkpoint")
    for column in ("table", "partitions", "rows checked", "result"):
        table.add_column(column)
    for uri, info in report.tables.items():
        verdict = (
            "[green]passed[/green]"
            if info["success"]
            else "[red]failed: " + ", ".join(info["failed"]) + "[/red]"
        )
        table.add_row(uri, ", ".join(info["partitions"]), f"{info['rows_checked']:,}", verdict)
    console.print(table)
    check_or_raise(report)


@ingest_app.command("replay-quarantine")
def replay_quarantine_command(
    reason: Annotated[str, typer.Option("--reason", help="Quarantine reason code to replay, e.g. unknown_event_type.")],
    since: Annotated[str, typer.Option("--since", help="Rows quarantined at or after this ISO date/date-time (UTC).")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's rows (slug or id).")] = None,
) -> None:
    """Re-validate quarantined rows against the current contracts and land those that now pass, exactly once."""
    moment = parse_since(since)
    with _progress() as progress:
        task = progress.add_task(f"replaying {reason}", total=None)
        result = replay_quarantine(reason=reason, since=moment, tenant_id=tenant,
                                   on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    table = Table(title=f"quarantine replay {result.replay_id}: {reason} since {moment.isoformat()}")
    table.add_column("measure")
    table.add_column("rows", justify="right")
    for name, value in (
        ("selected", result.selected),
        ("already replayed (skipped)", result.already_replayed),
        ("pass now: landed", result.counts.landed),
        ("pass now: already in bronze", result.counts.duplicates),
        *((f"still failing: {code}", rows) for code, rows in sorted(result.still_failing.items())),
    ):
        table.add_row(name, f"{value:,}")
    console.print(table)


@ingest_app.command("quarantine")
def quarantine_command(
    since: Annotated[str, typer.Option("--since", help="Rows quarantined at or after this ISO date/date-time.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's rows (its id).")] = None,
) -> None:
    """Quarantined rows by reason code, and how many of them a replay has landed."""
    status = quarantine_status(since=parse_since(since), reason=reason, tenant_id=tenant)
    table = Table("reason", "quarantined", "replayed", title="quarantine")
    for code, quarantined, replayed in status.iter_rows():
        table.add_row(code, f"{quarantined:,}", f"{replayed:,}")
    console.print(table if status.height else "nothing quarantined in that window")
