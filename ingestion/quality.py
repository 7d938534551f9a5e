"""The Great Expectations checkpoint on bronze partitions, run BEFORE a batch is committed.

Expectations per bronze table (on the partitions a flush writes, as they would be after the commit: the rows
already there plus the flush's new rows, sampled to `max_rows`): at least one row, no nulls in the key
columns, `event_type` within the shipped contracts' value set, and freshness: the newest `event_time` is
neither older than `freshness_days` before the reference time nor in the future (beyond a small skew).

Quality before commit: batch landing (`ingest batch`, `ingest import`, the SQL connector) runs the checkpoint
per flush through `PrecommitCheck`, which the lander calls after validation and before its first commit. A
flush whose checkpoint fails commits nothing, neither its rows nor its ledger (the processed-file manifest,
the SQL watermark), so the file stays unprocessed and a rerun checks it again. Flushes of the same run that
passed earlier stay committed.

Freshness of a backfill (`backfill=True`: `ingest import`, `ingest batch --backfill`) is judged against the
batch's own time range: the reference time is the newest event of the batch, not today, so a history that
ended two years ago passes; the future-timestamp bound still uses the wall clock.
`shironzi ingest check` runs the same expectations on landed partitions (`check_bronze`).
GE runs in an ephemeral context on a pandas datasource; it is imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from ingestion.contracts import event_type_table
from shironzi.errors import DataQualityError, InvalidInputError
from shironzi.lake import read_polars, table_exists
from shironzi.lake.groups import region_groups
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.ingestion.quality")

KEY_COLUMNS = ("tenant_id", "event_id", "customer_id", "event_type", "event_time", "event_date")
DEFAULT_FRESHNESS_DAYS = 30
DEFAULT_MAX_ROWS = 200_000
FUTURE_SKEW = timedelta(minutes=5)


@dataclass
class QualityReport:
    """The checkpoint's verdict: per table, whether it passed and which expectations failed."""

    success: bool = True
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [f"{uri}: {name}" for uri, info in self.tables.items() for name in info["failed"]]


def _expectations(
    gx: Any, *, event_types: list[str], freshness_days: int, now: datetime, reference: datetime
) -> list[Any]:
    newest_allowed = (now + FUTURE_SKEW).timestamp()
    oldest_allowed = (reference - timedelta(days=freshness_days)).timestamp()
    out: list[Any] = [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)]
    out += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in KEY_COLUMNS]
    out.append(gx.expectations.ExpectColumnValuesToBeInSet(column="event_type", value_set=event_types))
    out.append(
        gx.expectations.ExpectColumnMaxToBeBetween(
            column="event_time_epoch_s", min_value=oldest_allowed, max_value=newest_allowed
        )
    )
    return out


def _landed(uri: str, dates: Iterable[date], settings: Settings) -> pl.DataFrame:
    return read_polars(
        uri,
        columns=list(KEY_COLUMNS),
        filters=[("event_date", "in", sorted(dates))],
        storage_options=settings.storage_options,
    )


def _sample(frame: pl.DataFrame, max_rows: int) -> Any:
    if frame.height > max_rows:
        frame = frame.sample(max_rows, seed=0)
    return frame.with_columns(
        (pl.col("event_time").dt.epoch("us") / 1_000_000).alias("event_time_epoch_s")
    ).to_pandas()


