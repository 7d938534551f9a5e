"""The pipeline stage run log, `_platform/metering/stage_runs`: one row per compute stage (its rows and seconds,
and its tenant when the stage ran for one), the input of compute metering.

`observe_stage` is a `shironzi.stage_observers` entry point, so no stage is edited to be recorded. A coarse
stage (a dbt build, a batch landing, a feature build) is appended when it ends; a frequent one (a stream
flush, an API intake) is buffered in the process and written every `SHIRONZI_USAGE_FLUSH_SECONDS`, so the
log never adds a commit per flush. Recording never fails the stage it watches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from shironzi.lake.delta import append
from shironzi.lake.paths import platform_uri
from shironzi.observability import StageSummary
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.metering")

# stage name prefix -> the compute group it is metered under; stages not listed (dashboard reads, API startup,
# supervisors, sub-stages of a listed one) are not compute of a tenant's rows and are not recorded
STAGE_GROUPS: tuple[tuple[str, str], ...] = (
    ("ingest_stream_flush", "ingest"), ("ingest_", "ingest"), ("api_event_intake", "ingest"),
    ("quarantine_replay", "ingest"), ("dbt_build", "transform"), ("features:offline", "features"),
    ("features:materialize", "features"), ("models:train_", "models"), ("models:score_", "models"),
    ("models:write_forecasts", "models"), ("monitoring:tenant_daily", "other"), ("monitoring:anomalies", "other"),
    ("retention.enforce", "other"), ("lake.maintenance", "other"), ("usage:collect", "other"),
)
COMPUTE_GROUPS: tuple[str, ...] = ("ingest", "transform", "features", "models", "other")
NOT_RECORDED = frozenset({"ingest_stream", "ingest_import_dry_run"})  # a long-running loop; a dry run
BUFFERED = frozenset({"ingest_stream_flush", "api_event_intake"})  # frequent: written every flush interval

STAGE_RUN_COLUMNS = ("stage", "compute_group", "tenant_id", "day", "started_at", "finished_at", "seconds",
                     "rows", "failed", "host")


def stage_runs_uri(settings: Settings | None = None) -> str:
    return platform_uri((settings or get_settings()).resolved_lake_uri, "metering", "stage_runs")


def compute_group(stage: str) -> str | None:
    """The compute group a stage is metered under, or None when it is not recorded."""
    if stage in NOT_RECORDED:
        return None
    return next((group for prefix, group in STAGE_GROUPS if stage.startswith(prefix)), None)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("stage", pa.string()), ("compute_group", pa.string()), ("tenant_id", pa.string()), ("day", pa.date32()),
        ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
        ("seconds", pa.float64()), ("rows", pa.int64()), ("failed", pa.bool_()), ("host", pa.string()),
    ])


class StageRunBuffer:
    """Stage runs not yet written, per lake (a process may switch homes, as tests do)."""

    def __init__(self) -> None:
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._opened = time.monotonic()
        self._lock = threading.Lock()

    def add(self, uri: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._pending.setdefault(uri, []).append(row)

    def due(self, interval: float) -> bool:
        return bool(self._pending) and time.monotonic() - self._opened >= interval

    def take(self, uri: str | None = None) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            if uri is None:
                taken, self._pending = self._pending, {}
            else:
                taken = {uri: self._pending.pop(uri)} if uri in self._pending else {}
            self._opened = time.monotonic()
        return taken


BUFFER = StageRunBuffer()


def write_stage_runs(uri: str, rows: list[dict[str, Any]], settings: Settings) -> None:
    """Append stage runs to the log in one commit."""
    import pyarrow as pa


    if rows:
        append(uri, pa.Table.from_pylist(rows, schema=_schema()), partition_by="day",
               storage_options=settings.storage_options or None)


def flush_stage_runs(settings: Settings | None = None) -> int:
    """Write this process's buffered stage runs for the current lake (the metering job calls it first)."""
    settings = settings or get_settings()
    uri = stage_runs_uri(settings)
    rows = BUFFER.take(uri).get(uri, [])
    write_stage_runs(uri, rows, settings)
    return len(rows)


def _tenant_of(summary: StageSummary) -> str | None:
    value = summary.extra.get("tenant_id", summary.extra.get("tenant"))
    return value if isinstance(value, str) and value else None


@contextlib.contextmanager
def observe_stage(summary: StageSummary) -> Iterator[None]:
    """The stage observer: record a compute stage's run when it ends (see the module docstring)."""
    group = compute_group(summary.stage)
    started = datetime.now(UTC)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if group is not None or summary.stage in NOT_RECORDED:
            with contextlib.suppress(Exception):  # the ConfigurationError of a broken env is the stage's to raise
                _record(summary, group, started, failed)


def _record(summary: StageSummary, group: str | None, started: datetime, failed: bool) -> None:
    settings = get_settings()
    if not settings.usage_stage_log:
        return
    if group is None:  # a stream ingestor's run ended: write its buffered flushes
        with contextlib.suppress(Exception):
            flush_stage_runs(settings)
        return
    finished = datetime.now(UTC)
    row = {"stage": summary.stage, "compute_group": group, "tenant_id": _tenant_of(summary), "day": finished.date(),
           "started_at": started, "finished_at": finished, "seconds": float(summary.seconds),
           "rows": int(summary.rows or 0), "failed": failed, "host": f"{socket.gethostname()}:{os.getpid()}"}
    uri = stage_runs_uri(settings)
    try:
        if summary.stage in BUFFERED:
            BUFFER.add(uri, row)
            if BUFFER.due(settings.usage_flush_seconds):
                write_stage_runs(uri, BUFFER.take(uri).get(uri, []), settings)
            return
        write_stage_runs(uri, [*BUFFER.take(uri).get(uri, []), row], settings)
    except Exception:  # noqa: BLE001 - metering is never worth a failed stage
        log.warning("cannot record the run of stage %s", summary.stage, exc_info=True)
