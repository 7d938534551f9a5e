"""What `shironzi monitor status` and the Platform health page show: stage metrics, the lake's tables, open
alerts, and the tenants with anomalies today.

Stage figures come from the monitor process's `/metrics` (what every stage pushed there); without one, the
lake figures are read from the lake directly and the stages say why they are missing. Alerts come from the
`_platform/alerts` table (written by the alerting rules) and anomalies from `_platform/monitoring/anomalies`
(written by `monitoring.detector`: tenant_id, event_date, kind, score); a table that does not exist yet
is shown as none.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from shironzi.lake.paths import platform_uri
from shironzi.settings import Settings, get_settings

ALERTS_TABLE = ("alerts",)
ANOMALIES_TABLE = ("monitoring", "anomalies")
OPEN_STATES = ("open", "firing", "active")
MONITOR_TIMEOUT_S = 3.0
MAX_ROWS = 200


@dataclass
class StageRow:
    stage: str
    succeeded: int = 0
    failed: int = 0
    last_success: float | None = None


@dataclass
class PlatformHealth:
    generated_at: dt.datetime
    stages: list[StageRow] = field(default_factory=list)
    lake: pl.DataFrame = field(default_factory=pl.DataFrame)
    alerts: pl.DataFrame = field(default_factory=pl.DataFrame)
    anomalies: pl.DataFrame = field(default_factory=pl.DataFrame)
    monitor_error: str | None = None

    @property
    def failed_stages(self) -> list[str]:
        return [s.stage for s in self.stages if s.failed]


def fetch_metrics(monitor_url: str) -> str:
    """The monitor process's exposition text (raises OSError when it does not answer)."""
    with urllib.request.urlopen(monitor_url.rstrip("/") + "/metrics", timeout=MONITOR_TIMEOUT_S) as response:
        return str(response.read().decode("utf-8"))


def stage_rows(text: str) -> list[StageRow]:
    """Per stage: successful and failed runs and the last success, from an exposition text."""
    rows: dict[str, StageRow] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("stage")
            if name is None:
                continue
            row = rows.setdefault(name, StageRow(name))
            if sample.name == "shironzi_stage_runs_total":
                if sample.labels.get("outcome") == "failed":
                    row.failed += int(sample.value)
                else:
                    row.succeeded += int(sample.value)
            elif sample.name == "shironzi_stage_last_success_timestamp_seconds":
                row.last_success = max(row.last_success or 0.0, sample.value)
    return sorted(rows.values(), key=lambda r: r.stage)


def lake_frame(text: str | None, settings: Settings) -> pl.DataFrame:
    """The lake figures: from the monitor's exposition when there is one, else scanned now."""
    records: dict[tuple[str, ...], dict[str, Any]] = {}
    if text is not None:
        wanted = {"shironzi_lake_table_version": "version", "shironzi_lake_table_files": "files",
                  "shironzi_lake_small_file_ratio": "small_file_ratio", "shironzi_lake_tables": "tables"}
        for family in text_string_to_metric_families(text):
            column = wanted.get(family.name)
            for sample in family.samples if column else ():
                key = tuple(sample.labels.get(k, "") for k in ("region", "layer", "table", "placement"))
                records.setdefault(key, dict(zip(("region", "layer", "table", "placement"), key, strict=True)))
                records[key][column] = sample.value  # type: ignore[index]
    else:
        from monitoring.server import scan_lake

        for (region, layer, table, placement), fig in scan_lake(settings).items():
            records[(region, layer, table, placement)] = {
                "region": region, "layer": layer, "table": table, "placement": placement, "version": fig.version,
                "files": fig.files, "small_file_ratio": fig.small_files / fig.files if fig.files else 0.0,
                "tables": fig.tables,
            }
    if not records:
        return pl.DataFrame()
    return pl.DataFrame(list(records.values())).sort("region", "layer", "table", "placement")


def _read_platform_table(settings: Settings, parts: tuple[str, ...]) -> pl.DataFrame:
    from shironzi.lake import read_polars, table_exists

    uri = platform_uri(settings.resolved_lake_uri, *parts)
    options = settings.storage_options or None
    if not table_exists(uri, storage_options=options):
        return pl.DataFrame()
    return read_polars(uri, storage_options=options)


def open_alerts(settings: Settings) -> pl.DataFrame:
    """Alerts not resolved: a `status` among open/firing/active, or a null `resolved_at` (whichever the table
    has); newest first."""
    frame = _read_platform_table(settings, ALERTS_TABLE)
    if frame.is_empty():
        return frame
    if "status" in frame.columns:
        frame = frame.filter(pl.col("status").cast(pl.String).str.to_lowercase().is_in(OPEN_STATES))
    elif "resolved_at" in frame.columns:
        frame = frame.filter(pl.col("resolved_at").is_null())
    for column in ("started_at", "fired_at", "created_at", "starts_at", "at"):
        if column in frame.columns:
            frame = frame.sort(column, descending=True, nulls_last=True)
            break
    return frame.head(MAX_ROWS)


def anomalies_on(settings: Settings, day: dt.date) -> pl.DataFrame:
    """Tenants with anomalies on `day`: one row per tenant (its anomaly kinds, its highest score), worst first."""
    frame = _read_platform_table(settings, ANOMALIES_TABLE)
    if frame.is_empty():
        return frame
    frame = frame.filter(pl.col("event_date").cast(pl.Date) == day)
    if frame.is_empty():
        return pl.DataFrame()
    return (
        frame.group_by("tenant_id")
        .agg(pl.col("kind").cast(pl.String).unique().sort().str.join(", ").alias("kinds"),
             pl.col("score").max().alias("score"), pl.len().alias("anomalies"))
        .sort(["score", "tenant_id"], descending=[True, False])
        .head(MAX_ROWS)
    )


def platform_health(settings: Settings | None = None, *, today: dt.date | None = None) -> PlatformHealth:
    """Everything the status views show, gathered once."""
    settings = settings or get_settings()
    now = dt.datetime.now(dt.UTC)
    health = PlatformHealth(generated_at=now)
    text: str | None = None
    if settings.monitor_url:
        try:
            text = fetch_metrics(settings.monitor_url)
        except (OSError, urllib.error.URLError) as exc:
            health.monitor_error = f"the monitor at {settings.monitor_url} does not answer ({exc})"
    else:
        health.monitor_error = "no monitor process configured (SHIRONZI_MONITOR_URL)"
    if text is not None:
        health.stages = stage_rows(text)
    health.lake = lake_frame(text, settings)
    health.alerts = open_alerts(settings)
    health.anomalies = anomalies_on(settings, today or now.date())
    return health