class PrecommitCheck:
    """The checkpoint a `BronzeLander` runs on each flush before committing it (see the module docstring).

    Called with `{bronze table uri: the flush's new rows (canonical columns)}`; raises DataQualityError
    when the partitions, as they would be after the commit, fail. `report` accumulates every flush's."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        backfill: bool = False,
        freshness_days: int = DEFAULT_FRESHNESS_DAYS,
        max_rows: int = DEFAULT_MAX_ROWS,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.backfill = backfill
        self.freshness_days = freshness_days
        self.max_rows = max_rows
        self.run_id = run_id
        self.report = QualityReport()

    def __call__(self, new_rows: Mapping[str, pl.DataFrame]) -> None:
        frames: dict[str, tuple[pl.DataFrame, list[date]]] = {}
        newest: datetime | None = None
        for uri, rows in new_rows.items():
            if rows.is_empty():
                continue
            dates = sorted(set(rows.get_column("event_date").to_list()))
            new = rows.select(list(KEY_COLUMNS))
            exists = table_exists(uri, storage_options=self.settings.storage_options or None)
            frame = pl.concat([_landed(uri, dates, self.settings), new], how="vertical_relaxed") if exists else new
            frames[uri] = (frame, dates)
            top = new.get_column("event_time").max()
            if isinstance(top, datetime) and (newest is None or top > newest):
                newest = top
        if not frames:
            return
        report = _run_expectations(
            frames,
            freshness_days=self.freshness_days,
            max_rows=self.max_rows,
            now=None,
            reference=newest if self.backfill else None,
        )
        self.report.tables.update(report.tables)
        self.report.success = self.report.success and report.success
        if not report.success:
            where = f" for run {self.run_id}" if self.run_id else ""
            raise DataQualityError(
                f"quality checkpoint failed{where}, nothing of the batch was committed (a rerun checks it "
                f"again): {', '.join(report.failed)}",
                run_id=self.run_id,
                failed=report.failed,
            )


def run_checkpoint(
    partitions: Mapping[str, Iterable[date]],
    *,
    settings: Settings | None = None,
    freshness_days: int = DEFAULT_FRESHNESS_DAYS,
    max_rows: int = DEFAULT_MAX_ROWS,
    now: datetime | None = None,
) -> QualityReport:
    """Run the checkpoint on `{bronze table uri: event_date partitions}`; returns the report (never raises
    for failing data: callers decide; see `check_or_raise`)."""
    settings = settings or get_settings()
    frames = {uri: (_landed(uri, dates, settings), sorted(set(dates))) for uri, dates in partitions.items()
              if dates}
    return _run_expectations(frames, freshness_days=freshness_days, max_rows=max_rows, now=now)


def _run_expectations(
    frames: Mapping[str, tuple[pl.DataFrame, list[date]]],
    *,
    freshness_days: int,
    max_rows: int,
    now: datetime | None,
    reference: datetime | None = None,
) -> QualityReport:
    """The expectations on `{table uri: (rows, partitions)}`; freshness ends at `reference` (default now)."""
    import great_expectations as gx

    if freshness_days < 1:
        raise InvalidInputError("freshness_days must be >= 1")
    now = now or datetime.now(UTC)
    reference = reference or now
    event_types = sorted(set(event_type_table().get_column("event_type").to_list()))
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("bronze")
    report = QualityReport()
    for number, (uri, (rows, dates)) in enumerate(sorted(frames.items())):
        frame = _sample(rows, max_rows)
        asset = source.add_dataframe_asset(name=f"table_{number}")
        batch_definition = asset.add_batch_definition_whole_dataframe(f"landed_{number}")
        suite = context.suites.add(gx.ExpectationSuite(name=f"bronze_events_{number}"))
        for expectation in _expectations(
            gx, event_types=event_types, freshness_days=freshness_days, now=now, reference=reference
        ):
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"bronze_{number}", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(name=f"ingest_{number}", validation_definitions=[definition])
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        failed = []
        for run_result in outcome.run_results.values():
            for item in run_result.results:
                if not item.success:
                    config = item.expectation_config
                    column = config.kwargs.get("column")
                    failed.append(f"{config.type}({column})" if column else str(config.type))
        report.tables[uri] = {
            "success": outcome.success,
            "failed": failed,
            "rows_checked": len(frame),
            "partitions": [d.isoformat() for d in dates],
        }
        report.success = report.success and bool(outcome.success)
    return report


def bronze_tables(settings: Settings | None = None) -> list[str]:
    """Every bronze events table that exists: pooled per region and each dedicated tenant's."""
    settings = settings or get_settings()
    groups = [g for region in settings.regions for g in region_groups(region, settings)]
    return [uri for g in groups if table_exists(uri := g.uri(settings, layer="bronze", table="events"))]


def check_bronze(
    *,
    on_date: date | None = None,
    settings: Settings | None = None,
    freshness_days: int = DEFAULT_FRESHNESS_DAYS,
) -> QualityReport:
    """`shironzi ingest check`: the checkpoint on one date's partitions (default: each table's newest)."""
    settings = settings or get_settings()
    partitions: dict[str, list[date]] = {}
    for uri in bronze_tables(settings):
        if on_date is not None:
            partitions[uri] = [on_date]
        else:
            newest = read_polars(uri, columns=["event_date"]).get_column("event_date").max()
            if newest is not None:
                partitions[uri] = [newest]  # type: ignore[list-item]
    if not partitions:
        raise InvalidInputError("no bronze table to check: land some data first")
    return run_checkpoint(
        partitions,
        settings=settings,
        freshness_days=freshness_days,
        now=datetime.combine(on_date, datetime.max.time(), UTC) if on_date else None,
    )


def check_or_raise(report: QualityReport) -> QualityReport:
    """Raise DataQualityError when the checkpoint failed, so downstream stages stop."""
    if not report.success:
        raise DataQualityError(
            "bronze quality checkpoint failed: " + "; ".join(report.failed), failed=report.failed
        )
    return report
